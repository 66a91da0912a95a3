"""The GRU cell against its references: the NumPy twin (tests/naive_gru.py), centred finite
differences, and itself under other shardings, chunkings and inference paths. PyTorch's nn.GRU
is the oracle in tests/test_torch_oracle.py.

The GRU runs in the same kernels as the LSTM (their `cell` argument), so nothing new compiles
per test: shapes stay tiny.
"""

from __future__ import annotations

import numpy as np
import pytest

from lstm_cli import kernels
from lstm_cli.network import Architecture, Network
from lstm_cli.optim import Adam
from tests import naive_gru
from tests.test_engine import SHAPES, WIDE, _gradcheck, rel_err, replay_masks


def gru_net(D=2, H=3, L=2, n_out=2, dtype="float64", threads=1, seed=0):
    return Network(Architecture(D, H, L, n_out, dtype, "gru"), seed=seed, forget_bias=0.5,
                   threads=threads)


def twin(net, x, y, masks=None):
    tensors = {k: v.astype(np.float64) for k, v in net.tensors().items()}
    return naive_gru.mse_backward(tensors, np.asarray(x, np.float64), np.asarray(y, np.float64),
                                  net.arch.num_layers, masks)


def twin_forward(net, x):
    tensors = {k: v.astype(np.float64) for k, v in net.tensors().items()}
    return naive_gru.forward(tensors, np.asarray(x, np.float64), net.arch.num_layers)[0]


def test_layout_is_torch_gru():
    net = gru_net(D=2, H=3, L=2, n_out=4)
    shapes = {name: t.shape for name, t in net.tensors().items()}
    assert shapes == {"weight_ih_l0": (9, 2), "weight_hh_l0": (9, 3), "bias_ih_l0": (9,),
                      "bias_hh_l0": (9,), "weight_ih_l1": (9, 3), "weight_hh_l1": (9, 3),
                      "bias_ih_l1": (9,), "bias_hh_l1": (9,), "head.weight": (4, 3),
                      "head.bias": (4,)}
    # forget_bias lands on the update gate z (rows H..2H of bias_ih), as on the LSTM's f
    plain = Network(Architecture(2, 3, 2, 4, "float64", "gru"), seed=0).tensors()
    shift = net.tensors()["bias_ih_l0"] - plain["bias_ih_l0"]
    np.testing.assert_allclose(shift, [0, 0, 0, 0.5, 0.5, 0.5, 0, 0, 0])


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}D{}H{}L{}O{}".format(*s))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_loss_and_grad_equal_twin(windows, shape, dtype, tol, dropout):
    B, T, D, H, L, n_out = shape
    net = gru_net(D, H, L, n_out, dtype=dtype)
    x, y = windows(1, B, T, D, n_out)
    loss, grad = net.loss_and_grad(x, y, dropout=dropout, rng=np.random.default_rng(7))
    masks = replay_masks(net, 7, B, T, dropout) if dropout and L > 1 else None
    ref_loss, ref_grads = twin(net, x.astype(dtype), y.astype(dtype), masks)
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    for name, g in net.layout.views(grad).items():
        assert rel_err(g, ref_grads[name]) <= tol, name


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("shape", WIDE, ids=lambda s: "B{}T{}D{}H{}L{}".format(*s))
def test_wide_shapes_equal_twin(windows, dtype, tol, shape):
    """Wide inputs (D=17), per-step products in row blocks."""
    B, T, D, H, L = shape
    net = gru_net(D, H, L, 2, dtype=dtype)
    x, y = windows(9, B, T, D, 2)
    loss, grad = net.loss_and_grad(x, y, dropout=0.2, rng=np.random.default_rng(1))
    ref_loss, ref = twin(net, x.astype(dtype), y.astype(dtype), replay_masks(net, 1, B, T, 0.2))
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    for name, g in net.layout.views(grad).items():
        assert rel_err(g, ref[name]) <= tol, name
    # inference on the same wide inputs: GEMM path (B > GEMV_MAX_B) and row sums (B = 1)
    ref_out = twin_forward(net, x.astype(dtype))
    assert rel_err(net.predict(x), ref_out) <= tol
    assert rel_err(net.predict(x[:1]), ref_out[:1]) <= tol


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("threads", [1, 2])
def test_predict_equals_twin_in_chunks_and_paths(windows, dtype, tol, threads):
    B, T, D, H, L, n_out = 23, 5, 2, 3, 3, 2
    net = gru_net(D, H, L, n_out, dtype=dtype, threads=threads)
    x, _ = windows(3, B, T, D, n_out)
    ref = twin_forward(net, x.astype(dtype))
    for chunk in (1, 4, 1024):
        out = net.predict(x, chunk=chunk)
        assert out.dtype == net.arch.np_dtype and out.shape == (B, n_out)
        assert rel_err(out, ref) <= tol, chunk
    for b in (1, kernels.GEMV_MAX_B, kernels.GEMV_MAX_B + 1):
        assert rel_err(net.predict(x[:b]), ref[:b]) <= tol, b


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_shards_equal_single_thread(windows, dropout):
    B, T, D, H, L, n_out = 40, 6, 2, 4, 2, 2
    one, two = gru_net(D, H, L, n_out, threads=1), gru_net(D, H, L, n_out, threads=2)
    assert two.shards_for(B) == 2
    x, y = windows(4, B, T, D, n_out)
    l1, g1 = one.loss_and_grad(x, y, dropout=dropout, rng=np.random.default_rng(3))
    l2, g2 = two.loss_and_grad(x, y, dropout=dropout, rng=np.random.default_rng(3))
    if dropout:
        l1, ref = twin(one, x, y, replay_masks(two, 3, B, T, dropout))
        g1 = one.layout.flatten(ref, np.float64)
    assert abs(l1 - l2) <= 1e-13 * abs(l1)
    assert rel_err(g2, g1) <= 1e-12


