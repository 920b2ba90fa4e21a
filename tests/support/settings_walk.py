"""Walking a config schema's fields, and setting dotted fields on a typed config: the tests that
every setting is checked (tests/experiments/test_preflight.py, tests/analysis/test_decide_settings.py).

A field's walk name is its dotted path; a nested dataclass is walked into (``traffic.shape.kind``),
a dict of dataclasses with ``*`` for the key (``pricing.gpus.*.on_demand``), and a list gives two
names: the list itself (``traffic.points``: e.g. empty) and its elements (``traffic.points[]``).
Booleans (and optional booleans) are left out: every value of theirs is valid.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any


def _types(hint: Any) -> set[Any]:
    """The types a hint allows: `float | None` -> {float, NoneType}; `list[float]` -> {list[float]}."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set(typing.get_args(hint))
    return {hint}


def walk(schema: type, prefix: str = "", groups: dict[str, type] | None = None) -> list[str]:
    """Every settable field of `schema` (module doc), nested ones included. `groups` gives the schema
    of fields typed Any (RunConfig's and DecideConfig's groups), keyed by field name."""
    out: list[str] = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        name = prefix + f.name
        if groups and f.name in groups:
            out += walk(groups[f.name], name + ".")
            continue
        allowed = _types(hints[f.name]) - {type(None)}
        if allowed <= {bool}:
            continue
        (t,) = allowed
        origin, args = typing.get_origin(t), typing.get_args(t)
        if dataclasses.is_dataclass(t):
            out += walk(t, name + ".")  # type: ignore[arg-type]
        elif origin is dict and dataclasses.is_dataclass(args[1]):
            out += walk(args[1], name + ".*.")
        elif origin is list:
            out += [name, name + "[]"]
        else:
            out.append(name)
    return out


def with_(cfg: Any, settings: dict[str, Any]) -> Any:
    """A copy of `cfg` with dotted fields set (no Hydra: the checks must catch what the CLI lets
    through); a dict level is indexed by its key (``pricing.gpus.cpu.on_demand``)."""
    out = copy.deepcopy(cfg)
    for dotted, value in settings.items():
        *path, name = dotted.split(".")
        node = out
        for p in path:
            node = node[p] if isinstance(node, dict) else getattr(node, p)
        assert hasattr(node, name), dotted
        setattr(node, name, value)
    return out


def names_the_field(field: str, line: str) -> bool:
    """Whether a problem line names the walked field (``*`` and ``[]`` stand for any key or element)."""
    return all(part in line for part in field.replace("[]", "").split("*"))


def float_cases(bad: dict[str, tuple[dict[str, Any], str]]) -> dict[str, str]:
    """field -> the setting that carries its bad value, for every BAD case whose value is a float
    (or, for a list's elements, a list of floats): the fields where NaN and infinity must be refused
    too (a `v < 0` check lets NaN through)."""
    def floats(v: Any) -> bool:
        return isinstance(v, float) or (isinstance(v, list) and bool(v) and all(isinstance(x, float) for x in v))

    return {field: key for field, (settings, _) in bad.items() for key, v in settings.items()
            if floats(v) and names_the_field(field, key)}  # fmt: skip


def with_float(settings: dict[str, Any], key: str, value: float) -> dict[str, Any]:
    """`settings` with `value` in place of the float at `key` (of a list: its last element)."""
    old = settings[key]
    return {**settings, key: [*old[:-1], value] if isinstance(old, list) else value}


def uncovered(fields: list[str], bad: dict[str, Any], unchecked: dict[str, str]) -> dict[str, list[str]]:
    """What a walk's BAD / UNCHECKED tables fail to cover: fields with neither (`missing`), table
    entries naming no field (`stale`), fields in both (`both`). Empty lists everywhere = covered."""
    return {"missing": [f for f in fields if f not in bad and f not in unchecked],
            "stale": sorted((set(bad) | set(unchecked)) - set(fields)),
            "both": sorted(set(bad) & set(unchecked))}  # fmt: skip


def one_line(problems: list[str], field: str, fix: str | None = None) -> str:
    """The single problem line `problems` must be: it names `field` (and `fix`, when given)."""
    assert len(problems) == 1, problems
    (p,) = problems
    assert names_the_field(field, p) and (fix is None or fix in p) and "\n" not in p, p
    return p
