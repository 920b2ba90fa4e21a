"""The experiment report's what-if section: decision.json `whatif` as a table and two figures
(hit rate and false-hit rate against the semantic-cache threshold; monthly $ per purchasing
policy). Pure: decision in, view dict and SVG text out (analysis.report_plots' helpers, so the
figures are deterministic inline SVG like the others). docs/whatif.md has the formulas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis import report_plots as rp


def view(decision: Mapping[str, Any], folder: str) -> dict[str, Any]:
    """{rows, missing, plots, volume, assumptions, formulas, sources} for _whatif.html.j2."""
    w = decision.get("whatif")
    if not w:
        return {"rows": [], "plots": [], "missing": f"no what-if in decision.json: run `python -m analysis.decide {folder} "
                "whatif=all capacity=example` (docs/whatif.md), then render this report again."}  # fmt: skip
    plots = [
        {"id": "whatif-semantic", "title": "Semantic cache: hit rate and false-hit rate against the cosine threshold",
         "caption": "simulated over the prompts of decision.json whatif (embedder named in the table); dashed: a "
                    "perfect embedder's hit rate; the threshold depends on the embedder.",
         "svg": semantic_plot(w.get("semantic_cache_curve") or [], _threshold(w))},
        {"id": "whatif-policies", "title": "Monthly cost per purchasing policy",
         "caption": "from the capacity plan (decision.json capacity) of the what-if's variant; labels: SLO-miss minutes per month.",
         "svg": policy_plot(w.get("policies"))},
    ]  # fmt: skip
    return {"rows": w.get("rows") or [], "plots": plots, "missing": None, "volume": w.get("volume_source"),
            "baseline": w.get("baseline_label"), "assumptions": w.get("assumptions") or [],
            "formulas": w.get("formulas") or {}, "sources": w.get("sources") or {}, "embedder": w.get("embedder")}  # fmt: skip


def _threshold(w: Mapping[str, Any]) -> float | None:
    r = next((r for r in w.get("rows") or [] if r["technique"].startswith("semantic") and r["status"] == "evaluated"), None)
    return (r or {}).get("details", {}).get("threshold")


def semantic_plot(curve: Sequence[Mapping[str, Any]], threshold: float | None, key: str = "whatif-semantic") -> str:
    if not curve:
        return rp.message_figure(key, "No semantic-cache simulation in decision.json (whatif=all or whatif=semantic_cache).")
    plt = rp.pyplot()
    fig, ax = plt.subplots(figsize=(rp.WIDTH, 3.4))
    x = np.array([c["threshold"] for c in curve])
    ax.plot(x, [100 * c["hit_rate"] for c in curve], "o-", color=rp.PALETTE[0], label="hit rate")
    ax.plot(x, [100 * c["false_hit_rate"] for c in curve], "s-", color=rp.SLO_COLOR, label="false-hit rate (wrong cluster)")
    ax.plot(x, [100 * c["ideal_hit_rate"] for c in curve], "--", color="#4a5568", lw=1, label="perfect embedder")
    if threshold is not None:
        ax.axvline(threshold, color="#1a202c", lw=0.8, ls=":")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("% of requests")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    saved = [c.get("usd_per_month_saved") for c in curve]
    if all(v is not None for v in saved):
        a2 = ax.twinx()
        a2.plot(x, saved, "^:", color=rp.PALETTE[2], label="$ saved per month")
        a2.set_ylabel("$ saved per month", color=rp.PALETTE[2])
        a2.set_ylim(bottom=0)
    rp.margins(fig, left=0.8, right=0.9, top=0.3, bottom=0.55)
    return rp.svg(fig, key)


def policy_plot(policies: Mapping[str, Any] | None, key: str = "whatif-policies") -> str:
    if not policies:
        return rp.message_figure(key, "No capacity plan in decision.json: decide with capacity=example (a 24-hour profile).")
    names = {"static_peak": "static (peak)", "autoscaled": "autoscaled", "reserved_base_on_demand_burst": "reserved + on-demand",
             "reserved_base_on_demand_burst_spot": "reserved + on-demand + spot"}  # fmt: skip
    m = policies.get("monthly_usd") or {}
    keys = [k for k in names if k in m]
    plt = rp.pyplot()
    fig, ax = plt.subplots(figsize=(rp.WIDTH, 3.0))
    vals = [m[k] for k in keys]
    y = np.arange(len(keys))
    ax.barh(y, [v or 0.0 for v in vals], color=[rp.PALETTE[i % len(rp.PALETTE)] for i in range(len(keys))], height=0.6)
    miss = policies.get("slo_miss_minutes_per_month")
    for yi, k, v in zip(y, keys, vals, strict=True):
        lab = "n/a (no price in the book)" if v is None else f" ${v:,.0f}"
        if v is not None and k != "static_peak" and miss is not None:
            lab += f"  · SLO-miss {miss:.0f} min/month"
        ax.text(v or 0.0, yi, lab, va="center", fontsize=8)
    ax.set_yticks(y, [names[k] for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"$ per month ({policies.get('variant_label')})")
    ax.set_xlim(0, max([v for v in vals if v is not None] or [1.0]) * 1.45)
    ax.grid(alpha=0.3, axis="x")
    rp.margins(fig, left=2.0, right=0.3, top=0.2, bottom=0.55)
    return rp.svg(fig, key)
