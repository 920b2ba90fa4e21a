"""The host bandwidth probe reports its figure with how it was measured (values are not asserted: no timed tests)."""

from __future__ import annotations

import json

from experiments import hostbench


def test_copy_bandwidth_records_its_method(tmp_path):
    r = hostbench.copy_bandwidth(mib_per_thread=4, threads=2, repeats=1)
    assert r["memory_bandwidth_gb_per_s"] > 0
    assert r["bytes_moved"] == 2 * 4 * 2**20 * 2  # read + write, two threads
    assert (r["threads"], r["mib_per_thread"], r["repeats"], r["method"]) == (2, 4, 1, hostbench.METHOD)
    out = tmp_path / "host.json"
    assert hostbench.main(["--out", str(out), "--mib", "2", "--threads", "1", "--repeats", "1"]) == 0
    assert json.loads(out.read_text())["threads"] == 1
