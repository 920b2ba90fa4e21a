"""The evidence of the GPU validation (benchmarks/gpu_validation.py): summary.json and summary.md
from a servelab run folder and the validation's steps, and the output folder held to what the
device tool brings back (at most 8 files, each under 16 MiB; logs cut in the middle).

Imported by gpu_validation.py (its summary step runs under the GPU venv's python, its dry run and
tests/benchmarks/test_gpu_validation.py on the CPU). Side effects: summarize() and
write_fallback_summary() write summary.json/summary.md and copy the run's files into the output
folder; cut_middle() rewrites a log; pack_outputs() cuts or removes our own oversized files.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

OUT_FILES = ("summary.md", "summary.json", "run.json", "report.html", "telemetry.parquet", "test_gpu.txt",
             "validation.log", "engine.log")  # fmt: skip
MAX_OUT_FILES = 8
MAX_FILE_BYTES = 16 * 2**20  # each returned file must stay under this
KEEP_BYTES = 15 * 2**20  # what a cut log keeps (head + tail), leaving a margin under the limit
NVML_FIELDS = ("gpu_util_pct", "mem_util_pct", "mem_used_bytes", "power_w", "energy_j", "sm_clock_mhz",
               "mem_clock_mhz", "temp_c", "throttle_reasons")  # fmt: skip


# -- summary -------------------------------------------------------------------------------------------
def nvml_field_report(tel: Any) -> dict[str, Any]:
    """Which NVML fields were read in how many samples, and the sampler's distinct errors. Pure."""
    n = int(len(tel))
    fields = {f: int(tel[f].notna().sum()) if f in tel else 0 for f in NVML_FIELDS}
    errors = sorted(set(tel["errors"].dropna().astype(str))) if "errors" in tel else []
    return {
        "samples": n,
        "fields_read": fields,
        "missing_fields": [f for f, k in fields.items() if k < n or n == 0],
        "all_fields_read": n > 0 and all(k == n for k in fields.values()) and not errors,
        "errors": errors[:10],
        "gpus": sorted(set(tel["gpu_name"].dropna().astype(str))) if "gpu_name" in tel else [],
    }


def _dataclass_of(cls: type, d: dict[str, Any] | None) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (d or {}).items() if k in names})


