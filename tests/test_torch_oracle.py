"""PyTorch as the oracle: the same weights (moved by renaming only) in nn.LSTM or nn.GRU
(batch_first=True) plus nn.Linear on the last hidden state must give the same outputs, gradients and optimizer
trajectories. Torch is a test dependency only; lstm_cli never imports it.
"""

from __future__ import annotations

import numpy as np
import pytest

from lstm_cli import kernels
from lstm_cli.network import Architecture, Network
from lstm_cli.optim import SGD, Adam, ReduceOnPlateau

torch = pytest.importorskip("torch")

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30)


class TorchTwin(torch.nn.Module):
    def __init__(self, arch: Architecture, tensors: dict[str, np.ndarray]):
        super().__init__()
        dt = TORCH_DTYPES[arch.dtype]
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[arch.cell]
        self.rnn = rnn(arch.input_size, arch.hidden_size, arch.num_layers, batch_first=True, dtype=dt)
        self.head = torch.nn.Linear(arch.hidden_size, arch.output_size, dtype=dt)
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(torch.from_numpy(tensors[self.our_name(name)].copy()))

    @staticmethod
    def our_name(torch_name: str) -> str:
        return torch_name.removeprefix("rnn.")  # head.weight / head.bias keep their names

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])

    def grads(self) -> dict[str, np.ndarray]:
        return {self.our_name(n): p.grad.detach().numpy() for n, p in self.named_parameters()}

    def tensors(self) -> dict[str, np.ndarray]:
        return {self.our_name(n): p.detach().numpy() for n, p in self.named_parameters()}


def pinball(y_hat, y, q):
    e = y - y_hat
    return torch.mean(torch.maximum(q * e, (q - 1) * e))


def _data(seed, B, T, D, n_out):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, T, D)), rng.normal(size=(B, n_out))


CELLS = ["lstm", "gru"]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_outputs_match_torch(dtype, tol, L, cell):
    arch = Architecture(3, 5, L, 2, dtype, cell)
    net = Network(arch, seed=1, threads=2)
    ref = TorchTwin(arch, net.tensors())
    x, _ = _data(0, 37, 9, 3, 2)  # 37 windows: two shards, and chunks of 8 below
    with torch.no_grad():
        expect = ref(torch.from_numpy(x.astype(dtype))).numpy()
    assert rel_err(net.predict(x), expect) <= tol
    assert rel_err(net.predict(x, chunk=8), expect) <= tol
    assert rel_err(net.predict(x[:1]), expect[:1]) <= tol


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("loss_kind", ["mse", "pinball"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_torch(dtype, tol, loss_kind, cell):
    arch = Architecture(2, 4, 2, 3, dtype, cell)
    net = Network(arch, seed=2, forget_bias=1.0, threads=2)
    ref = TorchTwin(arch, net.tensors())
    x, y = _data(1, 20, 7, 2, 3)
    q = np.array([0.1, 0.5, 0.9]) if loss_kind == "pinball" else None
    loss, grad = net.loss_and_grad(x, y, quantiles=q)
    y_hat = ref(torch.from_numpy(x.astype(dtype)))
    yt = torch.from_numpy(y.astype(dtype))
    if q is None:
        ref_loss = torch.nn.functional.mse_loss(y_hat, yt)
    else:
        ref_loss = pinball(y_hat, yt, torch.from_numpy(q.astype(dtype)))
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) <= tol * abs(ref_loss.item())
    expect = ref.grads()
    errs = {name: rel_err(g, expect[name]) for name, g in net.layout.views(grad).items()}
    assert max(errs.values()) <= tol, errs


def _train_both(make_opt, make_torch_opt, steps=6, max_norm=0.5, cell="lstm"):
    arch = Architecture(2, 4, 2, 2, "float64", cell)
    net = Network(arch, seed=3, threads=2)
    ref = TorchTwin(arch, net.tensors())
    opt, topt = make_opt(net.params), make_torch_opt(ref.parameters())
    clipped = 0
    for step in range(steps):
        x, y = _data(10 + step, 24, 6, 2, 2)
        _, grad = net.loss_and_grad(x, y)
        norm = kernels.clip_grad_norm(grad, max_norm)
        clipped += norm > max_norm
        opt.step(grad)
        topt.zero_grad()
        loss = torch.nn.functional.mse_loss(ref(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        tnorm = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), max_norm)
        assert abs(norm - tnorm.item()) <= 1e-10 * tnorm.item()
        topt.step()
    assert clipped > 0  # the clipping really took part
    expect = ref.tensors()
    errs = {name: rel_err(p, expect[name]) for name, p in net.tensors().items()}
    start = Network(arch, seed=3).tensors()
    moved = {name: rel_err(p, start[name]) for name, p in net.tensors().items()}
    return errs, moved


@pytest.mark.parametrize("cell", CELLS)
def test_adam_steps_match_torch(cell):
    errs, moved = _train_both(
        lambda p: Adam(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-7, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-7, weight_decay=1e-2),
        cell=cell)
    assert min(moved.values()) > 1e-3  # every tensor moved well beyond the tolerance
    assert max(errs.values()) <= 1e-9, errs


def test_sgd_momentum_steps_match_torch():
    errs, moved = _train_both(
        lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3))
    assert min(moved.values()) > 1e-3
    assert max(errs.values()) <= 1e-9, errs


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-14), ("float32", 1e-6)])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(dtype, tol, max_norm):
    rng = np.random.default_rng(5)
    parts = [rng.normal(size=s).astype(dtype) for s in [(4, 3), (7,), (2, 5)]]
    flat = np.concatenate([p.ravel() for p in parts])
    tparams = [torch.nn.Parameter(torch.zeros(p.shape, dtype=TORCH_DTYPES[dtype])) for p in parts]
    for tp, p in zip(tparams, parts, strict=True):
        tp.grad = torch.from_numpy(p.copy())
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
    norm = kernels.clip_grad_norm(flat, max_norm)
    assert abs(norm - tnorm.item()) <= tol * tnorm.item()
    expect = np.concatenate([tp.grad.numpy().ravel() for tp in tparams])
    assert rel_err(flat, expect) <= tol


def test_reduce_on_plateau_matches_torch():
    rng = np.random.default_rng(6)
    metrics = np.minimum.accumulate(rng.uniform(0.5, 1.5, size=60)) + rng.uniform(0, 0.02, 60)
    ours = SGD(np.zeros(1), lr=1.0)
    sched = ReduceOnPlateau(ours, factor=0.5, patience=3, threshold=1e-2, min_lr=0.05)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        topt, mode="min", factor=0.5, patience=3, threshold=1e-2, threshold_mode="rel",
        min_lr=0.05)
    lrs = []
    for m in metrics:
        sched.step(float(m))
        tsched.step(float(m))
        assert ours.lr == topt.param_groups[0]["lr"]
        lrs.append(ours.lr)
    assert len(set(lrs)) >= 3  # the schedule really reduced, more than once
