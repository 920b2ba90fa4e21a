"""servelab entry point: `python run.py [group=option ...] [key=value ...]` (Hydra).

Composes the config (conf/), converts it to typed dataclasses, and hands it to
experiments.runner, which preflights, launches the engine, drives the load points and
writes the artifacts into Hydra's output folder. `python run.py --help` lists the groups.

Side effects: only through experiments.runner; SIGTERM is turned into KeyboardInterrupt so
that a `kill` gets the same clean teardown as Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.schema import register_configs

register_configs()


def _sigterm(*_: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from experiments.config import to_run_config
    from experiments.runner import run_variant

    signal.signal(signal.SIGTERM, _sigterm)
    hc = HydraConfig.get()
    try:
        run_cfg = to_run_config(cfg)
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"servelab: invalid configuration: {e}", file=sys.stderr)
        return 2
    from experiments.progress import hydra_sweep_position, make_progress

    with make_progress() as progress:  # rich on a terminal, plain lines otherwise (SERVELAB_PROGRESS)
        if (pos := hydra_sweep_position()) is not None:
            progress.sweep(pos.job_index, pos.job_count, sequential=pos.sequential)
        code = run_variant(run_cfg, Path(hc.runtime.output_dir), list(hc.overrides.task), progress=progress)
    print(f"servelab: run {'finished' if code == 0 else 'ended'} (exit {code}); results in {hc.runtime.output_dir}",
          file=sys.stderr)  # fmt: skip
    if hc.mode is not None and hc.mode.name == "MULTIRUN" and code != 130:
        return code  # a failed variant must not stop the rest of a sweep; Ctrl-C / SIGTERM stops all of it
    sys.exit(code)


if __name__ == "__main__":
    main()
