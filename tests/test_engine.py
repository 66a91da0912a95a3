"""The engine against its references: the NumPy twin (tests/naive.py), centred finite differences,
itself under other shardings and chunkings, and fixed-seed golden losses.

Numba compiles each kernel once per dtype (shapes do not matter), so the shapes here are tiny and
the dtypes are only float32 and float64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_cli import kernels
from lstm_cli.network import Architecture, Network, ParamLayout
from lstm_cli.optim import SGD, Adam, ReduceOnPlateau
from tests import naive

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_engine_losses.json"

# (B, T, D, H, L, n_out): the edges T=1, B=1, H=1, and 1-3 layers.
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (1, 1, 2, 1, 2, 1),
    (2, 1, 3, 2, 3, 2),
    (1, 6, 1, 1, 1, 1),
    (3, 5, 2, 3, 2, 2),
    (2, 4, 3, 4, 3, 3),
    (4, 7, 1, 1, 3, 1),
]


def rel_err(a, b):
    """max |a - b| / max |b| over a tensor (elementwise error would blow up near zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b))) / scale


def replay_masks(net: Network, seed: int, B: int, T: int, dropout: float):
    """The dropout masks Network.loss_and_grad draws from default_rng(seed), in the twin's layout:
    a list over layers 1..L-1 of (B, T, H) arrays."""
    arch = net.arch
    rng = np.random.default_rng(seed)
    parts = []
    for lo, hi in [(B * s // net.shards_for(B), B * (s + 1) // net.shards_for(B))
                   for s in range(net.shards_for(B))]:
        keep = rng.random((arch.num_layers - 1, T, hi - lo, arch.hidden_size)) >= dropout
        parts.append((keep / (1.0 - dropout)).astype(arch.np_dtype))
    full = np.concatenate(parts, axis=2).astype(np.float64)  # (L-1, T, B, H)
    return [full[k].transpose(1, 0, 2) for k in range(arch.num_layers - 1)]


def twin(net: Network, x, y, masks=None):
    tensors = {k: v.astype(np.float64) for k, v in net.tensors().items()}
    return naive.mse_backward(tensors, np.asarray(x, np.float64), np.asarray(y, np.float64),
                              net.arch.num_layers, masks)


# --- kernels == twin ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}D{}H{}L{}O{}".format(*s))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_loss_and_grad_equal_twin(small_net, windows, shape, dtype, tol, dropout):
    B, T, D, H, L, n_out = shape
    net = small_net(D, H, L, n_out, dtype=dtype)
    x, y = windows(1, B, T, D, n_out)
    loss, grad = net.loss_and_grad(x, y, dropout=dropout, rng=np.random.default_rng(7))
    masks = replay_masks(net, 7, B, T, dropout) if dropout and L > 1 else None
    ref_loss, ref_grads = twin(net, x.astype(dtype), y.astype(dtype), masks)
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    for name, g in net.layout.views(grad).items():
        assert rel_err(g, ref_grads[name]) <= tol, name


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_masks_really_drop(small_net, windows, dtype, tol):
    """A mask of zeros on layer 1's input makes layer 1 blind to layer 0: its input gradient is 0."""
    B, T, D, H, L, n_out = 2, 3, 2, 3, 2, 1
    net = small_net(D, H, L, n_out, dtype=dtype)
    x, y = windows(2, B, T, D, n_out)
    a = ParamLayout(net.arch)
    buf_args = _kernel_buffers(net.arch, T, B)
    dt = net.arch.np_dtype
    masks = np.zeros((1, T, B, H), dtype=dt)
    grad = np.zeros(a.size, dtype=dt)
    kernels.forward_backward(net.params, a.offsets, kernels.CELL_LSTM, D, H, L, n_out,
                             np.ascontiguousarray(x.transpose(1, 0, 2), dtype=dt),
                             y.astype(dt), masks, True, np.zeros(n_out), kernels.LOSS_MSE,
                             float(B * n_out), grad, *buf_args)
    views = a.views(grad)
    assert np.all(views["weight_ih_l1"] == 0)
    assert np.all(views["weight_ih_l0"] == 0)  # nothing flows back through the zero mask
    _, ref = twin(net, x.astype(dt), y.astype(dt), [np.zeros((B, T, H))])
    for name, g in views.items():
        assert rel_err(g, ref[name]) <= tol, name


def _kernel_buffers(arch, T, B):
    H, L, n_out, dt = arch.hidden_size, arch.num_layers, arch.output_size, arch.np_dtype
    lm = max(L - 1, 1)
    return (np.empty((L, T, B, 4 * H), dt), np.empty((L, T, B, H), dt),
            np.empty((L, T, B, H), dt), np.empty((L, T, B, H), dt), np.empty((lm, T, B, H), dt),
            np.empty((B, 4 * H), dt), np.empty((B, n_out), dt), np.empty((B, n_out), dt),
            np.empty((T, B, 4 * H), dt), np.empty((1, 1, 1), dt), np.empty((T, B, H), dt),
            np.empty((T, B, H), dt),
            np.empty((B, H), dt), np.empty((B, H), dt))


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("threads", [1, 2])
def test_predict_equals_twin_in_chunks(small_net, windows, dtype, tol, threads):
    B, T, D, H, L, n_out = 23, 5, 2, 3, 3, 2
    net = small_net(D, H, L, n_out, dtype=dtype, threads=threads)
    x, _ = windows(3, B, T, D, n_out)
    ref, _ = naive.forward({k: v.astype(np.float64) for k, v in net.tensors().items()},
                           x.astype(dtype).astype(np.float64), L)
    for chunk in (1, 4, 1024):
        out = net.predict(x, chunk=chunk)
        assert out.dtype == net.arch.np_dtype and out.shape == (B, n_out)
        assert rel_err(out, ref) <= tol, chunk
    # Single windows (the latency path) too.
    assert rel_err(net.predict(x[:1]), ref[:1]) <= tol


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("H", [kernels.AXPY_MAX_H, kernels.AXPY_MAX_H + 1])
def test_predict_paths_equal_twin(small_net, windows, dtype, tol, H):
    """forward_infer picks a path by batch and width: row sums (B <= GEMV_MAX_B, H <= AXPY_MAX_H),
    BLAS matrix-vector products (B <= GEMV_MAX_B, wider), GEMM (more windows). All equal the twin."""
    T, D, L, n_out = 3, 2, 2, 2
    net = small_net(D, H, L, n_out, dtype=dtype)
    x, _ = windows(8, kernels.GEMV_MAX_B + 1, T, D, n_out)
    ref, _ = naive.forward({k: v.astype(np.float64) for k, v in net.tensors().items()},
                           x.astype(dtype).astype(np.float64), L)
    for B in (1, kernels.GEMV_MAX_B, kernels.GEMV_MAX_B + 1):
        assert rel_err(net.predict(x[:B]), ref[:B]) <= tol, B


# Shapes that take the other branches of the kernels: wide inputs (D=17), per-step products split
# in two row blocks (B=64, H=64), weight gradients as one GEMM after the
# loop (H=100, B=40), inference GEMMs in row blocks (1000 windows, H=16).
WIDE = [(64, 3, 17, 64, 2), (40, 3, 2, 100, 2), (6, 2, 20, 16, 3)]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("shape", WIDE, ids=lambda s: "B{}T{}D{}H{}L{}".format(*s))
def test_wide_shapes_equal_twin(small_net, windows, dtype, tol, shape):
    B, T, D, H, L = shape
    net = small_net(D, H, L, 2, dtype=dtype)
    x, y = windows(9, B, T, D, 2)
    loss, grad = net.loss_and_grad(x, y, dropout=0.2, rng=np.random.default_rng(1))
    masks = replay_masks(net, 1, B, T, 0.2)
    ref_loss, ref = twin(net, x.astype(dtype), y.astype(dtype), masks)
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    for name, g in net.layout.views(grad).items():
        assert rel_err(g, ref[name]) <= tol, name


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_predict_in_row_blocks_equals_twin(small_net, windows, dtype, tol):
    net = small_net(1, 16, 1, 1, dtype=dtype)
    x, _ = windows(10, 1000, 2, 1, 1)
    ref, _ = naive.forward({k: v.astype(np.float64) for k, v in net.tensors().items()},
                           x.astype(dtype).astype(np.float64), 1)
    assert rel_err(net.predict(x), ref) <= tol


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_shards_equal_single_thread(small_net, windows, dropout):
    """threads=2 splits B=40 in two shards; the sum over shards equals the whole batch."""
    B, T, D, H, L, n_out = 40, 6, 2, 4, 2, 2
    one = small_net(D, H, L, n_out, threads=1)
    two = small_net(D, H, L, n_out, threads=2)
    assert one.shards_for(B) == 1 and two.shards_for(B) == 2
    x, y = windows(4, B, T, D, n_out)
    l1, g1 = one.loss_and_grad(x, y, dropout=dropout, rng=np.random.default_rng(3))
    l2, g2 = two.loss_and_grad(x, y, dropout=dropout, rng=np.random.default_rng(3))
    if dropout:
        # Shards draw their own masks; rebuild one's masks from two's draw to compare.
        masks = replay_masks(two, 3, B, T, dropout)
        l1, ref = twin(one, x, y, masks)
        g1 = one.layout.flatten(ref, np.float64)
    assert abs(l1 - l2) <= 1e-14 * abs(l1)
    for name, a in one.layout.views(g1).items():
        assert rel_err(two.layout.views(g2)[name], a) <= (1e-12 if dropout else 1e-14), name
    np.testing.assert_allclose(one.predict(x), two.predict(x), rtol=1e-15, atol=1e-15)


# --- finite differences -------------------------------------------------------------------


def _gradcheck(net: Network, x, y, loss_fn, eps=1e-5):
    """Centred differences on every parameter; returns {tensor: relative error} where the error
    is ||num - ana|| / max(||num||, ||ana||). eps=1e-5 balances truncation (eps^2) against
    round-off (1e-16 / eps) for gradients as small as 1e-4."""
    _, grad = loss_fn(net)
    grad = grad.copy()
    num = np.empty_like(grad)
    p = net.params
    for i in range(p.size):
        keep = p[i]
        p[i] = keep + eps
        lp, _ = loss_fn(net)
        p[i] = keep - eps
        lm, _ = loss_fn(net)
        p[i] = keep
        num[i] = (lp - lm) / (2 * eps)
    errs = {}
    for name, ana in net.layout.views(grad).items():
        n = net.layout.views(num)[name]
        errs[name] = float(np.linalg.norm(n - ana) / max(np.linalg.norm(n), np.linalg.norm(ana), 1e-300))
    return errs


def test_gradcheck_mse_with_dropout(small_net, windows):
    B, T, D, H, L, n_out = 3, 6, 2, 3, 2, 2
    net = small_net(D, H, L, n_out)
    x, y = windows(5, B, T, D, n_out)

    def loss_fn(n):  # the same masks every call: a fresh rng with the same seed
        return n.loss_and_grad(x, y, dropout=0.3, rng=np.random.default_rng(11))

    errs = _gradcheck(net, x, y, loss_fn)
    worst = max(errs, key=errs.get)
    print(f"gradcheck mse: worst {worst} {errs[worst]:.2e}")
    assert errs[worst] < 1e-6, errs


def test_gradcheck_pinball_away_from_kinks(small_net, windows):
    B, T, D, H, L, n_out = 4, 5, 2, 3, 2, 3
    net = small_net(D, H, L, n_out)
    x, _ = windows(6, B, T, D, n_out)
    q = np.array([0.1, 0.5, 0.9])
    y_hat = net.predict(x)
    # Targets at least 0.2 away from the prediction on either side: no kink within eps.
    sign = np.where(np.arange(B * n_out).reshape(B, n_out) % 2 == 0, 1.0, -1.0)
    y = y_hat + sign * (0.2 + np.random.default_rng(0).random((B, n_out)))

    def loss_fn(n):
        return n.loss_and_grad(x, y, quantiles=q)

    loss, _ = loss_fn(net)
    e = y - y_hat
    expect = np.mean(np.maximum(q * e, (q - 1) * e))
    assert abs(loss - expect) <= 1e-14 * expect
    errs = _gradcheck(net, x, y, loss_fn)
    worst = max(errs, key=errs.get)
    print(f"gradcheck pinball: worst {worst} {errs[worst]:.2e}")
    assert errs[worst] < 1e-6, errs


# --- determinism --------------------------------------------------------------------------

_TRAIN_SNIPPET = """
import hashlib, numpy as np
from lstm_cli.network import Architecture, Network
from lstm_cli.optim import Adam
def run(dtype):
    net = Network(Architecture(2, 5, 2, 1, dtype), seed=3, threads=2)
    opt = Adam(net.params, lr=1e-2)
    data = np.random.default_rng(0)
    x, y = data.normal(size=(48, 9, 2)), data.normal(size=(48, 1))
    rng = np.random.default_rng(1)
    for _ in range(4):
        _, g = net.loss_and_grad(x, y, dropout=0.2, rng=rng)
        opt.step(g)
    return hashlib.sha256(net.params.tobytes()).hexdigest()
"""


def _train_hashes():
    scope = {}
    exec(_TRAIN_SNIPPET, scope)
    return [scope["run"](dt) for dt in ("float32", "float64")]


def test_same_seed_same_bits_in_process_and_across_processes():
    first, second = _train_hashes(), _train_hashes()
    assert first == second
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = _TRAIN_SNIPPET + "\nprint(run('float32'), run('float64'))\n"
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=120).stdout.split()
        assert out == first


