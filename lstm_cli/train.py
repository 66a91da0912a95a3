"""The training loop: shuffled mini-batches, clipping, the optimizer, a learning-rate schedule,
early stopping that restores the best weights. It never prints: it reports through a callback
and stops when asked (signal, time limit).

Resumable: after every completed epoch that does not end training, `on_state` receives a
TrainState (weights, best weights, optimizer and schedule state, the batch/dropout RNG state,
history); `fit(..., resume=state)` continues from it and reaches bit for bit the weights an
uninterrupted run reaches (same data, config and threads). checkpoint.py stores it in a file."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lstm_cli import kernels
from lstm_cli.network import Network
from lstm_cli.optim import ReduceOnPlateau, make_optimizer

BATCH_REPORT_SECONDS = 0.25  # on_batch at most this often: a live bar inside long epochs, at no cost


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-2
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
    resumed_from: int = 0  # the epoch of the TrainState training continued from (0: a fresh start)


@dataclass
class TrainState:
    """Everything the loop needs to continue after `epoch` as if it had never stopped.

    The arrays handed to `on_state` are the loop's live buffers: copy them to keep them past the
    call. best_loss and plateau_best are inf until a finite score is seen.
    """

    epoch: int  # completed epochs
    params: np.ndarray
    best_params: np.ndarray
    best_loss: float
    best_epoch: int
    optimizer: str  # 'adam' or 'sgd'
    optimizer_step: int
    lr: float  # the current learning rate (the schedule lowers it)
    optimizer_arrays: dict[str, np.ndarray]  # Adam's m and v, or SGD's velocity
    plateau_best: float
    plateau_bad_epochs: int
    rng_state: dict  # np.random.Generator.bit_generator.state: a dict of str and int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)


def mean_loss(y_hat: np.ndarray, y: np.ndarray, quantiles: np.ndarray | None) -> float:
    """The training objective on held-out windows: MSE, or the mean pinball loss."""
    e = y_hat.astype(np.float64) - y
    if quantiles is None:
        return float(np.mean(e * e))
    q = quantiles[None, :]
    return float(np.mean(np.where(e < 0, -q * e, (1.0 - q) * e)))


def _check_resume(state: TrainState, network: Network, config: TrainConfig, optimizer) -> None:
    """A state that cannot belong to this network and config is a bug of the caller (checkpoint.py
    compares fingerprints first)."""
    size = network.params.shape
    if state.params.shape != size or state.best_params.shape != size:
        raise ValueError(f"resume state holds {state.params.shape} parameters, the network {size}")
    if state.optimizer != config.optimizer:
        raise ValueError(f"resume state is for {state.optimizer}, the config says {config.optimizer}")
    if not 0 <= state.epoch <= config.epochs or not 0 <= state.best_epoch <= state.epoch:
        raise ValueError(f"resume state at epoch {state.epoch} (best {state.best_epoch}) does not fit "
                         f"{config.epochs} epochs")
    if len(state.train_loss) != state.epoch or len(state.val_loss) != state.epoch:
        raise ValueError("resume state history does not have one entry per completed epoch")
    ours = optimizer.state_arrays()
    if set(state.optimizer_arrays) != set(ours) or any(
            state.optimizer_arrays[k].shape != ours[k].shape for k in ours):
        raise ValueError(f"resume state optimizer arrays {sorted(state.optimizer_arrays)} do not match "
                         f"{sorted(ours)}")


def fit(network: Network, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
        config: TrainConfig, *, quantiles: np.ndarray | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        on_batch: Callable[[int, int, int, float], None] | None = None,
        should_stop: Callable[[], str | None] | None = None,
        resume: TrainState | None = None,
        on_state: Callable[[TrainState], None] | None = None) -> TrainResult:
    """Train network.params in place. x (N, T, C), y (N, O) in model units. With quantiles,
    y columns repeat each target once per quantile and the loss is the pinball loss.

    resume: continue after resume.epoch from that state (network.params are overwritten).
    on_state: called after every completed epoch that does not end training (see TrainState).
    on_batch(epoch, batches done, batches per epoch, seconds since the start): during an epoch, at
    most every BATCH_REPORT_SECONDS (one clock read per batch), so long epochs show progress."""
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
    first = 1
    if resume is not None:
        _check_resume(resume, network, config, optimizer)
        network.params[:] = resume.params
        best_params[:] = resume.best_params
        best_loss, best_epoch = float(resume.best_loss), int(resume.best_epoch)
        optimizer.load_state(resume.optimizer_arrays, resume.optimizer_step)
        optimizer.lr = float(resume.lr)
        schedule.best, schedule.bad_epochs = float(resume.plateau_best), int(resume.plateau_bad_epochs)
        rng.bit_generator.state = resume.rng_state
        result.epochs_run = result.resumed_from = int(resume.epoch)
        result.train_loss = [float(x) for x in resume.train_loss]
        result.val_loss = [None if v is None else float(v) for v in resume.val_loss]
        first = int(resume.epoch) + 1
    n = len(x_train)
    n_batches = -(-n // config.batch_size)
    start = time.perf_counter()
    next_batch_report = start + BATCH_REPORT_SECONDS
    for epoch in range(first, config.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        total = 0.0
        for batch, lo in enumerate(range(0, n, config.batch_size), 1):
            idx = np.sort(order[lo : lo + config.batch_size])
            loss, _ = network.loss_and_grad(x_train[idx], y_train[idx], dropout=config.dropout, rng=rng,
                                            quantiles=quantiles, grad_out=grad)
            if not np.isfinite(loss):
                result.stopped_by = "diverged"  # keep the best weights so far
                break
            kernels.clip_grad_norm(grad, config.clip)
            optimizer.step(grad)
            total += loss * len(idx)
            if on_batch is not None and batch < n_batches and (now := time.perf_counter()) >= next_batch_report:
                next_batch_report = now + BATCH_REPORT_SECONDS
                on_batch(epoch, batch, n_batches, now - start)
            if should_stop is not None and (reason := should_stop()):
                result.stopped_by = reason
                break
        if result.stopped_by is not None:  # a partial epoch: no fair score, nothing to report; stop now
            break
        train_loss = total / n
        val_loss = mean_loss(network.predict(x_val), y_val, quantiles) if has_val else None
        monitored = val_loss if has_val else train_loss
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
        if not np.isfinite(monitored):
            result.stopped_by = "diverged"
            break
        if epoch - best_epoch >= config.patience:
            result.stopped_by = "early_stop"
            break
        if on_state is not None and epoch < config.epochs:
            on_state(TrainState(epoch=epoch, params=network.params, best_params=best_params, best_loss=best_loss,
                                best_epoch=best_epoch, optimizer=config.optimizer,
                                optimizer_step=optimizer.step_count, lr=optimizer.lr,
                                optimizer_arrays=optimizer.state_arrays(), plateau_best=schedule.best,
                                plateau_bad_epochs=schedule.bad_epochs, rng_state=rng.bit_generator.state,
                                train_loss=result.train_loss, val_loss=result.val_loss))
    network.params[:] = best_params
    result.best_epoch = best_epoch
    result.seconds = time.perf_counter() - start
    return result
