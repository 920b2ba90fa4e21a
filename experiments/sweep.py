"""The end of a sweep (`python run.py -m ...` or a preset that sets hydra.mode=MULTIRUN): a status
table of every variant and the decision over the whole results folder.

:class:`SweepReport` is a Hydra callback (conf/config.yaml `hydra.callbacks`): after each job it
reads the job's ``variant.json`` (written by experiments.runner.run_variant: ok, failed,
refused, cancelled, and why); at the end of the sweep it prints one row per variant, writes
``sweep.json`` into the sweep folder, and runs the decision layer (analysis.decide, at the
sweep's slo and pricing) so the sweep ends with a chosen variant and ``decision.json``, then the
experiment report (analysis.report: ``report.html``, ``summary.csv``, ``exports/``). A failed
variant never stops the sweep (run.py returns its code to Hydra instead of raising); only
Ctrl-C / SIGTERM does.

Side effects: reads variant.json files; writes sweep.json, decision.json and the report in the
sweep folder; prints to stderr.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from analysis.records.atomic import write_json_atomic
from analysis.records.run import now_utc

log = logging.getLogger("servelab")
ROOT = Path(__file__).resolve().parent.parent


def read_variant(variant_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(variant_dir) / "variant.json").read_text())
    except (OSError, ValueError):
        return {"status": "failed", "reason": "no variant.json: the job ended before it could record its status"}


def status_table(rows: list[dict[str, Any]]) -> str:
    """One line per variant: folder, status, launches, points done, and why."""
    head = f"{'variant':<44} {'status':<9} {'launches':>8} {'points':>6}  reason"
    lines = [head, "-" * len(head)]
    for r in rows:
        reason = r.get("reason") or ""
        lines.append(f"{r.get('folder', '?')[:44]:<44} {r.get('status', '?'):<9} {r.get('launches', 0):>8} "
                     f"{r.get('points_done', 0):>6}  {reason[:160]}")  # fmt: skip
    return "\n".join(lines)


class SweepReport(Callback):
    """Collects each job's variant status; prints the table and decides at the end of the sweep."""

    def __init__(self, decide: bool = True) -> None:
        self.decide = decide
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.monotonic()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.rows, self.t0 = [], time.monotonic()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        hc = getattr(job_return, "hydra_cfg", None)
        if hc is None or str(hc.hydra.mode) != "RunMode.MULTIRUN":
            return
        out = Path(hc.hydra.runtime.output_dir)
        row = {"folder": out.name, "job": hc.hydra.job.num, "overrides": list(job_return.overrides or []),
               **read_variant(out)}  # fmt: skip
        self.rows.append(row)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        text = status_table(self.rows)
        print(f"\nservelab sweep: {len(self.rows)} variant job(s) in {sweep_dir}\n{text}", file=sys.stderr)
        summary: dict[str, Any] = {"finished_at_utc": now_utc(), "elapsed_s": round(time.monotonic() - self.t0, 1),
                                   "jobs": self.rows}  # fmt: skip
        if self.decide and any(r.get("status") == "ok" for r in self.rows):
            summary["decision"] = self._decide(sweep_dir, config)
            if summary["decision"]["exit_code"] == 0 and bool(config.get("report", True)):
                summary["report"] = self._report(sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(sweep_dir / "sweep.json", summary)

    @staticmethod
    def _decide(sweep_dir: Path, config: Any) -> dict[str, Any]:
        """`python -m analysis.decide <sweep folder> slo=... pricing=...` in a child process: the
        decision composes its own Hydra config, which must not disturb the running sweep's."""
        # the SLO exactly as the runs checked it (a preset or the command line may have changed its fields)
        slo = [f"slo.{k}={'null' if v is None else v}" for k, v in config.slo.items() if k != "name"]
        overrides = [f"slo={config.slo.name}", *slo, f"pricing={config.pricing.name}"]
        q = config.get("quality")
        if q is not None and q.get("enabled"):  # the gate's thresholds exactly as the runs were given them
            overrides += ["quality=gate"] + [f"quality.{k}={'null' if q.get(k) is None else q.get(k)}" for k in
                                             ("min_top1_agreement", "max_ppl_ratio", "max_task_accuracy_drop_points",
                                              "min_exact_match_rate", "baseline_quant")]  # fmt: skip
        argv = [sys.executable, "-m", "analysis.decide", str(sweep_dir.resolve()), *overrides]
        print(f"servelab sweep: deciding: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        code = subprocess.call(argv, cwd=ROOT, stdout=sys.stderr)
        if code != 0:
            print(f"servelab sweep: no decision (analysis.decide exit {code})", file=sys.stderr)
        return {"exit_code": code, "argv": argv[1:], "path": str(sweep_dir / "decision.json") if code == 0 else None}

    @staticmethod
    def _report(sweep_dir: Path) -> dict[str, Any]:
        """`python -m analysis.report <sweep folder>` in a child process: the experiment report and its
        exports. A report that fails (or cannot even start) is printed and recorded, never raised:
        the sweep's measurements and decision stand without it."""
        argv = [sys.executable, "-m", "analysis.report", str(sweep_dir.resolve())]
        print(f"servelab sweep: report: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        try:
            code = subprocess.call(argv, cwd=ROOT, stdout=sys.stderr, timeout=1800)
        except (OSError, subprocess.SubprocessError) as e:
            code = -1
            print(f"servelab sweep: no report ({type(e).__name__}: {e})", file=sys.stderr)
        if code != 0:
            print(f"servelab sweep: no report (analysis.report exit {code})", file=sys.stderr)
        return {"exit_code": code, "path": str(sweep_dir / "report.html") if code == 0 else None}
