"""What a bug report or a cache problem needs: versions, the CPU, and the state of the JIT cache."""

from __future__ import annotations

import glob
import os
import platform
import sys

# the kernels train and predict call; warm means each has a cached float32 and float64 build
WARM_KERNELS = ("forward_backward", "forward_infer", "adam_step", "sgd_step", "clip_grad_norm", "add_into")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jit_cache_state() -> dict:
    """Where Numba caches our kernels, why there, and how many compiled builds of each are there."""
    from lstm_cli import kernels
    from lstm_cli.runtime import JIT_CACHE

    builds = {}
    cache_dir = None
    for name in WARM_KERNELS:
        cache = getattr(kernels, name)._cache
        cache_dir = cache._cache_path
        stem = cache._cache_file._index_name[: -len(".nbi")]
        index = os.path.join(cache_dir, cache._cache_file._index_name)
        builds[name] = len(glob.glob(os.path.join(cache_dir, glob.escape(stem) + ".*.nbc"))) if os.path.exists(index) else 0
    # a disabled cache is a directory of this run only (see runtime.prepare_jit_cache)
    ours = bool(JIT_CACHE["dir"] and cache_dir and cache_dir.startswith(JIT_CACHE["dir"]))
    disabled = JIT_CACHE["disabled"] if ours else None
    return {"dir": cache_dir, "writable": bool(cache_dir) and os.access(cache_dir, os.W_OK),
            "warm": all(n >= 2 for n in builds.values()), "builds": builds,
            "source": JIT_CACHE["source"], "disabled": disabled}


def jit_cache_summary(cache: dict) -> str:
    """The `jit cache` line of `lstm version`: where, and whether later runs will find the kernels."""
    if cache.get("disabled"):
        return f"disabled ({cache['disabled']}); this run compiles in {cache['dir']}, removed at exit"
    state = "warm" if cache["warm"] else "cold: run lstm warmup"
    return f"{cache['dir']} ({state}{'' if cache['writable'] else ', not writable'})"


def version_info() -> dict:
    import llvmlite
    import numba
    import numpy
    import pandas

    from lstm_cli import __version__

    return {
        "lstm": __version__,
        "python": platform.python_version(),
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "executable": sys.executable,
        "jit_cache": jit_cache_state(),
    }
