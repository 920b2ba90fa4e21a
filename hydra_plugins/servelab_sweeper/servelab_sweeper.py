"""`hydra/sweeper=servelab`: Hydra's BasicSweeper over the overrides experiments.sweeps.plan plans
(loads and repetitions folded into one job per variant, launch-level keys outermost).

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
        return super().sweep(planned)
