"""Optimizers over the flat parameter vector, with torch.optim semantics, state as plain arrays
(so a checkpoint can store it without pickle)."""

from __future__ import annotations

import numpy as np

from lstm_cli import kernels

OPTIMIZERS = ("adam", "sgd")


class Adam:
    name = "adam"

    def __init__(self, params: np.ndarray, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), betas, float(eps), float(weight_decay)
        self.step_count = 0
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)

    def step(self, grad: np.ndarray) -> None:
        self.step_count += 1
        kernels.adam_step(self.params, grad, self.m, self.v, self.step_count, self.lr,
                          float(self.betas[0]), float(self.betas[1]), self.eps, self.weight_decay)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"optim.m": self.m, "optim.v": self.v}

    def load_state(self, arrays: dict[str, np.ndarray], step_count: int) -> None:
        self.m[:] = arrays["optim.m"]
        self.v[:] = arrays["optim.v"]
        self.step_count = int(step_count)


class SGD:
    """The seed's rule W <- W - eta dL/dW, with optional momentum (torch.optim.SGD's form)."""

    name = "sgd"

    def __init__(self, params: np.ndarray, lr: float = 1e-2, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        self.params = params
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.step_count = 0
        self.velocity = np.zeros_like(params)

    def step(self, grad: np.ndarray) -> None:
        self.step_count += 1
        kernels.sgd_step(self.params, grad, self.velocity, self.step_count, self.lr, self.momentum,
                         self.weight_decay)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"optim.velocity": self.velocity}

    def load_state(self, arrays: dict[str, np.ndarray], step_count: int) -> None:
        self.velocity[:] = arrays["optim.velocity"]
        self.step_count = int(step_count)


def make_optimizer(name: str, params: np.ndarray, *, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.0):
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


class ReduceOnPlateau:
    """torch's ReduceLROnPlateau (mode min, relative threshold): lr *= factor after `patience`
    epochs without improvement, never below min_lr."""

    def __init__(self, optimizer, factor: float = 0.5, patience: int = 5, threshold: float = 1e-4,
                 min_lr: float = 1e-6):
        self.optimizer, self.factor, self.patience = optimizer, factor, patience
        self.threshold, self.min_lr = threshold, min_lr
        self.best = float("inf")
        self.bad_epochs = 0

    def step(self, metric: float) -> None:
        if metric < self.best * (1.0 - self.threshold):
            self.best = metric
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
            self.bad_epochs = 0
