"""Hand-built per-point tables (analysis.points.REQUIRED columns) for the decision-layer tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def point(variant="A", load=1.0, attainment=1.0, feasible=None, usd=1.0, lo=None, hi=None, boot=None,
          verdict="valid", reasons=None, rep=0, run=None, gpu="h100_sxm_80g", gpus=1, unit="req/s",
          label=None, **extra):
    """One row; feasible defaults to attainment >= 0.9; lo/hi default to usd -/+ 10 %."""
    row = {
        "variant_id": variant, "variant_label": label or f"vllm/{variant.lower()}", "run_id": run or f"run-{variant}-{rep}",
        "point_id": f"{variant}@{load:g}", "repetition": rep, "load_value": float(load), "load_unit": unit,
        "offered_rate_rps": float(load), "gpu_name": gpu, "gpu_count": gpus, "verdict": verdict,
        "verdict_reasons": list(reasons or []), "feasible": attainment >= 0.9 if feasible is None else feasible,
        "attainment": attainment, "goodput_rps": load * attainment, "output_tok_per_s": 100.0 * load,
        "goodput_output_tok_per_s": 100.0 * load * attainment, "tok_per_s_per_gpu": 100.0 * load / max(gpus, 1),
        "tok_per_s_per_user": 50.0 / load, "usd_per_1m_output": usd, "usd_per_1m_output_lo": usd * 0.9 if lo is None else lo,
        "usd_per_1m_output_hi": usd * 1.1 if hi is None else hi, "usd_per_1m_goodput": usd,
        "usd_per_1m_goodput_lo": usd * 0.9 if lo is None else lo, "usd_per_1m_goodput_hi": usd * 1.1 if hi is None else hi,
        "usd_per_1m_goodput_boot": None if boot is None else np.asarray(boot, dtype=float),
        "ttft_ms_p99": 100.0, "tpot_ms_p99": 20.0, "e2e_ms_p99": 1000.0, "time_to_ready_s": 60.0,
    }  # fmt: skip
    row.update(extra)
    return row


def table(rows):
    return pd.DataFrame(rows)
