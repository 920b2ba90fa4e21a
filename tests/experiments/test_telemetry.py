"""Samplers: NVML through a fake module (normal, missing-device and error paths), and the
Prometheus scraper against the timing server."""

from __future__ import annotations

import itertools
from types import SimpleNamespace as NS

import pytest

from experiments import telemetry


class FakeNVML:
    """Just enough of pynvml: 2 GPUs whose counters advance by a known amount per read."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self, count: int = 2, failing: set[str] = frozenset()) -> None:
        self.count, self.failing = count, failing
        self.energy = {0: itertools.count(1_000_000, 50_000), 1: itertools.count(2_000_000, 60_000)}  # mJ
        self.init = self.shutdown = 0

    def _maybe_fail(self, name: str) -> None:
        if name in self.failing:
            raise RuntimeError(f"NVML_ERROR_{name.upper()}")

    def nvmlInit(self):  # noqa: N802
        self.init += 1

    def nvmlShutdown(self):  # noqa: N802
        self.shutdown += 1

    def nvmlDeviceGetCount(self):  # noqa: N802
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        return i

    def nvmlDeviceGetName(self, h):  # noqa: N802
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h):  # noqa: N802
        return f"GPU-{h}"

    def nvmlDeviceGetUtilizationRates(self, h):  # noqa: N802
        self._maybe_fail("util")
        return NS(gpu=90 + h, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h):  # noqa: N802
        return NS(used=(10 + h) * 2**30, total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, h):  # noqa: N802
        self._maybe_fail("power")
        return 350_000 + h * 1000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):  # noqa: N802
        return next(self.energy[h])

    def nvmlDeviceGetClockInfo(self, h, kind):  # noqa: N802
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, h, kind):  # noqa: N802
        return 61 + h

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):  # noqa: N802
        return 4 if h == 1 else 0


def take(gen, n):
    return [next(gen) for _ in range(n)]


def test_nvml_rows_have_units_and_every_field():
    fake = FakeNVML()
    rows = take(telemetry.nvml_samples(0, 0.001, nvml=fake), 4)
    assert [r["gpu"] for r in rows] == [0, 1, 0, 1]
    r0, r1 = rows[0], rows[1]
    assert r0["sampler"] == "nvml" and r0["gpu_name"] == "NVIDIA H100 80GB HBM3" and r1["gpu_uuid"] == "GPU-1"
    assert (r0["gpu_util_pct"], r0["mem_util_pct"], r1["gpu_util_pct"]) == (90, 40, 91)
    assert r0["mem_used_bytes"] == 10 * 2**30 and r0["power_w"] == 350.0 and r1["power_w"] == 351.0
    assert (r0["energy_j"], rows[2]["energy_j"]) == (1000.0, 1050.0)  # mJ -> J, counter advances
    assert (r0["sm_clock_mhz"], r0["mem_clock_mhz"], r1["temp_c"], r1["throttle_reasons"]) == (1980, 2619, 62, 4)
    assert r0["errors"] is None and r0["t_ns"] <= r1["t_ns"] <= rows[2]["t_ns"]


def test_nvml_failing_call_leaves_field_null_and_says_why():
    rows = take(telemetry.nvml_samples(0, 0.001, nvml=FakeNVML(failing={"power", "util"})), 2)
    assert rows[0]["power_w"] is None and rows[0]["gpu_util_pct"] is None and rows[0]["mem_util_pct"] is None
    assert "power_w: RuntimeError: NVML_ERROR_POWER" in rows[0]["errors"] and "gpu_util_pct" in rows[0]["errors"]
    assert rows[0]["energy_j"] == 1000.0  # the other readings survive


def test_nvml_without_a_device_fails_and_shuts_nvml_down():
    fake = FakeNVML(count=0)
    with pytest.raises(RuntimeError, match="NVML sees no GPU"):
        next(telemetry.nvml_samples(0, 0.001, nvml=fake))
    assert fake.init == 1 and fake.shutdown == 1


def test_metrics_scraper_keeps_raw_samples(timing_server):
    url, _ = timing_server()
    rows = take(telemetry.metrics_samples(url + "/metrics", 0.05), 4)
    names = {r["name"] for r in rows}
    assert {"fake:num_requests_running", "fake:requests_total"} <= names
    assert all(r["error"] is None and isinstance(r["value"], float) for r in rows)


def test_metrics_scraper_records_a_failed_scrape():
    from tests.conftest import free_port

    (row,) = take(telemetry.metrics_samples(f"http://127.0.0.1:{free_port()}/metrics", 0.05), 1)
    assert row["name"] is None and "URLError" in row["error"]


@pytest.mark.parametrize("kind", ["cpu", "metrics"])
def test_a_stopped_sampler_takes_one_last_whole_sample_at_once(tmp_path, timing_server, kind):
    """A 30 s interval: SIGTERM wakes the wait, one more whole sample (every row of the scrape) is
    written and the process exits well before the next one would have been due."""
    import json
    import os
    import time

    from engines.process import Supervisor

    url, _ = timing_server()
    out = tmp_path / f"{kind}.jsonl"
    with Supervisor() as sup:
        s = telemetry.SamplerProcess(kind, os.getpid(), out, 30.0, url=url + "/metrics" if kind == "metrics" else None,
                                     supervisor=sup)  # fmt: skip
        s.start()
        deadline = time.monotonic() + 20
        while not (out.is_file() and out.read_text().endswith("\n")):
            assert time.monotonic() < deadline and s.alive(), "no first sample"
            time.sleep(0.05)
        time.sleep(0.3)  # the first scrape is written whole; the sampler now waits 30 s
        t0 = time.monotonic()
        assert s.stop() == 0
        took = time.monotonic() - t0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    times = sorted({r["t_ns"] for r in rows})
    assert len(times) == 2 and took < 5.0, (times, took)  # the first sample and the one after the stop
    if kind == "metrics":  # both scrapes whole: the same series in each
        first, last = ({(r["name"], r["labels"]) for r in rows if r["t_ns"] == t} for t in times)
        assert first == last and len(first) > 1
