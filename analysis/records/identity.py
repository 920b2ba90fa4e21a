"""Run identity: the join keys every artifact carries (docs/identity.md). Pure.

- ``run_id``      the run folder's name (unique per `python run.py` invocation).
- ``variant_id``  the *launch key*: a stable hash of everything that changes the launched server
                  (engine options, model, quant, gpu, placement). Two runs with the same
                  variant_id measured the same server configuration, so a sweep may reuse one
                  launch for them and the decision layer may pool them.
- ``point_id``    a stable hash of what one load point sends and when (traffic settings with the
                  point's load value, and the workload): the same point_id under the same
                  variant_id is a repetition of the same measurement.
- ``repetition``  0-based count of repeated measurements of one (variant_id, point_id).

Hashes are the first 12 hex digits of SHA-256 over canonical JSON (sorted keys, no spaces),
so they do not depend on dict order, Python version or the machine.

Side effects: none.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from analysis.records.plain import to_plain

ID_LEN = 12

# Settings that do not change the launched server: where it listens, how long the lab waits
# for it, which interpreter is found on this machine. Excluded so the launch key is portable.
_ENGINE_NOT_IN_KEY = frozenset({"port", "host", "ready_timeout_s", "stop_timeout_s", "python", "health_path", "metrics_path",
                                "allow_insecure"})  # fmt: skip
# Model fields that only help the lab (setup hint, capacity math), not the server.
_MODEL_NOT_IN_KEY = frozenset({"built_by", "params_b", "random_weights"})
# GPU catalog figures (bandwidth, prices, sources) describe the hardware; name + count identify it.
_GPU_IN_KEY = ("name", "count")
# Traffic fields that are labels, the other points of the run, or *how* the load generator is
# run (process layout, priority) rather than what it sends when.
_TRAFFIC_NOT_IN_KEY = frozenset(
    {"name", "points", "workers", "remote_workers", "master_bind", "master_port", "loadgen_nice", "worker_token_env",
     "max_sse_line_bytes", "max_error_body_bytes", "max_output_text_chars"}
)
_WORKLOAD_NOT_IN_KEY = frozenset({"name"})
# Traffic fields that joined the schema later: left out at their default, so the point ids of runs
# recorded before them still hold (a trace's format, Mooncake block size, BurstGPT filters).
_TRAFFIC_LATER = {"trace_format": "auto", "trace_block_tokens": 512, "trace_model": None, "trace_log_type": None}


# engine.env values may be secrets (tokens, keys): records show this text instead, and the launch
# key holds only the names, so rotating a token keeps variant_id (engines.base.REDACTED is the same).
REDACTED = "<redacted>"


def redact_env(env: Any) -> dict[str, str]:
    """engine.env with every value replaced by REDACTED (the names are kept)."""
    return {str(k): REDACTED for k in (env or {})}


def redacted_config(cfg: Any) -> dict[str, Any]:
    """The run config as plain JSON for run.json, engine.env values redacted."""
    plain = to_plain(cfg)
    engine = plain.get("engine") if isinstance(plain, dict) else None
    if isinstance(engine, dict) and "env" in engine:
        engine["env"] = redact_env(engine["env"])
    return plain


def stable_hash(obj: Any) -> str:
    """First ID_LEN hex digits of SHA-256 over `obj` as canonical JSON."""
    blob = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:ID_LEN]


def launch_fields(cfg: Any) -> dict[str, Any]:
    """What the launch key is computed over (recorded in run.json, so a key can be re-derived)."""
    engine = {k: v for k, v in to_plain(cfg.engine).items() if k not in _ENGINE_NOT_IN_KEY}
    if "env" in engine:  # names only: a value may be a secret, and a rotated token is the same server
        engine["env"] = redact_env(engine["env"])
    model = {k: v for k, v in to_plain(cfg.model).items() if k not in _MODEL_NOT_IN_KEY}
    gpu = {k: getattr(cfg.gpu, k) for k in _GPU_IN_KEY}
    placement = getattr(cfg, "placement", None)
    return {
        "engine": engine,
        "model": model,
        # weight_dtype joined the quant schema later; unset it is left out so earlier keys still hold
        "quant": {k: v for k, v in to_plain(cfg.quant).items() if not (k == "weight_dtype" and v is None)},
        "gpu": gpu,
        "placement": to_plain(placement) if placement is not None else None,
    }


def launch_key(cfg: Any) -> str:
    """variant_id of a run config: hash of :func:`launch_fields`."""
    return stable_hash(launch_fields(cfg))


def point_fields(traffic: Any, workload: Any, load_value: float) -> dict[str, Any]:
    """What a point id is computed over: the traffic settings with this point's value, and the workload."""
    t = {k: v for k, v in to_plain(traffic).items()
         if k not in _TRAFFIC_NOT_IN_KEY and not (k in _TRAFFIC_LATER and v == _TRAFFIC_LATER[k])}  # fmt: skip
    w = {k: v for k, v in to_plain(workload).items() if k not in _WORKLOAD_NOT_IN_KEY}
    return {"traffic": t, "load_value": float(load_value), "workload": w}


def point_id(traffic: Any, workload: Any, load_value: float) -> str:
    """point_id of one load point: hash of :func:`point_fields`."""
    return stable_hash(point_fields(traffic, workload, load_value))


IDENTITY_FIELDS = ("run_id", "variant_id", "point_id", "repetition")
