"""lstm: sequence prediction from the command line, with an LSTM written as Numba kernels.

Importing this package is cheap on purpose: no numpy, numba or pandas here, so that
`lstm --help` answers at once.
"""

__version__ = "0.1.0"
