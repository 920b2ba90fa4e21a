"""Turning Hydra's composed DictConfig into typed, inert config objects, and composing one (compose_run).

Side effects: none, except :func:`compose_run`, which reads conf/ (and initialises Hydra for the
call when no Hydra app runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.schema import GROUP_SCHEMAS, RunConfig

CONF = Path(__file__).resolve().parent.parent / "conf"


def to_run_config(cfg: Any) -> RunConfig:
    """OmegaConf.to_object(cfg) with every group checked to be its schema's dataclass.

    RunConfig types its group fields as Any (see experiments.schema), so this is where a group
    YAML that forgot its `_<group>_schema` default is caught, with the file to fix.
    """
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, RunConfig):
        raise TypeError(f"top-level config is {type(obj).__name__}, expected RunConfig (conf/config.yaml defaults)")
    for group, schema in GROUP_SCHEMAS.items():
        node = getattr(obj, group)
        if not isinstance(node, schema):
            raise TypeError(
                f"config group '{group}' is {type(node).__name__}, expected {schema.__name__}: "
                f"start conf/{group}/<option>.yaml with `defaults: [_{group}_schema, _self_]`"
            )
    return obj


def compose_run(overrides: list[str]) -> RunConfig:
    """conf/config.yaml composed with `overrides`, as a typed RunConfig: through the running Hydra
    app's own config loader when there is one (its search path: presets and plugins' configs are
    found as on its command line), else from conf/ for this call only (the Hydra state is restored)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return to_run_config(compose(config_name="config", overrides=list(overrides)))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_run_config(compose(config_name="config", overrides=list(overrides)))
