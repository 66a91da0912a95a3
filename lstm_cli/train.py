"""The training loop: shuffled mini-batches, clipping, the optimizer, a learning-rate schedule,
early stopping that restores the best weights. It never prints: it reports through a callback
and stops when asked (signal, time limit)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lstm_cli import kernels
from lstm_cli.network import Network
from lstm_cli.optim import ReduceOnPlateau, make_optimizer


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 1.0
    patience: int = 15
    lr_patience: int = 5
    dropout: float = 0.0
    seed: int = 0


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float | None
    best_epoch: int
    best_loss: float
    lr: float
    samples_per_s: float
    seconds: float


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    stopped_by: str | None = None  # None (finished), 'early_stop', or what should_stop returned
    seconds: float = 0.0


def mean_loss(y_hat: np.ndarray, y: np.ndarray, quantiles: np.ndarray | None) -> float:
    """The training objective on held-out windows: MSE, or the mean pinball loss."""
    e = y_hat.astype(np.float64) - y
    if quantiles is None:
        return float(np.mean(e * e))
    q = quantiles[None, :]
    return float(np.mean(np.where(e < 0, -q * e, (1.0 - q) * e)))


def fit(network: Network, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
        config: TrainConfig, *, quantiles: np.ndarray | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], str | None] | None = None) -> TrainResult:
    """Train network.params in place. x (N, T, C), y (N, O) in model units. With quantiles,
    y columns repeat each target once per quantile and the loss is the pinball loss."""
    rng = np.random.default_rng(config.seed + 1)  # init used `seed`; batches and dropout their own stream
    dt = network.arch.np_dtype
    x_train = np.ascontiguousarray(x_train, dtype=dt)
    y_train = np.ascontiguousarray(y_train, dtype=dt)
    has_val = len(x_val) > 0
    if has_val:
        x_val = np.ascontiguousarray(x_val, dtype=dt)
    optimizer = make_optimizer(config.optimizer, network.params, lr=config.lr,
                               weight_decay=config.weight_decay, momentum=config.momentum)
    schedule = ReduceOnPlateau(optimizer, patience=config.lr_patience)
    grad = np.empty_like(network.params)
    best_params = network.params.copy()
    best_loss, best_epoch = float("inf"), 0
    result = TrainResult(epochs_run=0, best_epoch=0)
    n = len(x_train)
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        total = 0.0
        for lo in range(0, n, config.batch_size):
            idx = np.sort(order[lo : lo + config.batch_size])
            loss, _ = network.loss_and_grad(x_train[idx], y_train[idx], dropout=config.dropout, rng=rng,
                                            quantiles=quantiles, grad_out=grad)
            if not np.isfinite(loss):
                result.stopped_by = "diverged"  # keep the best weights so far
                break
            kernels.clip_grad_norm(grad, config.clip)
            optimizer.step(grad)
            total += loss * len(idx)
            if should_stop is not None and (reason := should_stop()):
                result.stopped_by = reason
                break
        train_loss = total / n
        val_loss = mean_loss(network.predict(x_val), y_val, quantiles) if has_val else None
        monitored = val_loss if has_val else train_loss
        if result.stopped_by is None:  # a partial epoch is not a fair score
            result.epochs_run = epoch
            result.train_loss.append(train_loss)
            result.val_loss.append(val_loss)
            if np.isfinite(monitored) and monitored < best_loss:
                best_loss, best_epoch = monitored, epoch
                best_params[:] = network.params
            schedule.step(monitored if np.isfinite(monitored) else float("inf"))
        elapsed = time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(EpochReport(epoch, config.epochs, train_loss, val_loss, best_epoch, best_loss,
                                 optimizer.lr, n / max(elapsed, 1e-9), time.perf_counter() - start))
        if result.stopped_by is not None:
            break
        if not np.isfinite(monitored):
            result.stopped_by = "diverged"
            break
        if epoch - best_epoch >= config.patience:
            result.stopped_by = "early_stop"
            break
    network.params[:] = best_params
    result.best_epoch = best_epoch
    result.seconds = time.perf_counter() - start
    return result
