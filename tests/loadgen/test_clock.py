"""Worker clock offsets (NTP-style): the estimate, its bound, the model across rounds, the shift."""

from __future__ import annotations

import pytest

from loadgen.clock import ClockModel, ClockRound, ClockSample, best_round, shift_lag_row, shift_record

pytestmark = pytest.mark.serial  # measures timing: alone, in scripts/test.sh's second pass (see pyproject markers)

TRUE = -5_000_000_000  # master - worker: the worker's clock reads 5 s ahead


def ping(t_master_send: int, up_ns: int, service_ns: int, down_ns: int) -> ClockSample:
    """A ping sent at master time `t_master_send` with the given one-way delays (ns)."""
    t1 = t_master_send - TRUE  # on the worker's clock
    t2 = t_master_send + up_ns
    t3 = t2 + service_ns
    t4 = t3 + down_ns - TRUE
    return ClockSample(t1, t2, t3, t4)


@pytest.mark.parametrize("up,down", [(100_000, 100_000), (10_000, 900_000), (900_000, 10_000)])
def test_offset_is_within_half_the_rtt_whatever_the_asymmetry(up, down):
    s = ping(10**12, up, 50_000, down)
    assert s.rtt_ns == up + down
    assert abs(s.offset_ns - TRUE) <= s.rtt_ns / 2
    if up == down:
        assert s.offset_ns == TRUE  # symmetric paths: exact


def test_a_round_keeps_the_ping_with_the_smallest_rtt():
    samples = [ping(10**12 + k * 10**7, up, 0, down) for k, (up, down) in enumerate([(5_000_000, 100_000), (200_000, 200_000), (100_000, 3_000_000)])]
    r = best_round(samples)
    assert r.samples == 3 and r.offset_ns == TRUE and r.uncertainty_ns == 200_001
    assert r.t_worker_ns == (samples[1].t1 + samples[1].t4) // 2
    assert ClockRound.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError):
        best_round([])


def test_model_interpolates_between_rounds_and_holds_outside():
    m = ClockModel()
    m.add(ClockRound(2_000, offset_ns=-900, uncertainty_ns=10, samples=8))
    m.add(ClockRound(1_000, offset_ns=-1_000, uncertainty_ns=30, samples=8))  # out of order: kept sorted
    assert m.offset_at(0) == -1_000 and m.offset_at(1_500) == -950 and m.offset_at(5_000) == -900
    assert m.to_master(1_500) == 550
    s = m.summary()
    assert s["applied"] and s["offset_ns"] == -900 and s["uncertainty_ns"] == 30 and s["best_uncertainty_ns"] == 10
    assert s["samples"] == 16 and [r["t_worker_ns"] for r in s["rounds"]] == [1_000, 2_000]
    assert s["drift_ppm"] == pytest.approx(100 / 1_000 * 1e6)
    with pytest.raises(ValueError):
        ClockModel().offset_at(0)


def test_same_clock_is_never_shifted():
    m = ClockModel(same_clock=True)
    m.add(ClockRound(1_000, offset_ns=7, uncertainty_ns=20, samples=8))  # measured noise: only a check
    assert m.ready and m.to_master(123) == 123
    assert m.summary()["offset_ns"] == 0 and m.summary()["measured_offset_ns"] == 7 and not m.summary()["applied"]


def test_shift_moves_every_timestamp_of_a_record_by_one_offset():
    m = ClockModel()
    m.add(ClockRound(0, offset_ns=-1_000, uncertainty_ns=5, samples=1))
    m.add(ClockRound(10_000, offset_ns=-2_000, uncertainty_ns=5, samples=1))
    rec = {"t_scheduled_ns": 5_000, "t_sent_ns": 5_100, "t_headers_ns": 5_200, "t_first_token_ns": 6_000,
           "t_last_token_ns": 9_000, "t_done_ns": 9_500, "chunk_ns": [6_000, 7_500, 9_000], "status": "ok"}  # fmt: skip
    out = shift_record(dict(rec), m)
    assert out["t_scheduled_ns"] == 3_500 and out["t_done_ns"] == 8_000  # offset at t_scheduled: -1500
    assert out["chunk_ns"] == [4_500, 6_000, 7_500]  # intervals inside the request unchanged
    dropped = {"t_scheduled_ns": 5_000, "t_sent_ns": None, "chunk_ns": [], "status": "dropped"}
    assert shift_record(dict(dropped), m) == {**dropped, "t_scheduled_ns": 3_500}
    assert shift_lag_row({"t_ns": 10_000, "lag_max_ms": 1.0}, m) == {"t_ns": 8_000, "lag_max_ms": 1.0}