def mbu_by_point(run_dir: Path, run: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """{point_id: {mbu, decode_bound_tok_per_s, bandwidth ...}} from the decision table (analysis.results),
    at the run's own slo, pricing and gpu; (.., why) when it cannot be computed."""
    from analysis import results
    from analysis.points import detail_key
    from analysis.schema import GpuPrice, PricingConfig, SloConfig

    cfg = run.get("config") or {}
    try:
        pricing = _dataclass_of(PricingConfig, cfg.get("pricing"))
        pricing.gpus = {k: _dataclass_of(GpuPrice, v) for k, v in (pricing.gpus or {}).items()}
        gpu = cfg.get("gpu") or {}
        table = results.build_table(run_dir, slo=_dataclass_of(SloConfig, cfg.get("slo")), pricing=pricing,
                                    gpu_catalog={gpu.get("name", "cpu"): gpu}, n_boot=200)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the rest of the summary stands without MBU
        return {}, f"{type(e).__name__}: {e}"
    out = {}
    for row in results.table_for_json(table.points):
        det = table.details.get(detail_key(row["run_id"], row["point_id"], row.get("repetition")), {})
        roof = det.get("roofline") or {}
        out[row["point_id"]] = {"mbu": row.get("mbu"), "decode_bound_tok_per_s": row.get("decode_bound_tok_per_s"),
                                "bandwidth_gb_per_s": roof.get("bandwidth_gb_per_s"),
                                "bandwidth_source": roof.get("bandwidth_source"), "decode_batch": roof.get("batch"),
                                "why_missing": roof.get("why_missing"), "verdict": row.get("verdict")}  # fmt: skip
    return out, None


def summarize(run_dir: Path | None, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """summary.json + summary.md from the run folder (None: the run never started) and the steps;
    copies run.json, report.html, telemetry.parquet and engine.log into `out`. Returns the summary."""
    import pandas as pd

    from analysis.records.run import read_run_json

    s: dict[str, Any] = {"passed": False, "checks": {}, "steps": state.get("steps", []), "facts": state.get("facts", {}),
                         "plan": state.get("plan", {}), "run_dir": str(run_dir) if run_dir else None}  # fmt: skip
    checks = s["checks"]
    for st in s["steps"]:
        checks[f"step {st['name']}"] = st["status"] == "ok"
    run: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "run.json").is_file():
        run = read_run_json(run_dir / "run.json")
        for name in ("run.json", "report.html", "telemetry.parquet", "engine.log"):
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, out / name)
    prov = run.get("provenance") or {}
    gpu = prov.get("gpu") or {}
    eng = run.get("engine") or {}
    s["gpu"] = {"name": [g.get("name") for g in gpu.get("gpus", [])], "uuid": [g.get("uuid") for g in gpu.get("gpus", [])],
                "memory_total_gib": [g.get("memory_total_gib") for g in gpu.get("gpus", [])],
                "driver_version": gpu.get("driver_version"), "cuda_driver_version": gpu.get("cuda_driver_version"),
                "error": gpu.get("error")}  # fmt: skip
    s["engine"] = {"name": eng.get("name"), "version": eng.get("version"), "python": eng.get("python"),
                   "packages": eng.get("packages"), "time_to_ready_s": eng.get("time_to_ready_s"),
                   "argv": (eng.get("plan") or {}).get("argv"), "exit_code": eng.get("exit_code")}  # fmt: skip
    s["run"] = {"status": run.get("status"), "failure": run.get("failure"), "run_id": run.get("run_id"),
                "notes": [n.get("message") if isinstance(n, dict) else str(n) for n in run.get("notes") or []][:20],
                "telemetry": {k: v for k, v in (run.get("telemetry") or {}).items() if k != "gaps"},
                "telemetry_gaps": len((run.get("telemetry") or {}).get("gaps") or [])}  # fmt: skip
    checks["run.json status ok"] = run.get("status") == "ok"
    checks["provenance: GPU name, UUID and driver"] = bool(s["gpu"]["name"] and all(s["gpu"]["uuid"]) and s["gpu"]["driver_version"])

    tel_path = run_dir / "telemetry.parquet" if run_dir else None
    if tel_path is not None and tel_path.is_file():
        s["nvml"] = nvml_field_report(pd.read_parquet(tel_path))
    else:
        s["nvml"] = {"samples": 0, "all_fields_read": False, "missing_fields": list(NVML_FIELDS), "errors": ["no telemetry.parquet"]}
    checks["NVML: every field read in every sample"] = bool(s["nvml"]["all_fields_read"])

    mbu, why = mbu_by_point(run_dir, run) if run.get("status") == "ok" else ({}, "the run did not finish ok")
    s["mbu_error"] = why
    points = []
    for lp in run.get("load_points") or []:
        sm = lp.get("summary") or {}
        en, g = sm.get("energy") or {}, sm.get("gpu") or {}
        m = mbu.get(lp.get("point_id"), {})
        points.append({
            "index": lp.get("index"), "point_id": lp.get("point_id"), "load": lp.get("load_value"), "unit": lp.get("load_unit"),
            "requests_ok": (sm.get("requests") or {}).get("ok"), "requests": (sm.get("requests") or {}).get("total"),
            "output_tok_per_s": sm.get("output_tok_per_s"), "power_mean_w": g.get("power_mean_w"),
            "power_peak_w": g.get("power_peak_w"), "energy_j": en.get("joules"), "energy_method": en.get("method"),
            "j_per_output_token": en.get("j_per_output_token"), "gpu_util_mean_pct": g.get("gpu_util_mean_pct"),
            "mem_used_peak_gib": g.get("mem_used_peak_gib"), "mbu": m.get("mbu"),
            "decode_bound_tok_per_s": m.get("decode_bound_tok_per_s"), "decode_batch": m.get("decode_batch"),
            "bandwidth_gb_per_s": m.get("bandwidth_gb_per_s"), "mbu_why_missing": m.get("why_missing"),
            "verdict": m.get("verdict") or (sm.get("decision") or {}).get("verdict"),
            "ttft_ms_p50": (sm.get("ttft_ms") or {}).get("p50"), "tpot_ms_p50": (sm.get("tpot_ms") or {}).get("p50"),
            "aborted": lp.get("aborted"), "interrupted": lp.get("interrupted"),
        })  # fmt: skip
    s["points"] = points
    checks["at least 2 load points measured"] = sum(1 for p in points if not p["aborted"] and not p["interrupted"]) >= 2
    checks["energy per output token (NVML counter) at every point"] = bool(points) and all(
        p["j_per_output_token"] is not None and p["energy_method"] == "counter" for p in points)  # fmt: skip
    checks["MBU at every point"] = bool(points) and all(p["mbu"] is not None for p in points)
    test_txt = out / "test_gpu.txt"
    s["tests"] = {"file": "tests/experiments/test_gpu.py", "marker": "gpu",
                  "result": _pytest_result(test_txt.read_text() if test_txt.is_file() else "")}  # fmt: skip
    checks["pytest -m gpu passed"] = s["tests"]["result"].get("passed", 0) >= 1 and not s["tests"]["result"].get("failed")
    s["passed"] = all(checks.values())
    (out / "summary.json").write_text(json.dumps(s, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(render_summary_md(s))
    return s


def _pytest_result(text: str) -> dict[str, Any]:
    import re

    out: dict[str, Any] = {}
    lines = [ln for ln in text.splitlines() if re.match(r"^=+ .*(passed|failed|error|skipped|deselected).* =+$", ln)]
    if lines:
        out["line"] = lines[-1].strip("= ")
        for n, what in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", lines[-1]):
            out["errors" if what.startswith("error") else what] = int(n)
    return out


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def render_summary_md(s: dict[str, Any]) -> str:
    g, e, n = s.get("gpu") or {}, s.get("engine") or {}, s.get("nvml") or {}
    pk = e.get("packages") or {}
    lines = [
        f"# servelab GPU validation: {'PASS' if s.get('passed') else 'FAIL'}", "",
        f"- GPU: {', '.join(map(str, g.get('name') or ['—']))} (UUID {', '.join(map(str, g.get('uuid') or ['—']))}), "
        f"driver {g.get('driver_version') or '—'}, CUDA {g.get('cuda_driver_version') or '—'}",
        f"- Engine: {e.get('name') or '—'} {e.get('version') or ''} (torch {pk.get('torch', '—')}), "
        f"ready after {_f(e.get('time_to_ready_s'))} s: `{' '.join(e.get('argv') or [])}`",
        f"- Run: status {(s.get('run') or {}).get('status')}; folder {s.get('run_dir')}",
        f"- NVML: {n.get('samples', 0)} samples; every field read in every sample: {n.get('all_fields_read')}"
        + (f"; missing {', '.join(n.get('missing_fields') or [])}" if n.get("missing_fields") else "")
        + (f"; errors: {'; '.join(n.get('errors') or [])}" if n.get("errors") else ""),
        f"- Tests: pytest -m gpu tests/experiments/test_gpu.py: {(s.get('tests') or {}).get('result', {}).get('line', 'no result')}",
        "", "## Load points", "",
        "| # | load | req ok | out tok/s | power mean W | energy J | J / out token | MBU | decode bound tok/s | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for p in s.get("points") or []:
        lines.append(f"| {p['index']} | {_f(p['load'], 0)} {p['unit']} | {_f(p['requests_ok'])} | {_f(p['output_tok_per_s'])} | "
                     f"{_f(p['power_mean_w'])} | {_f(p['energy_j'])} | {_f(p['j_per_output_token'], 4)} | "
                     f"{_f(p['mbu'], 3)} | {_f(p['decode_bound_tok_per_s'], 0)} | {p['verdict'] or '—'} |")  # fmt: skip
    if s.get("mbu_error"):
        lines.append(f"\nMBU not computed: {s['mbu_error']}")
    lines += ["", "## Checks", ""] + [f"- [{'x' if ok else ' '}] {name}" for name, ok in (s.get("checks") or {}).items()]
    lines += ["", "## Steps", "", "| step | seconds | status | detail |", "|---|---|---|---|"]
    for st in s.get("steps") or []:
        lines.append(f"| {st['name']} | {st['seconds']:.1f} | {st['status']} | {str(st.get('detail', ''))[:160]} |")
    return "\n".join(lines) + "\n"


def write_fallback_summary(out: Path, state: dict[str, Any], why: str) -> None:
    """A summary from the steps alone (stdlib only), when the summary step itself failed."""
    steps = state.get("steps", [])
    checks = {f"step {st['name']}": st["status"] == "ok" for st in steps}
    s = {"passed": False, "error": why, "steps": steps, "facts": state.get("facts", {}), "plan": state.get("plan", {}),
         "run_dir": state.get("run_dir"), "checks": checks}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(s, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(render_summary_md(s) + f"\n{why}\n")
    run_dir = Path(state["run_dir"]) if state.get("run_dir") else None
    for name in ("run.json", "report.html", "telemetry.parquet", "engine.log"):
        if run_dir is not None and (run_dir / name).is_file() and not (out / name).exists():
            shutil.copyfile(run_dir / name, out / name)


# -- the output folder's limits -------------------------------------------------------------------------
def cut_middle(path: Path, keep: int = KEEP_BYTES) -> None:
    """Keep the first eighth and the last seven eighths of `keep` bytes of a text file, marked where cut."""
    size = path.stat().st_size
    if size <= keep:
        return
    head_n, tail_n = keep // 8, keep - keep // 8 - 200
    with open(path, "rb") as f:
        head = f.read(head_n)
        f.seek(size - tail_n)
        tail = f.read()
    marker = f"\n\n[... gpu_validation cut {size - head_n - tail_n:,} bytes here to keep the file under 16 MiB ...]\n\n"
    path.write_bytes(head + marker.encode() + tail)


def pack_outputs(out: Path) -> list[str]:
    """Hold the output folder to its limits: OUT_FILES (8) each under 16 MiB (logs cut in the
    middle, anything else too big removed). Returns what it did and what it found that is not ours."""
    notes = []
    for p in sorted(out.iterdir()):
        if p.name not in OUT_FILES:  # never deleted: it is not ours (the output folder should start empty)
            notes.append(f"{p.name}: not an output of the validation (left as it is)")
            continue
        if p.stat().st_size >= MAX_FILE_BYTES:
            if p.suffix in (".log", ".txt", ".md"):
                cut_middle(p)
                notes.append(f"{p.name}: cut to {p.stat().st_size / 2**20:.1f} MiB")
            else:
                notes.append(f"{p.name}: {p.stat().st_size / 2**20:.1f} MiB is over the 16 MiB limit; removed")
                p.unlink()
    files = [p for p in out.iterdir() if p.is_file()]
    if len(files) > MAX_OUT_FILES:
        notes.append(f"{len(files)} files > {MAX_OUT_FILES}")
    return notes


def output_problems(out: Path) -> list[str]:
    """What breaks the output folder's limits ([] = fine). Pure reading."""
    files = [p for p in out.iterdir()]
    out_ = [f"{len(files)} entries > {MAX_OUT_FILES}"] if len(files) > MAX_OUT_FILES else []
    out_ += [f"{p.name} is not a file" for p in files if not p.is_file()]
    out_ += [f"{p.name}: {p.stat().st_size} bytes >= 16 MiB" for p in files if p.is_file() and p.stat().st_size >= MAX_FILE_BYTES]
    return out_


def synthetic_run(run_dir: Path, load_points: tuple[int, ...] = (1, 8, 32), gpu_name: str = "NVIDIA H200") -> None:
    """A run folder shaped like a real GPU run's (run.json + NVML telemetry.parquet, no requests), for the
    dry run and the tests to push through summarize and pack_outputs; one point per concurrency in
    `load_points` (the validation's own: gpu_validation.LOAD_POINTS)."""
    import pandas as pd

    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = 1_000_000_000_000
    rows = [{"t_ns": t0 + i * 200_000_000, "wall_s": 1.7e9 + i * 0.2, "sampler": "nvml", "gpu": 0, "gpu_name": gpu_name,
             "gpu_uuid": "GPU-00000000-0000-0000-0000-000000000000", "gpu_util_pct": 90, "mem_util_pct": 60,
             "mem_used_bytes": 80 * 2**30, "power_w": 500.0, "energy_j": 1e6 + 100.0 * i, "sm_clock_mhz": 1980,
             "mem_clock_mhz": 2619, "temp_c": 50, "throttle_reasons": 0, "errors": None} for i in range(100)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(run_dir / "telemetry.parquet")
    pts = [{"index": i, "point_id": f"p{i}", "repetition": 0, "load_value": float(u), "load_unit": "users",
            "t0_ns": t0, "t_end_ns": t0 + 10**10, "interrupted": False, "aborted": None,
            "summary": {"requests": {"ok": 100, "total": 100}, "output_tok_per_s": 1000.0 * (i + 1),
                        "energy": {"joules": 5000.0, "method": "counter", "span_s": 10.0, "j_per_output_token": 0.5 / (i + 1)},
                        "gpu": {"power_mean_w": 500.0, "power_peak_w": 600.0, "gpu_util_mean_pct": 90.0}}}
           for i, u in enumerate(load_points)]  # fmt: skip
    run = {"schema_version": 2, "run_id": "synthetic-1", "variant_id": "synthetic", "status": "ok", "config": {},
           "provenance": {"gpu": {"driver_version": "000.00", "cuda_driver_version": "12.0",
                                  "gpus": [{"index": 0, "name": gpu_name, "uuid": rows[0]["gpu_uuid"], "memory_total_gib": 139.8}]}},
           "engine": {"name": "transformers", "version": "5.17.0", "time_to_ready_s": 30.0, "plan": {"argv": ["transformers", "serve"]}},
           "telemetry": {"sampler": "nvml", "samples": 100}, "load_points": pts, "notes": []}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(run, indent=2))
    (run_dir / "report.html").write_text("<html><body>synthetic</body></html>\n")
    (run_dir / "engine.log").write_text("synthetic engine log\n")
