"""After a run's artifacts are written: each point's decision at the run's own SLO and pricing
(run.json `load_points[].summary.decision`) and the run report (report.html, summary.csv,
exports/), then the run's work/ folder goes.

The decision fields are computed from the files just written exactly as `python -m
analysis.decide <run folder>` does (analysis.results.build_table); the report is
analysis.report.write_run_report over the frames experiments.artifacts just wrote.

Side effects: rewrites run.json (atomically), writes the report files, removes work/. A failure
of either step is a note in run.json, never an error: the measurement stands without it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from analysis import results
from analysis.points import detail_key
from analysis.records.plain import jsonable, to_plain
from analysis.records.run import RunRecord
from experiments.artifacts import Written

log = logging.getLogger("servelab")


def after_artifacts(record: RunRecord, run_dir: Path, work: Path, cfg: Any, written: Written) -> None:
    """The point decisions (a run that ended ok), then the report (unless report=false), then work/ goes."""
    if record.status == "ok" and record.load_points:
        add_point_decisions(record, run_dir, cfg)
        record.save(run_dir)
    if not getattr(cfg, "report", True):
        log.info("report=false: no report.html (python -m analysis.report %s renders it later)", run_dir)
    else:
        write_report(record, run_dir, written)
    shutil.rmtree(work, ignore_errors=True)  # everything in it is now in the parquet files


def write_report(record: RunRecord, run_dir: Path, written: Written) -> None:
    """The run report and its exports (summary.csv, exports/*.json), from the files just written."""
    try:
        from analysis.report import write_run_report

        record.artifacts.update(report="report.html", summary_csv="summary.csv", exports="exports/")
        record.save(run_dir)  # the report's provenance shows run.json as it will stay
        tel = written.telemetry
        write_run_report(run_dir, summary=record.to_dict(), requests=written.requests,
                         telemetry=tel if not tel.empty else None, engine_metrics=written.engine_metrics)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        log.error("could not render report.html: %s", e)
        for k in ("report", "summary_csv", "exports"):
            record.artifacts.pop(k, None)
        record.note("artifacts", "report_failed", f"report rendering failed: {type(e).__name__}: {e}")
        record.save(run_dir)


# What the single-run report shows of the decision layer for each point (analysis.points columns),
# plus `latency_ci` (the TTFT/TPOT/E2E percentile intervals of analysis.blocks: time-block replicates).
DECISION_FIELDS = (
    "verdict", "verdict_reasons", "feasible", "feasibility_reasons", "attainment", "goodput_rps",
    "goodput_output_tok_per_s", "output_tok_per_s", "tok_per_s_per_gpu", "tok_per_s_per_user",
    "usd_per_1m_output", "usd_per_1m_output_lo", "usd_per_1m_output_hi", "usd_per_1m_goodput",
    "usd_per_1m_goodput_lo", "usd_per_1m_goodput_hi", "j_per_output_token", "mbu", "decode_bound_tok_per_s",
)  # fmt: skip


def add_point_decisions(record: RunRecord, run_dir: Path, cfg: Any) -> None:
    """Each point's verdict, SLO attainment and $/1M at the run's own slo and pricing, computed
    from the files just written exactly as `python -m analysis.decide <run folder>` does
    (analysis.results.build_table), into summary["decision"]. A failure is a note, not an error."""
    try:
        table = results.build_table(run_dir, slo=cfg.slo, pricing=cfg.pricing,
                                    gpu_catalog={cfg.gpu.name: to_plain(cfg.gpu)})  # fmt: skip
        rows = {(r["point_id"], r["repetition"]): r for r in results.table_for_json(table.points)}
        lat = {(pid, rep): jsonable((table.details.get(detail_key(record.run_id, pid, rep)) or {}).get("latency_ci"))
               for pid, rep in rows}  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the measurement stands without its verdicts
        log.warning("per-point decision not computed: %s: %s", type(e).__name__, e)
        record.note("decision", "not_computed", f"per-point verdicts and $/1M not computed: {type(e).__name__}: {e}")
        return
    for p in record.load_points:
        if (row := rows.get((p.point_id, p.repetition))) is not None:
            p.summary["decision"] = {
                "slo": cfg.slo.name, "pricing": cfg.pricing.name, **{k: row.get(k) for k in DECISION_FIELDS},
                "latency_ci": lat.get((p.point_id, p.repetition)),
            }  # fmt: skip
