"""The network as arrays: architecture, flat parameters with PyTorch names, initialisation, and
validating wrappers that run the kernels on shards of the batch in parallel threads.

Kernels assume valid input; everything they receive is checked or built here.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lstm_cli import cells, kernels

DTYPES = {"float32": np.float32, "float64": np.float64}
MIN_SHARD = 8  # windows; below this a shard costs more in overhead than it saves
INFER_CHUNK = 1024  # windows per inference kernel call: bounds memory for any number of series


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


@dataclass(frozen=True)
class Architecture:
    input_size: int  # D: targets + features per time step
    hidden_size: int  # H
    num_layers: int  # L
    output_size: int  # O: horizon x targets (x quantiles)
    dtype: str = "float32"
    cell: str = "lstm"  # a key of cells.GATES

    def __post_init__(self):
        for name in ("input_size", "hidden_size", "num_layers", "output_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.cell not in cells.GATES:
            raise ValueError(f"cell must be one of {sorted(cells.GATES)}, got {self.cell!r}")

    @property
    def np_dtype(self):
        return DTYPES[self.dtype]

    @property
    def gate_rows(self) -> int:
        """G: rows of weight_ih/weight_hh, the gates stacked (4H for the LSTM, 3H for the GRU)."""
        return cells.GATES[self.cell] * self.hidden_size


class ParamLayout:
    """Names, shapes and offsets of every tensor in the flat parameter vector (kernels.py doc)."""

    def __init__(self, arch: Architecture):
        D, H, L, O = arch.input_size, arch.hidden_size, arch.num_layers, arch.output_size  # noqa: E741
        G = arch.gate_rows
        self.shapes: dict[str, tuple[int, ...]] = {}
        for k in range(L):
            d_in = D if k == 0 else H
            self.shapes[f"weight_ih_l{k}"] = (G, d_in)
            self.shapes[f"weight_hh_l{k}"] = (G, H)
            self.shapes[f"bias_ih_l{k}"] = (G,)
            self.shapes[f"bias_hh_l{k}"] = (G,)
        self.shapes["head.weight"] = (O, H)
        self.shapes["head.bias"] = (O,)
        offsets, pos = [], 0
        for shape in self.shapes.values():
            offsets.append(pos)
            pos += int(np.prod(shape))
        self.offsets = np.array(offsets, dtype=np.int64)
        self.size = pos

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into flat (writes go through)."""
        return {
            name: flat[off : off + int(np.prod(shape))].reshape(shape)
            for (name, shape), off in zip(self.shapes.items(), self.offsets, strict=True)
        }

    def flatten(self, tensors: dict[str, np.ndarray], dtype) -> np.ndarray:
        flat = np.empty(self.size, dtype=dtype)
        for name, view in self.views(flat).items():
            value = np.asarray(tensors[name])
            if value.shape != view.shape:
                raise ValueError(f"{name}: shape {value.shape}, expected {view.shape}")
            view[...] = value
        return flat


HEAD_INITS = ("torch", "zero")


def init_params(arch: Architecture, seed: int, forget_bias: float = 0.0, head_init: str = "torch") -> np.ndarray:
    """torch's initialisation: every tensor uniform in +-1/sqrt(H) (nn.LSTM, nn.GRU and
    nn.Linear alike).

    forget_bias is added to b_ih of the gate that keeps the state, rows H..2H in both cells: the
    LSTM's forget gate f, the GRU's update gate z (h_t = (1 - z) n + z h_{t-1}). A larger value
    makes the cell remember by default, which helps long windows train.

    head_init "zero" starts the dense head at zero, so the untrained model outputs exactly 0:
    with level or seasonal scaling that is the naive or seasonal-naive forecast, and training
    moves away from it only as far as it pays (the recurrent weights get gradients once the head
    is non-zero, after the first step).
    """
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
    layout = ParamLayout(arch)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(arch.hidden_size)
    flat = rng.uniform(-bound, bound, size=layout.size).astype(arch.np_dtype)
    if forget_bias:
        H = arch.hidden_size
        views = layout.views(flat)
        for k in range(arch.num_layers):
            views[f"bias_ih_l{k}"][H : 2 * H] += arch.np_dtype(forget_bias)
    if head_init == "zero":
        views = layout.views(flat)
        views["head.weight"][...] = 0
        views["head.bias"][...] = 0
    return flat


