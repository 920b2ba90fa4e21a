"""Dollars and energy per million tokens for one load point. Pure: no I/O.

Notation: P = $/GPU-hour from the price book (per instance-hour for gpu=cpu), G = billed units
(gpu.count, or 1 host for cpu), W = the point's throughput window (s).
  usd_per_hour            = G · P
  usd_per_1m_output       = G · P / (output_tok_per_s · 3600) · 1e6      (the whole cost on output tokens)
  usd_per_1m_total        = G · P / (total_tok_per_s · 3600) · 1e6       (prompt + output tokens)
  usd_per_1m_goodput      = G · P / (goodput_output_tok_per_s · 3600) · 1e6  (output tokens of SLO-meeting requests)
Input vs output split (never the full cost on both): the GPU time of the window, G · W, is split by
phase with the prefill share s, then each part is divided by its own tokens:
  usd_per_1m_input_split  = s · G · P · W / 3600 / prompt_tokens · 1e6
  usd_per_1m_output_split = (1 − s) · G · P · W / 3600 / output_tokens · 1e6
  s from the engine's own phase timers where it exposes them (method "engine_phase_time": vLLM's
  histograms vllm:request_prefill_time_seconds / vllm:request_decode_time_seconds, increase of
  their _sum over the window), else from the records (method "ttft_tpot": Σ TTFT / Σ (TTFT +
  TPOT · (N − 1)) over ok requests; TTFT includes queueing, so under load this overstates s).
Energy (E joules over the window; "measured" from telemetry energy, else "estimated from TDP" =
tdp_w · G · W, an upper bound since boards rarely sit at TDP):
  j_per_output_token      = E / output_tokens
  kwh_per_1m_output       = j_per_output_token · 1e6 / 3.6e6                 (device energy)
  usd_energy_per_1m_output = kwh_per_1m_output · PUE · usd_per_kwh
  Energy $ is added to the usd_per_1m_* figures only when the book says its price excludes
  energy (energy_included: false, owned/colocated hardware); a cloud price already pays for it,
  so there it is reported beside the cost, never added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.schema import PRICE_TIERS
from analysis.telemetry import counter_increase
from engines import ADAPTERS
from loadgen.records import MEASURE, OK

# (prefill, decode) phase-timer _sum samples per engine, as each adapter declares them (EngineAdapter.phase_timers)
PHASE_TIMERS: dict[str, tuple[str, str]] = {n: a.phase_timers for n, a in ADAPTERS.items() if a.phase_timers}

ENERGY_MEASURED = "measured"
ENERGY_FROM_TDP = "estimated from TDP"


class PriceMissing(LookupError):
    """The chosen price book has no price for the planned GPU in the chosen tier."""


@dataclass(frozen=True)
class Price:
    usd_per_unit_hour: float  # P
    units: int  # G
    tier: str
    book: str
    gpu: str
    source: str
    as_of: str
    energy_included: bool
    usd_per_kwh: float
    pue: float

    @property
    def usd_per_hour(self) -> float:
        return self.usd_per_unit_hour * self.units

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usd_per_hour": self.usd_per_hour}


def billed_units(gpu: Any) -> int:
    """GPUs billed per replica; a CPU-only plan (count 0) bills one host."""
    return int(gpu.count) if gpu.count > 0 else 1


def price_for(pricing: Any, gpu: Any, tier: str | None = None) -> Price:
    """The $/unit-hour of `gpu` in the book `pricing` at `tier` (default: the book's tier).

    `pricing.usd_per_hour`, when set, overrides the book for any GPU. Raises PriceMissing.
    """
    tier = tier or pricing.tier
    if tier not in PRICE_TIERS:
        raise PriceMissing(f"pricing.tier={tier!r}: use one of {', '.join(PRICE_TIERS)}")
    common = {"units": billed_units(gpu), "tier": tier, "book": pricing.name, "gpu": gpu.name,
              "energy_included": bool(pricing.energy_included), "usd_per_kwh": float(pricing.usd_per_kwh),
              "pue": float(pricing.pue)}  # fmt: skip
    if pricing.usd_per_hour is not None:
        return Price(float(pricing.usd_per_hour), source="pricing.usd_per_hour override", as_of="", **common)
    entry = (pricing.gpus or {}).get(gpu.name)
    value = getattr(entry, tier, None) if entry is not None else None
    if value is None:
        raise PriceMissing(
            f"pricing={pricing.name} has no {tier} price for gpu={gpu.name}; pick a book that lists it "
            f"or set pricing.usd_per_hour"
        )
    return Price(float(value), source=entry.source, as_of=entry.as_of, **common)


def usd_per_1m(usd_per_hour: float, tok_per_s: float | None) -> float | None:
    """$ per million tokens at a steady `tok_per_s`: usd_per_hour / (tok_per_s · 3600) · 1e6."""
    if not tok_per_s or tok_per_s <= 0:
        return None
    return usd_per_hour / (tok_per_s * 3600.0) * 1e6


def _increase(raw: pd.DataFrame, name: str, t0_ns: int, t1_ns: int) -> float | None:
    """Increase of a cumulative sample (summed over label sets) from the last scrape at or before
    t0 (else the first) to the first scrape at or after t1 (else the last): histograms update
    when a request finishes, so the scrape after the window's end holds its last requests."""
    r = raw[raw["name"] == name]
    if r.empty:
        return None
    per_scrape = r.groupby("t_ns")["value"].sum().sort_index()
    return counter_increase(per_scrape.index, per_scrape.to_numpy(), t0_ns, t1_ns)


def phase_split(
    requests: pd.DataFrame,
    *,
    engine_metrics: pd.DataFrame | None = None,
    engine: str | None = None,
    t0_ns: int | None = None,
    t1_ns: int | None = None,
) -> dict[str, Any]:
    """Prefill share s of the GPU time, with the method used (see the module doc).

    `requests`: the point's records with derived columns (ttft_ms, tpot_ms). `engine_metrics`:
    raw engine_metrics.parquet rows (name, value, t_ns); used when the engine has phase timers
    and [t0_ns, t1_ns] is given.
    """
    timers = PHASE_TIMERS.get(engine or "")
    if timers and engine_metrics is not None and not engine_metrics.empty and t0_ns is not None and t1_ns is not None:
        pre, dec = (_increase(engine_metrics, n, t0_ns, t1_ns) for n in timers)
        if pre is not None and dec is not None and pre + dec > 0:
            return {"prefill_share": pre / (pre + dec), "method": "engine_phase_time", "prefill_s": pre, "decode_s": dec,
                    "metrics": list(timers)}  # fmt: skip
    m = requests[(requests["phase"] == MEASURE) & (requests["status"] == OK)]
    ttft = m["ttft_ms"].astype("Float64").fillna(0).to_numpy(dtype=float)
    tpot = m["tpot_ms"].astype("Float64").fillna(0).to_numpy(dtype=float)
    n = m["output_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float)
    pre = float(ttft.sum()) / 1e3
    dec = float((tpot * np.maximum(n - 1, 0)).sum()) / 1e3
    if pre + dec <= 0:
        return {"prefill_share": None, "method": None, "prefill_s": None, "decode_s": None}
    return {"prefill_share": pre / (pre + dec), "method": "ttft_tpot", "prefill_s": pre, "decode_s": dec}


def energy(
    *,
    joules: float | None,
    window_s: float | None,
    output_tokens: int,
    total_tokens: int,
    price: Price,
    tdp_w: float | None = None,
    devices: int = 0,
) -> dict[str, Any]:
    """Energy per token and its $ (formulas in the module doc); method "measured" or "estimated from TDP"."""
    method = ENERGY_MEASURED if joules is not None else None
    if joules is None and tdp_w and devices > 0 and window_s:
        joules, method = float(tdp_w) * devices * window_s, ENERGY_FROM_TDP
    out: dict[str, Any] = {"method": method, "joules": joules, "pue": price.pue, "usd_per_kwh": price.usd_per_kwh,
                           "added_to_cost": not price.energy_included}  # fmt: skip
    for label, tokens in (("output", output_tokens), ("total", total_tokens)):
        jpt = joules / tokens if joules is not None and tokens else None
        kwh = jpt * 1e6 / 3.6e6 if jpt is not None else None
        out[f"j_per_{label}_token"] = jpt
        out[f"kwh_per_1m_{label}"] = kwh
        out[f"usd_energy_per_1m_{label}"] = kwh * price.pue * price.usd_per_kwh if kwh is not None else None
    return out


def point_cost(
    *,
    price: Price,
    window_s: float | None,
    output_tokens: int,
    prompt_tokens: int,
    goodput_output_tokens: int | None = None,
    split: dict[str, Any] | None = None,
    energy_j: float | None = None,
    tdp_w: float | None = None,
    devices: int = 0,
) -> dict[str, Any]:
    """Every $ figure of one point (formulas in the module doc); None where a denominator is zero.

    Tokens are the window's successful measure requests (output_tokens, prompt_tokens) and the
    SLO-meeting ones (goodput_output_tokens, from analysis.slo).
    """
    hours = window_s / 3600.0 if window_s else None
    usd_window = price.usd_per_hour * hours if hours else None
    total_tokens = output_tokens + prompt_tokens
    e = energy(joules=energy_j, window_s=window_s, output_tokens=output_tokens, total_tokens=total_tokens,
               price=price, tdp_w=tdp_w, devices=devices)  # fmt: skip

    def per_1m(usd: float | None, tokens: int | None) -> float | None:
        return usd / tokens * 1e6 if usd is not None and tokens else None

    add = e["added_to_cost"] and e["joules"] is not None
    energy_usd = e["joules"] / 3.6e6 * price.pue * price.usd_per_kwh if e["joules"] is not None else None
    usd_all_in = (usd_window or 0.0) + (energy_usd or 0.0) if add else usd_window
    out: dict[str, Any] = {
        "price": price.to_dict(),
        "window_s": window_s,
        "usd_window": usd_window,
        "usd_energy_window": energy_usd,
        "usd_per_1m_output_hardware": per_1m(usd_window, output_tokens),
        "usd_per_1m_output": per_1m(usd_all_in, output_tokens),
        "usd_per_1m_total": per_1m(usd_all_in, total_tokens),
        "usd_per_1m_goodput": per_1m(usd_all_in, goodput_output_tokens),
        "energy": e,
    }
    s = (split or {}).get("prefill_share")
    out["split"] = {
        "method": (split or {}).get("method"),
        "prefill_share": s,
        "usd_per_1m_input_split": per_1m(usd_all_in * s, prompt_tokens) if s is not None and usd_all_in is not None else None,
        "usd_per_1m_output_split": per_1m(usd_all_in * (1 - s), output_tokens)
        if s is not None and usd_all_in is not None
        else None,
    }
    return out