def test_gradcheck_mse_with_dropout(windows):
    B, T, D, H, L, n_out = 3, 6, 2, 3, 2, 2
    net = gru_net(D, H, L, n_out)
    x, y = windows(5, B, T, D, n_out)

    def loss_fn(n):
        return n.loss_and_grad(x, y, dropout=0.3, rng=np.random.default_rng(11))

    errs = _gradcheck(net, x, y, loss_fn)
    worst = max(errs, key=errs.get)
    print(f"gru gradcheck mse: worst {worst} {errs[worst]:.2e}")
    assert len(errs) == 10 and errs[worst] < 1e-6, errs


def test_gradcheck_pinball_away_from_kinks(windows):
    B, T, D, H, L, n_out = 4, 5, 2, 3, 2, 3
    net = gru_net(D, H, L, n_out)
    x, _ = windows(6, B, T, D, n_out)
    q = np.array([0.1, 0.5, 0.9])
    sign = np.where(np.arange(B * n_out).reshape(B, n_out) % 2 == 0, 1.0, -1.0)
    y = net.predict(x) + sign * (0.2 + np.random.default_rng(0).random((B, n_out)))
    errs = _gradcheck(net, x, y, lambda n: n.loss_and_grad(x, y, quantiles=q))
    worst = max(errs, key=errs.get)
    print(f"gru gradcheck pinball: worst {worst} {errs[worst]:.2e}")
    assert errs[worst] < 1e-6, errs


def _sine_losses(dtype, steps, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(600)
    series = np.sin(2 * np.pi * t / 25) + 0.1 * rng.normal(size=t.size)
    T = 20
    idx = np.arange(len(series) - T)
    X = np.stack([series[i : i + T] for i in idx])[:, :, None]
    Y = series[idx + T][:, None]
    net = Network(Architecture(1, 8, 1, 1, dtype, "gru"), seed=0, threads=2)
    opt = Adam(net.params, lr=1e-2)
    batches = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        pick = batches.integers(0, len(X), size=32)
        loss, grad = net.loss_and_grad(X[pick], Y[pick])
        kernels.clip_grad_norm(grad, 1.0)
        opt.step(grad)
        losses.append(loss)
    return np.array(losses), net.params.copy()


def test_training_smoke_loss_falls_and_is_deterministic():
    losses, params = _sine_losses("float32", 400)
    start, end = losses[:10].mean(), losses[-20:].mean()
    print(f"gru sine: first 10 mean {start:.4f}, last 20 mean {end:.5f}")
    assert end < start / 20
    again, params_again = _sine_losses("float32", 400)
    assert np.array_equal(losses, again) and params.tobytes() == params_again.tobytes()


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("H,D", [(kernels.AXPY_MAX_H, 2), (kernels.AXPY_MAX_H + 1, 2),
                                 (kernels.AXPY_MAX_H + 1, 17)])
def test_single_windows_on_every_inference_path_equal_twin(windows, dtype, tol, H, D):
    """A few windows: row sums, or BLAS matrix-vector products above AXPY_MAX_H for windows
    shorter than H/2 (the input part as a loop for D < SMALL_D, as a product for wider inputs);
    more windows: GEMMs."""
    net = gru_net(D, H, 2, 2, dtype=dtype)
    for T in (3, H // 2):  # short windows take the matrix-vector products above AXPY_MAX_H
        x, _ = windows(8, kernels.GEMV_MAX_B + 1, T, D, 2)
        ref = twin_forward(net, x.astype(dtype))
        for b in (1, kernels.GEMV_MAX_B, kernels.GEMV_MAX_B + 1):
            assert rel_err(net.predict(x[:b]), ref[:b]) <= tol, (T, b)
