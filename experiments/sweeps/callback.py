"""The end of a sweep (`python run.py -m ...` or a preset that sets hydra.mode=MULTIRUN): a status
table of every variant and the decision over the whole results folder.

:class:`SweepReport` is a Hydra callback (conf/config.yaml `hydra.callbacks`): after each job it
reads the job's ``variant.json`` (written by experiments.runner.run_variant: ok, failed,
refused, cancelled, and why); at the end of the sweep it prints one row per variant, writes
``sweep.json`` into the sweep folder, and decides in this process (analysis.decision, at the
runs' own slo, pricing and quality, every override included) so the sweep ends with a chosen
variant and ``decision.json``, then the experiment report, also in this process (analysis.report:
``report.html``, ``summary.csv``, ``exports/``). A failed
variant never stops the sweep (run.py returns its code to Hydra instead of raising); only
Ctrl-C / SIGTERM does.

Side effects: reads (and, for experiments.runner, writes) variant.json files; writes sweep.json, decision.json and the report in the
sweep folder; prints to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from analysis.records.atomic import write_json_atomic
from analysis.records.run import now_utc
from experiments.secrets import redact_hydra_files, redact_overrides

log = logging.getLogger("servelab")


def read_variant(variant_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(variant_dir) / "variant.json").read_text())
    except (OSError, ValueError):
        return {"status": "failed", "reason": "no variant.json: the job ended before it could record its status"}


def write_variant(variant_dir: Path, base: dict[str, Any], status: str, reason: str | None, history: Any,
                  schedule: Any) -> None:  # fmt: skip
    """variant.json: the variant's status for the sweep's table (read_variant), written by
    experiments.runner.run_variant: `base` fields, status, why, points done (resume.History) and
    the schedule's state (experiments.sweeps.schedule.Schedule, None when nothing was planned)."""
    d = {**base, "status": status, "reason": reason, "points_done": len(history.done),
         "schedule": schedule.state() if schedule is not None else None,
         "launch_dirs": [la.path.name for la in history.launches]}  # fmt: skip
    write_json_atomic(variant_dir / "variant.json", d)


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
        row = {"folder": out.name, "job": hc.hydra.job.num, "overrides": redact_overrides(job_return.overrides or []),
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
        env = OmegaConf.to_container(config.engine.env, resolve=False) if "engine" in config else {}
        redact_hydra_files([sweep_dir / "multirun.yaml"], env)  # Hydra's copy of the sweep's config
        write_json_atomic(sweep_dir / "sweep.json", summary)
        if self.rows and all(r.get("status") == "refused" for r in self.rows):
            # e.g. repetitions=0 for every variant: nothing was launched or measured, as a refused run
            print("servelab sweep: every variant was refused by preflight (reasons above); nothing was measured "
                  "(exit 2)", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)

    @staticmethod
    def _decide(sweep_dir: Path, config: Any) -> dict[str, Any]:
        """The decision over the sweep folder, in this process (analysis.decision.run_decision), at the
        runs' own slo, pricing and quality groups exactly as the runs were given them (every field, the
        command line's overrides included) and conf/decide.yaml's capacity and settings. A bad input
        or a failure is printed and recorded (exit_code 2 or 1), never raised: the sweep's measurements
        stand without a decision."""
        from omegaconf import OmegaConf

        from analysis.cost import PriceMissing
        from analysis.decide import EXIT_BAD_INPUT, summary_text
        from analysis.decision import BadInput, default_config, run_decision
        from analysis.results import ResultsError

        groups = {g: OmegaConf.to_object(config[g]) for g in ("slo", "pricing", "quality") if config.get(g) is not None}
        task = OmegaConf.select(config, "hydra.overrides.task", default=None)
        overrides = redact_overrides(str(o) for o in task) if task is not None else []
        print(f"servelab sweep: deciding {sweep_dir} at the runs' " + ", ".join(
            f"{g}={getattr(v, 'name', '?')}" for g, v in groups.items()), file=sys.stderr, flush=True)  # fmt: skip
        try:
            d, path = run_decision(sweep_dir.resolve(), default_config(**groups), overrides)
        except (BadInput, ResultsError, PriceMissing) as e:
            for line in str(e).splitlines():
                print(f"decide: {line}", file=sys.stderr)
            print(f"servelab sweep: no decision (exit {EXIT_BAD_INPUT})", file=sys.stderr)
            return {"exit_code": EXIT_BAD_INPUT, "overrides": overrides, "path": None}
        except Exception as e:  # noqa: BLE001 - the sweep's records stand without a decision; say why
            log.exception("the sweep's decision failed")
            print(f"servelab sweep: no decision ({type(e).__name__}: {e})", file=sys.stderr)
            return {"exit_code": 1, "overrides": overrides, "path": None}
        print(summary_text(d, path), file=sys.stderr)
        return {"exit_code": 0, "overrides": overrides, "path": str(path)}

    @staticmethod
    def _report(sweep_dir: Path) -> dict[str, Any]:
        """The experiment report and its exports (analysis.report.write_experiment_report: report.html,
        summary.csv, exports/), in this process, from the decision just written. A report that fails
        is printed and recorded (exit_code 2: bad input, 1: failed), never raised: the sweep's
        measurements and decision stand without it."""
        from analysis.report import ReportError, write_experiment_report

        print(f"servelab sweep: report: {sweep_dir}", file=sys.stderr, flush=True)
        try:
            out = write_experiment_report(sweep_dir.resolve())
        except ReportError as e:
            code, why = 2, str(e)
        except Exception as e:  # noqa: BLE001 - the sweep's records stand without a report; say why
            log.debug("the sweep's report failed", exc_info=True)
            code, why = 1, f"{type(e).__name__}: {e}"
        else:
            print(f"servelab sweep: wrote {out}", file=sys.stderr)
            return {"exit_code": 0, "path": str(sweep_dir / "report.html")}
        print(f"servelab sweep: no report ({why})", file=sys.stderr)
        return {"exit_code": code, "path": None}
