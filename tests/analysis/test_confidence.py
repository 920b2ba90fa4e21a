"""The one interval function and the too-few-values warning (the replicates themselves come from
analysis.blocks, tested in test_blocks.py)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.confidence import interval, min_samples, too_few_warning
from analysis.points import pool_boot, pool_repetitions
from tests.analysis.decision_tables import point, table


def test_interval_is_the_central_95_percent_of_the_replicates():
    r = np.arange(1001, dtype=float)  # 0 .. 1000
    assert interval(r) == pytest.approx((25.0, 975.0))
    assert interval(np.array([np.nan])) == (None, None)
    assert interval(np.r_[r, np.nan]) == interval(r)  # NaN left out


def test_an_end_that_falls_on_an_infinite_replicate_is_open():
    r = np.r_[np.full(90, 1.0), np.full(10, np.inf)]  # 10 % beyond the range: the high end is open
    lo, hi = interval(r)
    assert lo == 1.0 and hi is None
    lo, hi = interval(np.r_[np.full(10, -np.inf), np.full(90, 1.0)])
    assert lo is None and hi == 1.0
    assert interval(np.r_[np.full(99, 1.0), np.inf]) == (1.0, 1.0)  # 1 % beyond: inside the 2.5 % tail


def test_too_few_values_for_the_percentile_warns():
    assert (min_samples(99), min_samples(90), min_samples(50)) == (100, 10, 2)
    assert too_few_warning(50, 99, "ttft_ms") == "ttft_ms p99 from 50 values (< 100): the interval is not trustworthy"
    assert too_few_warning(100, 99) is None and too_few_warning(50, 50) is None


def test_pooled_repetitions_use_the_one_interval_function():
    # analysis.points pools repetitions' cost replicates and takes their interval with this module's
    # interval (np.quantile); it had its own np.percentile copy, which differed in the last digit.
    g = np.random.default_rng(3)
    boots = [g.gamma(4.0, 0.5, 400), g.gamma(4.0, 0.6, 400)]
    rows = [point("A", load=1, usd=2.0, rep=r, boot=b) for r, b in enumerate(boots)]
    pooled = pool_repetitions(table(rows)).iloc[0]
    assert (pooled["usd_per_1m_goodput_lo"], pooled["usd_per_1m_goodput_hi"]) == interval(pool_boot(boots, 0))
    assert interval(None) == (None, None)
