"""Turning Hydra's composed DictConfig into typed, inert config objects. Pure.

Side effects: none.
"""

from __future__ import annotations

from typing import Any

from experiments.schema import GROUP_SCHEMAS, RunConfig


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
