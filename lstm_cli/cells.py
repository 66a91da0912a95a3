"""The recurrent cells lstm knows, by the name the model file and `--cell` use.

Both keep PyTorch's parameter names and stacking (``weight_ih_l{k}`` is (GATES*H, D_k) with the
gates stacked in GATE_ORDER), so the model file, the kernels and the exports share one layout
that differs only in how many gates a cell has. A module of its own so that the file format,
the network and the exports read the same table without importing one another.
"""

from __future__ import annotations

GATES = {"lstm": 4, "gru": 3}
GATE_ORDER = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
KERNEL_CODE = {"lstm": 0, "gru": 1}  # what the kernels' `cell` argument takes