_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lstm")
        return _pools[threads]


def _run_shards(run, shards: int, threads: int) -> list:
    """[run(0), ..., run(shards - 1)]. With no more shards than threads the calling thread takes
    shard 0 and the pool the others, so a batch of two shards costs one thread hand-off; more
    shards (inference chunks) queue on the pool's `threads` workers."""
    if shards == 1 or threads == 1:
        return [run(s) for s in range(shards)]
    pool = _pool(threads)
    if shards > threads:
        return list(pool.map(run, range(shards)))
    rest = [pool.submit(run, s) for s in range(1, shards)]
    first = run(0)
    return [first] + [f.result() for f in rest]


def _shard_bounds(batch: int, shards: int) -> list[tuple[int, int]]:
    return [(batch * s // shards, batch * (s + 1) // shards) for s in range(shards)]


class _TrainBuffers:
    """Caller-allocated buffers of forward_backward for one shard shape (reused every batch)."""

    def __init__(self, arch: Architecture, T: int, B: int):
        H, L, O, dt = arch.hidden_size, arch.num_layers, arch.output_size, arch.np_dtype  # noqa: E741
        G = arch.gate_rows
        gru = arch.cell == "gru"
        lm = max(L - 1, 1)
        self.grad = np.zeros(ParamLayout(arch).size, dtype=dt)
        self.gates = np.empty((L, T, B, G), dtype=dt)
        self.cells = np.empty((L, T, B, H), dtype=dt)  # C_t (LSTM), W_hn.h + b_hn (GRU)
        self.tanh_cells = np.empty((L, 1, 1, 1) if gru else (L, T, B, H), dtype=dt)
        self.hidden = np.empty((L, T, B, H), dtype=dt)
        self.layer_in = np.empty((lm, T, B, H), dtype=dt)
        self.rec = np.empty((B, G), dtype=dt)
        self.y_hat = np.empty((B, O), dtype=dt)
        self.d_out = np.empty((B, O), dtype=dt)
        self.d_gates = np.empty((T, B, G), dtype=dt)
        self.d_rec = np.empty((T, B, G) if gru else (1, 1, 1), dtype=dt)
        self.d_a = np.empty((T, B, H), dtype=dt)
        self.d_b = np.empty((T, B, H), dtype=dt)
        self.dh_rec = np.empty((B, H), dtype=dt)
        self.dc_next = np.empty((B, H), dtype=dt)
        self.no_masks = np.ones((lm, 1, 1, 1), dtype=dt)


class Network:
    """An LSTM or GRU stack with a dense head; parameters are one flat vector (ParamLayout)."""

    def __init__(self, arch: Architecture, params: np.ndarray | None = None, *, seed: int = 0,
                 forget_bias: float = 0.0, head_init: str = "torch", threads: int | None = None):
        self.arch = arch
        self.layout = ParamLayout(arch)
        if params is None:
            params = init_params(arch, seed, forget_bias, head_init)
        params = np.ascontiguousarray(params, dtype=arch.np_dtype)
        if params.shape != (self.layout.size,):
            raise ValueError(f"expected {self.layout.size} parameters, got {params.shape}")
        self.params = params
        self.threads = threads or default_threads()
        self._train_buffers: dict[tuple[int, int, int], _TrainBuffers] = {}

    def tensors(self) -> dict[str, np.ndarray]:
        return self.layout.views(self.params)

    # --- training ------------------------------------------------------------------------

    def shards_for(self, batch: int) -> int:
        """How the batch is split. Depends on the batch and thread count only, so results are
        bit-identical for the same --threads whatever the machine's load."""
        return max(1, min(self.threads, batch // MIN_SHARD))

    def _check_windows(self, x: np.ndarray, name: str = "x") -> None:
        if x.ndim != 3 or x.shape[2] != self.arch.input_size or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"{name} must be (N, T, {self.arch.input_size}), got {x.shape}")

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, *, dropout: float = 0.0,
                      rng: np.random.Generator | None = None, quantiles: np.ndarray | None = None,
                      grad_out: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Mean loss over the batch and its gradient (flat, like params).

        x (B, T, D) windows, y (B, O) targets, both in model units. quantiles (O,) selects the
        pinball loss (one quantile per output column); None means mean squared error.
        """
        self._check_windows(x)
        arch = self.arch
        B, T, _ = x.shape
        O = arch.output_size  # noqa: E741
        if y.shape != (B, O):
            raise ValueError(f"y must be ({B}, {O}), got {y.shape}")
        dt = arch.np_dtype
        loss_kind = kernels.LOSS_MSE if quantiles is None else kernels.LOSS_PINBALL
        q = np.zeros(O, dtype=np.float64) if quantiles is None else np.asarray(quantiles, np.float64)
        use_masks = dropout > 0.0 and arch.num_layers > 1
        shards = self.shards_for(B)
        bounds = _shard_bounds(B, shards)
        masks = []
        for lo, hi in bounds:
            if use_masks:
                keep = rng.random((arch.num_layers - 1, T, hi - lo, arch.hidden_size)) >= dropout
                masks.append((keep / (1.0 - dropout)).astype(dt))
            else:
                masks.append(None)

        def run(s: int) -> float:
            lo, hi = bounds[s]
            buf = self._buffers(s, T, hi - lo)
            xs = np.ascontiguousarray(x[lo:hi].transpose(1, 0, 2), dtype=dt)
            ys = np.ascontiguousarray(y[lo:hi], dtype=dt)
            m = masks[s] if use_masks else buf.no_masks
            return kernels.forward_backward(
                self.params, self.layout.offsets, cells.KERNEL_CODE[arch.cell], arch.input_size,
                arch.hidden_size, arch.num_layers, O, xs, ys, m, use_masks, q, loss_kind,
                float(B * O), buf.grad, buf.gates, buf.cells, buf.tanh_cells, buf.hidden,
                buf.layer_in, buf.rec, buf.y_hat, buf.d_out, buf.d_gates, buf.d_rec, buf.d_a,
                buf.d_b, buf.dh_rec, buf.dc_next)

        losses = _run_shards(run, shards, self.threads)
        grad = grad_out if grad_out is not None else np.empty_like(self.params)
        grad[:] = self._buffers(0, T, bounds[0][1] - bounds[0][0]).grad
        for s in range(1, shards):  # fixed order: the sum is the same bits every run
            lo, hi = bounds[s]
            kernels.add_into(grad, self._buffers(s, T, hi - lo).grad)
        return float(sum(losses)) / (B * O), grad

    def _buffers(self, shard: int, T: int, B: int) -> _TrainBuffers:
        key = (shard, T, B)
        buf = self._train_buffers.get(key)
        if buf is None:
            if len(self._train_buffers) > 4 * self.threads:  # a new window length: drop old ones
                self._train_buffers.clear()
            buf = self._train_buffers[key] = _TrainBuffers(self.arch, T, B)
        return buf

    # --- inference -----------------------------------------------------------------------

    def predict(self, x: np.ndarray, chunk: int = INFER_CHUNK) -> np.ndarray:
        """Head outputs (N, O) for windows x (N, T, D); no training caches, bounded memory."""
        self._check_windows(x)
        arch = self.arch
        N, T, _ = x.shape
        dt = arch.np_dtype
        out = np.empty((N, arch.output_size), dtype=dt)
        n_chunks = -(-N // chunk)
        parts = max(n_chunks, self.shards_for(N))
        bounds = _shard_bounds(N, parts)

        def run(s: int) -> None:
            lo, hi = bounds[s]
            xs = np.ascontiguousarray(x[lo:hi].transpose(1, 0, 2), dtype=dt)
            kernels.forward_infer(self.params, self.layout.offsets, cells.KERNEL_CODE[arch.cell],
                                  arch.input_size, arch.hidden_size, arch.num_layers, arch.output_size, xs,
                                  out[lo:hi])

        _run_shards(run, parts, self.threads)
        return out
