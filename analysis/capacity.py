"""Capacity plan: replicas, GPUs and monthly dollars for a demand, from a measured knee. Pure.

Notation: lambda = demand (req/s); mu = req/s one replica sustains within the SLO; rho = rho_max;
A = availability; G = GPUs per replica; P_od, P_spot, P_res = $/replica-hour on demand, spot,
reserved (the chosen term); H = hours per month. Formulas (docs/decision.md has the same):
  mu        = conservative end of the knee (analysis.knee.Knee.conservative_load) / f_len, with the
              length factor f_len = s * (p'/p) + (1 - s) * (o'/o): GPU time per request of the
              planned mix (p', o' mean prompt / output tokens) relative to the measured one (p, o),
              s = measured prefill share of GPU time (0 when unknown: all decode)
  replicas(lambda) = max(min_replicas, ceil(ceil(lambda / (mu * rho)) / A) + spare)
  peak      N_peak = replicas(lambda_peak), GPUs = N_peak * G
  profile   bins b of length T (profile_bin_s) with demand lambda_b, n_b = replicas(lambda_b).
            Reactive autoscaler on a periodic profile: at the start of bin b it asks for n_b; a
            scale-up takes lag = provisioning_s + engine start (default: measured time_to_ready_s),
            during which n_{b-1} replicas serve (b-1 of bin 0 is the last bin). If
            lambda_b > n_{b-1} * mu (beyond the knee, headroom spent) those min(lag, T) seconds
            count as SLO-miss minutes, and lambda_b * min(lag, T) * (1 - n_{b-1} mu / lambda_b)
            requests arrive above capacity. New replicas are billed from the start of the bin
            (provisioning is paid), removed ones stop at it.
  month     M = H * 3600 / (number of bins * T) repeats of the profile per month
  static    N_peak * P_od * H
  autoscaled  sum_b n_b * T/3600 * P_od * M
  reserved  R = reserved_replicas (default min_b n_b, the base): R * P_res * H
            + sum_b max(n_b - R, 0) * T/3600 * P_od * M
  + spot    burst u_b = max(n_b - R, 0), spot part s_b = min(u_b, floor(spot_share_max * n_b)):
            R * P_res * H + sum_b ((u_b - s_b) * P_od + s_b * P_spot_eff) * T/3600 * M
  P_spot_eff = P_spot * (1 + f_int * t_restart / 3600 s) + (1 - a_spot) * (P_od - P_spot)
            (f_int interruptions per hour, t_restart seconds lost per interruption, a_spot the
            share of time spot capacity is obtainable; the reference's own extension)
  realised $/1M = monthly $ / (sum_b lambda_b * T * o' * M / 1e6), against the benchmark's $/1M
            at the knee (realised counts every served output token, the benchmark only goodput)
With only a peak, the profile is that peak held for one bin of 3600 s.

Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

EPS = 1e-9  # ceil() tolerance: 4.000000001 replicas is 4


@dataclass(frozen=True)
class ReplicaPrices:
    """$ per replica-hour (per-GPU price x GPUs per replica, or per instance for CPU)."""

    on_demand: float
    spot: float | None = None
    reserved: float | None = None
    spot_interruptions_per_hour: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Demand:
    peak_rps: float
    profile_rps: list[float]
    bin_s: float
    source: str  # "peak" | "profile" | "trace"


@dataclass(frozen=True)
class CapacityPlan:
    variant_id: str
    variant_label: str
    mu_rps: float
    mu_measured_rps: float
    length_factor: float
    rho_max: float
    availability: float
    spare_replicas: int
    gpus_per_replica: int
    peak_rps: float
    replicas_peak: int
    gpus_peak: int
    demand_source: str
    bin_s: float
    replicas_per_bin: list[int]
    scale_up_lag_s: float
    slo_miss_minutes_per_day: float
    slo_miss_minutes_per_month: float
    requests_over_capacity_per_month: float
    monthly_usd: dict[str, float | None]
    realised_usd_per_1m: dict[str, float | None]
    benchmark_usd_per_1m: float | None
    spot_effective_usd_per_hour: float | None
    spot_interruptions_per_month: float | None
    reserved_replicas: int
    output_tokens_per_month: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ceil_tol(x: float) -> int:
    return math.ceil(x - EPS)


def replicas_for(lam: float, mu: float, rho: float, availability: float = 1.0, spare: int = 0,
                 min_replicas: int = 1) -> int:  # fmt: skip
    """max(min_replicas, ceil(ceil(lambda / (mu rho)) / A) + spare)."""
    return max(min_replicas, ceil_tol(ceil_tol(lam / (mu * rho)) / availability) + spare)


def spot_effective_usd_per_hour(p_od: float, p_spot: float, interruptions_per_hour: float, restart_s: float,
                                availability: float = 1.0) -> float:  # fmt: skip
    """P_spot * (1 + f_int * t_restart / 3600) + (1 - a_spot) * (P_od - P_spot)."""
    return p_spot * (1 + interruptions_per_hour * restart_s / 3600.0) + (1 - availability) * (p_od - p_spot)


def length_factor(prefill_share: float | None, prompt_ratio: float = 1.0, output_ratio: float = 1.0) -> float:
    """f_len = s * p'/p + (1 - s) * o'/o (s unknown = 0)."""
    s = prefill_share or 0.0
    return s * prompt_ratio + (1 - s) * output_ratio


def profile_from_times(times_s: Sequence[float], bin_s: float) -> list[float]:
    """Arrival times (s, any origin) -> req/s per bin of bin_s from the first arrival."""
    if not times_s:
        return []
    t0 = min(times_s)
    n = int((max(times_s) - t0) // bin_s) + 1
    counts = [0] * n
    for t in times_s:
        counts[int((t - t0) // bin_s)] += 1
    return [c / bin_s for c in counts]


def demand(peak_rps: float | None, profile_rps: Sequence[float] | None, bin_s: float,
           trace_times_s: Sequence[float] | None = None) -> Demand | None:  # fmt: skip
    """The demand to plan for: a profile (given or from a trace) and its peak; None without any."""
    if profile_rps:
        prof, src = [float(v) for v in profile_rps], "profile"
    elif trace_times_s:
        prof, src = profile_from_times(trace_times_s, bin_s), "trace"
    elif peak_rps is not None:
        return Demand(float(peak_rps), [float(peak_rps)], 3600.0, "peak")
    else:
        return None
    peak = max(float(peak_rps), max(prof)) if peak_rps is not None else max(prof)
    return Demand(peak, prof, float(bin_s), src)


def plan(*, variant_id: str, variant_label: str, knee_rps: float, demand: Demand, prices: ReplicaPrices,
         gpus_per_replica: int, engine_start_s: float, provisioning_s: float, rho_max: float = 0.85,
         availability: float = 1.0, spare_replicas: int = 0, min_replicas: int = 1,
         prefill_share: float | None = None, measured_prompt_tokens: float | None = None,
         measured_output_tokens: float, planned_prompt_tokens: float | None = None,
         planned_output_tokens: float | None = None, spot_share_max: float = 0.0,
         spot_interruptions_per_hour: float | None = None, spot_restart_s: float | None = None,
         spot_availability: float = 1.0, reserved_replicas: int | None = None, hours_per_month: float = 730.0,
         benchmark_usd_per_1m: float | None = None) -> CapacityPlan:  # fmt: skip
    """The plan for one variant (module doc). knee_rps = the knee's conservative end, in req/s."""
    notes: list[str] = []
    p_ratio = (planned_prompt_tokens / measured_prompt_tokens) if planned_prompt_tokens and measured_prompt_tokens else 1.0
    o_new = planned_output_tokens or measured_output_tokens
    o_ratio = o_new / measured_output_tokens if measured_output_tokens else 1.0
    if planned_prompt_tokens and not measured_prompt_tokens:
        notes.append("prompt-length mix ignored: no measured prompt length")
    if (p_ratio != 1.0 or o_ratio != 1.0) and prefill_share is None:
        notes.append("no measured prefill share: GPU time per request scaled with output length only")
    f_len = length_factor(prefill_share, p_ratio, o_ratio)
    mu = knee_rps / f_len
    rep = [replicas_for(lam, mu, rho_max, availability, spare_replicas, min_replicas) for lam in demand.profile_rps]
    n_peak = replicas_for(demand.peak_rps, mu, rho_max, availability, spare_replicas, min_replicas)
    T = demand.bin_s
    nb = len(rep)
    month = hours_per_month * 3600.0 / (nb * T)
    lag = provisioning_s + engine_start_s
    miss_s = over = 0.0
    for b in range(nb):
        prev, lam = rep[b - 1], demand.profile_rps[b]
        if rep[b] > prev and lam > prev * mu:
            d = min(lag, T)
            miss_s += d
            over += lam * d * (1 - prev * mu / lam)
    if demand.source == "peak":
        miss_s = over = 0.0  # a constant demand needs no scale-up
    bin_h = T / 3600.0
    od = prices.on_demand
    static = n_peak * od * hours_per_month
    autos = sum(rep) * bin_h * od * month
    R = reserved_replicas if reserved_replicas is not None else min(rep)
    burst = [max(n - R, 0) for n in rep]
    reserved_total = spot_total = p_spot_eff = interruptions = None
    if prices.reserved is not None:
        reserved_total = R * prices.reserved * hours_per_month + sum(burst) * bin_h * od * month
    else:
        notes.append("no reserved price in the book: reserved plans not priced")
    f_int = spot_interruptions_per_hour if spot_interruptions_per_hour is not None else prices.spot_interruptions_per_hour
    if prices.spot is not None and prices.reserved is not None and f_int is not None:
        restart = spot_restart_s if spot_restart_s is not None else engine_start_s
        p_spot_eff = spot_effective_usd_per_hour(od, prices.spot, f_int, restart, spot_availability)
        spot_n = [min(u, math.floor(spot_share_max * n + EPS)) for u, n in zip(burst, rep, strict=True)]
        spot_total = R * prices.reserved * hours_per_month + sum(
            ((u - s) * od + s * p_spot_eff) * bin_h * month for u, s in zip(burst, spot_n, strict=True)
        )
        interruptions = sum(spot_n) * bin_h * month * f_int
    elif prices.spot is None or f_int is None:
        notes.append("no spot price or interruption rate in the book: spot plan not priced")
    tokens = sum(demand.profile_rps) * T * o_new * month
    monthly = {"static_peak": static, "autoscaled": autos, "reserved_base_on_demand_burst": reserved_total,
               "reserved_base_on_demand_burst_spot": spot_total}  # fmt: skip
    realised = {k: (v / (tokens / 1e6) if v is not None and tokens > 0 else None) for k, v in monthly.items()}
    return CapacityPlan(
        variant_id=variant_id, variant_label=variant_label, mu_rps=mu, mu_measured_rps=knee_rps, length_factor=f_len,
        rho_max=rho_max, availability=availability, spare_replicas=spare_replicas, gpus_per_replica=gpus_per_replica,
        peak_rps=demand.peak_rps, replicas_peak=n_peak, gpus_peak=n_peak * gpus_per_replica,
        demand_source=demand.source, bin_s=T, replicas_per_bin=rep, scale_up_lag_s=lag,
        slo_miss_minutes_per_day=miss_s / 60.0 * (86400.0 / (nb * T)), slo_miss_minutes_per_month=miss_s / 60.0 * month,
        requests_over_capacity_per_month=over * month, monthly_usd=monthly, realised_usd_per_1m=realised,
        benchmark_usd_per_1m=benchmark_usd_per_1m, spot_effective_usd_per_hour=p_spot_eff,
        spot_interruptions_per_month=interruptions, reserved_replicas=R, output_tokens_per_month=tokens, notes=notes,
    )  # fmt: skip
