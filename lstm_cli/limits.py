"""The ranges of the training settings, in one table: the `lstm train` options take their bounds
from here, and modelfile.validate_header checks the same fields of training.params (which
`evaluate --refit` trains with again) against them, so the two cannot drift apart.

Plain data, no imports: cli.py reads it before the heavy modules load.
"""

from __future__ import annotations

# name -> (lowest, highest), both allowed
INTEGERS = {
    "epochs": (1, 100_000),
    "batch_size": (1, 1_000_000),
    "patience": (1, 100_000),
    "lr_patience": (1, 100_000),  # not an option: TrainConfig's default, recorded with the rest
    "seed": (0, 2**32 - 1),
    "hidden": (1, 4096),
    "layers": (1, 16),
    "sample_series": (1, 2**63 - 1),
    "threads": (1, 256),
    "ensemble": (1, 64),  # members of one model file (model.Ensemble)
}

# name -> (lowest, highest or None for no bound, lowest excluded, highest excluded)
FLOATS = {
    "lr": (0.0, 10.0, True, False),
    "momentum": (0.0, 1.0, False, True),
    "weight_decay": (0.0, 1.0, False, False),
    "clip": (0.0, None, False, False),
    "val_frac": (0.0, 0.9, False, False),
    "dropout": (0.0, 1.0, False, True),
    "forget_bias": (-10.0, 10.0, False, False),
    "blend": (0.0, 1.0, False, False),
    "output_scale": (0.0, 1.0, False, False),  # the factor --calibrate val fitted (pipeline.calibrate_head)
}

CHOICES = {
    "optimizer": ("adam", "sgd"),
    "cell": ("lstm", "gru"),
    "dtype": ("float32", "float64"),
    "head_init": ("torch", "zero"),
    "calibrate": ("val", "none"),
}


def float_problem(name: str, value: float) -> str | None:
    """Why `value` is outside the range of FLOATS[name], e.g. 'must be in (0, 10]'; None if inside."""
    lo, hi, lo_open, hi_open = FLOATS[name]
    inside = (value > lo if lo_open else value >= lo) and (hi is None or (value < hi if hi_open else value <= hi))
    if inside:
        return None
    return f"must be in {'(' if lo_open else '['}{lo:g}, {'inf)' if hi is None else f'{hi:g}' + (')' if hi_open else ']')}"


# The model file's own limits (modelfile.validate_header refuses a header beyond them). `lstm train`
# checks the options against them before reading DATA (pipeline.check_model_limits) and the data
# before training (pipeline.check_model_fits), so a run is never refused at save time, after training.
MAX_TARGETS = 256  # data.targets
MAX_INPUTS = 4096  # arch.input_size: targets + features
MAX_OUTPUTS = 100_000  # arch.output_size: horizon (1 when recursive) x targets x quantiles
MAX_STEPS = 100_000  # data.lookback, data.horizon and data.season
