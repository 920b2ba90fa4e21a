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
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from analysis.schema import composition_error_line
from experiments.schema import register_configs

register_configs()
_started: list[bool] = []  # set when main() runs: Hydra composed the config and made the run's folder


def _settings_hydra_cannot_compose_in_one_line() -> None:
    """A setting Hydra cannot compose (a value of the wrong type, an unknown option or key, bad
    override syntax), or a results_dir it cannot create, ends like preflight's refusals: one line
    that names it, exit 2, nothing started, instead of Hydra's several lines (or a traceback) and
    exit 1. HYDRA_FULL_ERROR=1 keeps Hydra's report. Wraps hydra._internal.utils.run_and_report,
    which runs the app; left alone where it is missing."""
    import os

    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf.errors import InterpolationResolutionError

    from experiments.schema import FolderNameError

    report = getattr(hydra_utils, "run_and_report", None)
    if report is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return

    def run_and_report(func: Any) -> Any:
        def refuse_in_one_line() -> Any:
            try:
                return func()
            except (ConfigCompositionException, OverrideParseException) as e:
                print(f"servelab: invalid setting: {composition_error_line(e)}", file=sys.stderr)
                sys.exit(2)
            except InterpolationResolutionError as e:
                cause: BaseException | None = e
                while cause is not None and not isinstance(cause, FolderNameError):
                    cause = cause.__cause__ or cause.__context__
                if _started or cause is None:
                    raise
                print(f"servelab: invalid setting: {cause}", file=sys.stderr)  # before any folder is made
                sys.exit(2)
            except OSError as e:
                if _started:  # the run's own failure: Hydra reports it as before
                    raise
                print(f"servelab: invalid setting: cannot create the results folder {e.filename} ({e.strerror}); "
                      "set results_dir to a folder you can write, e.g. results_dir=results", file=sys.stderr)  # fmt: skip
                sys.exit(2)

        return report(refuse_in_one_line)

    hydra_utils.run_and_report = run_and_report


_settings_hydra_cannot_compose_in_one_line()


def _sigterm(*_: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _late_signal(signum: int, _frame: object) -> None:
    """A signal after the run ended (the run record is final): stop here, quietly, with 130."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(130)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from experiments.config import to_run_config
    from experiments.runner import run_variant

    _started.append(True)
    signal.signal(signal.SIGTERM, _sigterm)
    hc = HydraConfig.get()
    try:
        run_cfg = to_run_config(cfg)
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"servelab: invalid configuration: {e}", file=sys.stderr)
        return 2
    from experiments.sweeps.tune import enabled as tune_enabled

    if tune_enabled(run_cfg.tune) and (hc.mode is None or hc.mode.name != "MULTIRUN"):
        print(f"servelab: tune={run_cfg.tune.name} is a search of several launches: run it as a sweep, "
              "`python run.py -m ...` (or tune=none for this one launch)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    from experiments.progress import hydra_sweep_position, make_progress

    progress = make_progress()  # rich on a terminal, plain lines otherwise (SERVELAB_PROGRESS)
    code = 130
    try:
        if (pos := hydra_sweep_position()) is not None:
            progress.sweep(pos.job_index, pos.job_count, sequential=pos.sequential)
        code = run_variant(run_cfg, Path(hc.runtime.output_dir), list(hc.overrides.task), progress=progress)
    except KeyboardInterrupt:  # before or after the run itself (its own handlers cover the run)
        print("servelab: interrupted", file=sys.stderr)
        code = 130
    finally:
        # From here on the run's record is final: a signal (e.g. the 3rd Ctrl-C of an impatient user)
        # must not end the lab with a traceback or a signal status. After a cancelled run it is
        # ignored; otherwise it stops the lab (and a sweep) with exit 130.
        late = signal.SIG_IGN if code == 130 else _late_signal
        signal.signal(signal.SIGINT, late)
        signal.signal(signal.SIGTERM, late)
        progress.close()
    print(f"servelab: run {'finished' if code == 0 else 'ended'} (exit {code}); results in {hc.runtime.output_dir}",
          file=sys.stderr)  # fmt: skip
    if hc.mode is not None and hc.mode.name == "MULTIRUN" and code != 130:
        return code  # a failed variant must not stop the rest of a sweep; Ctrl-C / SIGTERM stops all of it
    sys.exit(code)


if __name__ == "__main__":
    main()
