"""Shared fixtures: the engine tests' (kernels, network, optimizers) and a dask cluster. Keep it small."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_cli.network import Architecture, Network


def make_windows(seed: int, B: int, T: int, D: int, n_out: int):
    """Random (B, T, D) windows and (B, n_out) targets in float64."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, T, D)), rng.normal(size=(B, n_out))


@pytest.fixture
def windows():
    """make_windows(seed, B, T, D, n_out) -> x (B, T, D), y (B, n_out), float64."""
    return make_windows


@pytest.fixture
def small_net():
    """Factory for a Network with tiny, random (not torch-bounded) weights, so gates saturate less
    and the weights exercise every sign."""

    def build(D=2, H=3, L=2, n_out=2, dtype="float64", threads=1, seed=0):
        arch = Architecture(D, H, L, n_out, dtype)
        return Network(arch, seed=seed, forget_bias=0.5, threads=threads)

    return build


@pytest.fixture(scope="module")
def cluster():
    """A local dask cluster of 2 single-threaded worker processes (skipped without dask.distributed)."""
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("dask.dataframe")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as c:
        yield c

