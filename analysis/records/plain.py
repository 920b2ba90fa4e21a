"""Values as plain JSON: dataclass trees as dicts (run.json, decision.json, identity hashes) and
numpy / pandas / Arrow scalars as Python numbers (JSON has no NaN or infinity: they become null).

Side effects: none.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists (for run.json)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def jsonable(v: Any) -> Any:
    """`v` with numpy, pandas and Arrow values turned into JSON-ready Python values (NaN/inf: None)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None  # JSON has no NaN or infinity
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, pa.Scalar):
        return v.as_py()
    return v
