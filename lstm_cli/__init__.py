"""lstm: sequence prediction from the command line, with an LSTM written as Numba kernels.

Importing this package is cheap on purpose: no numpy, numba or pandas here, so that
`lstm --help` answers at once.
"""

import os as _os

# The kernels split every batch into shards that run on our own threads, each calling BLAS;
# a multi-threaded BLAS underneath would oversubscribe the cores. Set before SciPy's OpenBLAS
# loads (numba binds it on the first kernel call); a value the user set is kept.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
