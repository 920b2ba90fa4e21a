"""engine.env values (tokens, keys) stay out of everything the lab writes (docs/security.md).

run.json's config, launch fields and plan hold the names only (analysis.records.identity,
engines.base.LaunchPlan); this module covers the rest: the overrides as typed on the command line
(run.json, the sweep's status) and the copies Hydra writes of them (`.hydra/config.yaml`,
`hydra.yaml`, `overrides.yaml`, a sweep's `multirun.yaml`).

A value given as `${oc.env:NAME}` is kept as written: it is the variable's name, not the secret.

Side effects: redact_hydra_files rewrites the files it is given (atomically).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from analysis.records.atomic import write_text_atomic
from analysis.records.identity import REDACTED

# engine.env.NAME=value, +engine.env.NAME=value, ++engine.env.NAME=value, engine.env={A:x,B:y}
_ENV_OVERRIDE = re.compile(r"^(?P<key>[+~]{0,2}engine\.env)(?P<name>\.[^=]+)?=(?P<value>.*)$", re.S)
_DICT_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:")
# A value shorter than this is not searched for as plain text in Hydra's files (it would match
# unrelated text); the structured redaction above covers it.
_MIN_SUBSTITUTED = 6


# engine.env.NAME=value inside a log line (a launcher's "#0 : a=b c=d" list of a job's overrides)
_ENV_IN_TEXT = re.compile(r"((?:^|(?<=[\s,'\"\[]))[+~]{0,2}engine\.env\.[A-Za-z_][A-Za-z0-9_]*=)(?!\$\{oc\.env:)[^\s,'\"\]]+")
# Loggers that print each job's overrides: Hydra's basic launcher and the submitit launchers.
LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher",
                    "hydra_plugins.hydra_submitit_launcher.submitit_launcher")  # fmt: skip


def redact_text(text: str) -> str:
    """`text` with every engine.env.NAME=value in it shown as engine.env.NAME=<redacted>."""
    return _ENV_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message so that no engine.env value reaches a log or the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact_text(msg)
        if red != msg:
            record.msg, record.args = red, None
        return True


def redact_launcher_logs() -> None:
    """Install RedactingFilter on the loggers that print job overrides (idempotent)."""
    for name in LAUNCHER_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in lg.filters):
            lg.addFilter(RedactingFilter())


def _inherited(value: str) -> bool:
    return value.strip().startswith("${oc.env:") and value.strip().endswith("}")


def redact_override(override: str) -> str:
    """One command-line override with an engine.env value replaced by REDACTED."""
    m = _ENV_OVERRIDE.match(override)
    if m is None or _inherited(m["value"]):
        return override
    if m["name"]:
        return f"{m['key']}{m['name']}={REDACTED}"
    names = _DICT_KEY.findall(m["value"])
    return f"{m['key']}={{{','.join(f'{n}:{REDACTED}' for n in names)}}}"


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    return [redact_override(str(o)) for o in overrides]


def _redact_env(env: dict[str, Any]) -> dict[str, Any]:
    return {n: (x if isinstance(x, str) and _inherited(x) else REDACTED) for n, x in env.items()}


def _redact_tree(node: Any, values: set[str]) -> Any:
    """A plain YAML tree with engine.env values, overrides setting them and `values` redacted."""
    if isinstance(node, dict):
        for k, v in list(node.items()):
            node[k] = _redact_tree(v, values)
        if isinstance(node.get("engine"), dict) and isinstance(node["engine"].get("env"), dict):
            node["engine"]["env"] = _redact_env(node["engine"]["env"])
        return node
    if isinstance(node, list):
        return [_redact_tree(x, values) for x in node]
    if isinstance(node, str):
        if _ENV_OVERRIDE.match(node):
            return redact_override(node)
        for val in values:
            node = node.replace(val, REDACTED)
    return node


def redact_hydra_files(paths: Iterable[Path], env: Mapping[str, Any] | None) -> list[Path]:
    """Rewrite Hydra's YAML copies of the config with engine.env values (and overrides setting
    them) redacted; a value of `env` at least _MIN_SUBSTITUTED long is also replaced wherever else
    it appears as text (e.g. hydra.job.override_dirname). Returns the files changed."""
    import yaml

    values = {str(v) for v in (env or {}).values() if len(str(v)) >= _MIN_SUBSTITUTED and not _inherited(str(v))}
    changed = []
    for p in paths:
        p = Path(p)
        if not p.is_file() or p.is_symlink():
            continue
        text = p.read_text()
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError:
            tree = None
        new = text if tree is None else yaml.safe_dump(_redact_tree(tree, values), sort_keys=False)
        for val in values:  # whatever the structured pass did not reach
            new = new.replace(val, REDACTED)
        if new != text:
            write_text_atomic(p, new)
            changed.append(p)
    return changed


def redact_hydra_dir(hydra_dir: Path, env: Mapping[str, Any] | None) -> list[Path]:
    """The files of one `.hydra/` folder (config.yaml, hydra.yaml, overrides.yaml)."""
    d = Path(hydra_dir)
    return redact_hydra_files([d / "config.yaml", d / "hydra.yaml", d / "overrides.yaml"], env) if d.is_dir() else []