def test_importing_kernels_compiles_nothing():
    code = ("import time; t = time.perf_counter(); import lstm_cli.kernels as k;"
            "from numba.core.dispatcher import Dispatcher;"
            "d = [f for f in vars(k).values() if isinstance(f, Dispatcher)];"
            "assert len(d) > 10 and all(not f.signatures for f in d), [f for f in d if f.signatures];"
            "print(time.perf_counter() - t)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 5.0  # numba's import, not a compile (~4 s per dtype cold)


# --- optimizers ---------------------------------------------------------------------------


def test_reduce_on_plateau():
    opt = SGD(np.zeros(3), lr=1.0)
    sched = ReduceOnPlateau(opt, factor=0.5, patience=2, threshold=0.1, min_lr=0.2)
    for metric, lr in [(10.0, 1.0), (9.5, 1.0), (9.5, 1.0), (9.2, 0.5),  # 9.5, 9.2 within 10%
                       (8.0, 0.5), (8.0, 0.5), (8.0, 0.5), (8.0, 0.25), (8.0, 0.25),
                       (8.0, 0.25), (8.0, 0.2), (1.0, 0.2)]:
        sched.step(metric)
        assert opt.lr == lr, metric
    assert sched.best == 1.0 and sched.bad_epochs == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_grad_norm(dtype):
    g = np.array([3.0, -4.0, 0.0, 12.0], dtype=dtype)  # norm 13
    assert kernels.clip_grad_norm(g.copy(), 0.0) == pytest.approx(13.0)
    same = g.copy()
    assert kernels.clip_grad_norm(same, 100.0) == pytest.approx(13.0)
    np.testing.assert_array_equal(same, g)
    assert kernels.clip_grad_norm(g, 1.3) == pytest.approx(13.0)
    assert np.linalg.norm(g.astype(np.float64)) == pytest.approx(1.3, rel=1e-6)


def test_adam_matches_closed_form_first_step():
    """Adam's first step moves every weight by lr * sign(g) (bias correction makes m/sqrt(v)=±1)."""
    p = np.array([1.0, -2.0, 0.5])
    g = np.array([0.3, -1e-3, 2.0])
    Adam(p, lr=0.1, eps=0.0).step(g)
    np.testing.assert_allclose(p, [0.9, -1.9, 0.4], rtol=0, atol=1e-15)


# --- training smoke and golden losses -----------------------------------------------------


def _sine_run(dtype: str, steps: int):
    """A tiny training loop on a noisy sine: windows of 12 steps predict the next value."""
    data = np.random.default_rng(42)
    t = np.arange(1200)
    series = np.sin(2 * np.pi * t / 25) + 0.05 * data.normal(size=t.size)
    T = 12
    idx = np.arange(series.size - T)
    X = series[idx[:, None] + np.arange(T)][:, :, None]  # (N, T, 1)
    Y = series[idx + T][:, None]  # (N, 1)
    net = Network(Architecture(1, 8, 1, 1, dtype), seed=0, threads=2)
    opt = Adam(net.params, lr=1e-2)
    batches = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        pick = batches.integers(0, len(X), size=32)
        loss, grad = net.loss_and_grad(X[pick], Y[pick])
        kernels.clip_grad_norm(grad, 1.0)
        opt.step(grad)
        losses.append(loss)
    return np.array(losses)


def test_training_smoke_loss_falls():
    losses = _sine_run("float32", 400)
    start, end = losses[:10].mean(), losses[-20:].mean()
    print(f"sine: first 10 mean {start:.4f}, last 20 mean {end:.5f}")
    assert end < start / 20


def test_golden_first_losses():
    """The first losses of a fixed-seed float64 run, recorded once (see the file's "how")."""
    losses = _sine_run("float64", 5)
    golden = np.array(json.loads(GOLDEN.read_text())["losses"])
    np.testing.assert_allclose(losses, golden, rtol=1e-12, atol=0)
