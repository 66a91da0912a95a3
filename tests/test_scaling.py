"""The segment-wise scaler fit equals the obvious per-series one, at any magnitude."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_cli import scaling, windows


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=12), st.sampled_from([1e-300, 1e-3, 1.0, 1e300]),
       st.integers(0, 2**31 - 1))
def test_fit_equals_fit_block_per_series(lengths, magnitude, seed):
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.normal(size=(starts[-1], 2)) * magnitude
    values[starts[0] : starts[1], 1] = 3.0  # a constant column
    train_rows = np.array([max(1, int(n * 0.7)) for n in lengths])
    loc, scale = scaling.fit(values, starts, train_rows)
    for s in range(len(lengths)):
        want_loc, want_scale = scaling.fit_block(values[starts[s] : starts[s] + train_rows[s]])
        np.testing.assert_allclose(loc[s], want_loc, rtol=1e-12)
        np.testing.assert_allclose(scale[s], want_scale, rtol=1e-12)
    scaled = scaling.transform(values, starts, loc, scale)
    assert np.isfinite(scaled).all() and (scale > 0).all()


def test_level_windows_are_relative_to_the_last_input_row():
    values = np.arange(20, dtype=np.float64).reshape(10, 2)
    w = windows.make_windows(values, np.array([0, 10]), 1, lookback=3, horizon=2, level=True)
    x, y = w["x_train"], w["y_train"]
    np.testing.assert_array_equal(x[:, -1, :], 0.0)
    np.testing.assert_array_equal(y, [[2.0, 4.0]] * len(y))  # targets rise by 2 a row
