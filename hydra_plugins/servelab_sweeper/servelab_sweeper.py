"""`hydra/sweeper=servelab`: Hydra's BasicSweeper over the overrides experiments.sweeps.plan plans
(loads and repetitions folded into one job per variant, launch-level keys outermost); with a search
(`tune=<space>`, conf/tune/), an Optuna study instead, one job per trial (experiments.sweeps.tune).

Side effects: a ConfigStore entry when Hydra discovers its plugins; those of BasicSweeper when it
sweeps (writes multirun.yaml, launches the jobs).
"""

# No `from __future__ import annotations` here: Hydra executes plugin modules without entering
# them in sys.modules, and dataclasses then cannot resolve string annotations.
import logging
from dataclasses import dataclass
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

log = logging.getLogger("servelab")


@dataclass
class ServelabSweeperConf:
    _target_: str = "hydra_plugins.servelab_sweeper.servelab_sweeper.ServelabSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045 - OmegaConf's dataclass support wants Optional
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(group="hydra/sweeper", name="servelab", node=ServelabSweeperConf, provider="servelab")


class ServelabSweeper(BasicSweeper):
    """BasicSweeper over the overrides of experiments.sweeps.plan.plan_overrides."""

    def sweep(self, arguments: list[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from experiments.secrets import redact_launcher_logs
        from experiments.sweeps.plan import plan_overrides

        redact_launcher_logs()  # the launcher prints each job's overrides: no engine.env value in them

        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        planned, notes = plan_overrides(parser.parse_overrides([*self._parse_config(), *arguments]))
        for n in notes:
            log.info("sweep: %s", n)
        self.params = {}  # already folded into `planned`
        tune = self.config.get("tune") if self.config is not None else None
        if tune is not None and int(tune.get("n_trials") or 0) > 0 and tune.get("params"):
            return self._tune(parser, planned)
        return super().sweep(planned)

    def _tune(self, parser: Any, planned: list[str]) -> Any:
        """The search (experiments.sweeps.tune.run_search): refuse a space preflight refuses, then one
        job per trial through this sweeper's launcher; the sweep's callbacks decide and report at the end."""
        import sys
        from pathlib import Path

        from omegaconf import OmegaConf, open_dict

        from experiments.config import to_run_config
        from experiments.sweeps import tune as tn

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        tc = OmegaConf.to_object(self.config.tune)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        swept = [o.get_key_element() for o in parser.parse_overrides(planned) if o.is_sweep_override()]
        base_args = list(self.config.engine.get("extra_args") or [])

        def compose(overrides: list[str]) -> Any:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]
            return to_run_config(cfg)

        problems = [f"{k} is swept across jobs: a search takes fixed settings; put its values in tune.params"
                    for k in swept] or tn.space_problems(tc, planned, tn.preflight_check(compose), base_args)  # fmt: skip
        if problems:
            for p in problems:
                print(f"servelab tune: refused: {p}", file=sys.stderr)
            print(f"servelab tune: the search space tune={tc.name} was refused before any launch "
                  f"({len(problems)} problem(s)); nothing was measured (exit 2)", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        returns: list[Any] = []

        def launch(overrides: list[str], idx: int) -> tn.JobResult:
            from hydra.core.utils import JobStatus

            r = self.launcher.launch([overrides], initial_job_idx=idx)[0]
            returns.append([r])
            out = Path(str(r.hydra_cfg.hydra.runtime.output_dir))
            code = r._return_value if r.status == JobStatus.COMPLETED else None
            return tn.JobResult(out, code)

        groups = {g: OmegaConf.to_object(self.config[g]) for g in ("slo", "pricing", "quality")
                  if self.config.get(g) is not None}  # fmt: skip
        doc = tn.run_search(tc, planned, sweep_dir, launch=launch, decide=tn.decide_folder(groups),
                            base_extra_args=base_args)  # fmt: skip
        print(f"\nservelab tune: {tc.name}, seed {tc.seed}, {len(doc['trials'])} trial(s) in {sweep_dir}\n"
              + tn.summary_text(doc), file=sys.stderr)  # fmt: skip
        return returns
