"""The report's figures: matplotlib (Agg) rendered to inline SVG strings. Pure: data in, text out.

Every function returns the markup of one ``<svg>`` element, ready to be placed in an HTML page:
no XML prolog, no namespace declarations (the HTML parser puts inline ``<svg>`` in the SVG
namespace), every internal id prefixed with the figure's key so several figures can share one
document, text kept as text (``svg.fonttype: none``, escaped by matplotlib), and the output
deterministic for the same input (``svg.hashsalt`` per figure, no date in the metadata).
Large per-request series are thinned to at most ``MAX_POINTS`` markers and sampled series to
``MAX_LINE`` samples (evenly by index, so the same input always gives the same picture);
distributions are drawn from at most ``MAX_CDF`` quantiles. Axes carry their units.

Side effects: none (figures are closed after rendering).
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MAX_POINTS = 1500  # per-request markers per timeline
MAX_CDF = 400  # quantiles per drawn distribution
MAX_LINE = 2000  # samples per drawn resource or engine series (every k-th, evenly)
PALETTE = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f", "#4a5568", "#c53030", "#2c7a7b")
SLO_COLOR = "#c53030"
PHASE_COLORS = {"warmup": "#a0aec0", "measure": "#2b6cb0", "cooldown": "#a0aec0"}
WIDTH = 11.0  # inches; the page scales the SVG to its column


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def color_map(keys: Sequence[str]) -> dict[str, str]:
    """One colour per key, in order (cycled)."""
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def svg(fig: Any, key: str) -> str:
    """`fig` as inline SVG markup with ids prefixed by `key` (module doc); closes the figure."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"servelab-{key}", "svg.fonttype": "none", "svg.id": f"svg-{key}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    pyplot().close(fig)
    s = buf.getvalue()
    s = s[s.index("<svg") :]
    s = s.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "").replace(' xmlns="http://www.w3.org/2000/svg"', "")
    s = re.sub(r'<metadata>.*?</metadata>\s*', "", s, flags=re.S)
    root = f'id="svg-{key}"'
    s = re.sub(r'\bid="(?!svg-)', f'id="{key}-', s)
    s = s.replace("url(#", f"url(#{key}-").replace('xlink:href="#', f'xlink:href="#{key}-')
    assert root in s
    return s.strip() + "\n"


def margins(fig: Any, left: float = 0.8, right: float = 0.3, top: float = 0.45, bottom: float = 0.6,
            wspace: float | None = None, hspace: float | None = None) -> None:
    """Fixed margins in inches (one draw, unlike a layout engine's several: half the rendering time)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h, wspace=wspace, hspace=hspace)


def message_figure(key: str, text: str, height: float = 1.2) -> str:
    """A figure that says why there is nothing to draw (so every plot slot is present)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, height))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#4a5568", wrap=True)
    margins(fig, 0.1, 0.1, 0.1, 0.1)
    return svg(fig, key)


def thin(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `limit` of n items, evenly spread, first and last kept."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def ecdf(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x, F(x)) of the empirical CDF, at most MAX_CDF steps (quantiles when there are more values)."""
    v = np.sort(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return v, v
    if v.size <= MAX_CDF:
        return v, np.arange(1, v.size + 1) / v.size
    q = np.linspace(0, 1, MAX_CDF)
    return np.quantile(v, q), q


def _nice_costs(lo: float, hi: float, k: int = 4) -> list[float]:
    """Up to k values of the 1-2-5 series inside [lo, hi]."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return []
    out = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        out += [m * 10.0**e for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    if len(out) > k:
        idx = np.unique(np.linspace(0, len(out) - 1, k).round().astype(int))
        out = [out[i] for i in idx]
    return out


def _usd(v: float) -> str:
    return f"${v:,.3g}" if v < 1000 else f"${v:,.0f}"


# -- experiment plots ----------------------------------------------------------------------------
def pareto_plot(rows: Sequence[Mapping[str, Any]], frontier: Sequence[Mapping[str, Any]], colors: Mapping[str, str],
                iso_prices: Sequence[tuple[str, float]], chosen: tuple[str, str] | None = None,
                key: str = "pareto") -> str:  # fmt: skip
    """Output tok/s per GPU against tok/s per user, every valid point per variant (filled: meets the
    SLO), the frontier, and iso-cost lines: $/1M output = P / (y * 3600) * 1e6 for a unit price P
    ($ per GPU-hour, or per instance-hour on CPU), i.e. y = P * 1e6 / (3600 * cost)."""
    pts = [r for r in rows if r.get("verdict") != "invalid" and r.get("tok_per_s_per_user") and r.get("tok_per_s_per_gpu")]
    if not pts:
        return message_figure(key, "No valid point has both tok/s per user and tok/s per GPU: nothing to plot.")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 4.6))
    seen: set[str] = set()
    for r in pts:
        vid, c = r["variant_id"], colors.get(r["variant_id"], PALETTE[0])
        feas = bool(r.get("feasible"))
        ax.scatter([r["tok_per_s_per_user"]], [r["tok_per_s_per_gpu"]], s=46, color=c if feas else "white", edgecolors=c,
                   linewidths=1.6, zorder=3, label=None if vid in seen else r["variant_label"])  # fmt: skip
        seen.add(vid)
        ax.annotate(f"{r['load_value']:g}", (r["tok_per_s_per_user"], r["tok_per_s_per_gpu"]), xytext=(4, 4),
                    textcoords="offset points", fontsize=7, color="#4a5568")  # fmt: skip
    if frontier:
        fx = [f["tok_per_s_per_user"] for f in frontier]
        fy = [f["tok_per_s_per_gpu"] for f in frontier]
        ax.plot(fx, fy, color="#1a202c", lw=1.2, ls="-", zorder=2, label="Pareto frontier")
    if chosen is not None:
        ch = [r for r in pts if r["variant_id"] == chosen[0] and r["point_id"] == chosen[1]]
        if ch:
            ax.scatter([ch[0]["tok_per_s_per_user"]], [ch[0]["tok_per_s_per_gpu"]], s=260, facecolors="none",
                       edgecolors="#1a202c", linewidths=1.4, zorder=4, label="chosen operating point")  # fmt: skip
    xs = np.array([r["tok_per_s_per_user"] for r in pts], dtype=float)
    ys = np.array([r["tok_per_s_per_gpu"] for r in pts], dtype=float)
    ax.set_xlim(0, xs.max() * 1.15)
    ax.set_ylim(0, ys.max() * 1.3)
    for j, (name, price) in enumerate(iso_prices[:2]):
        if not price:
            continue
        costs = _nice_costs(price * 1e6 / 3600 / (ys.max() * 1.3), price * 1e6 / 3600 / max(ys.min() * 0.5, 1e-9))
        for cst in costs:
            y = price * 1e6 / (3600 * cst)
            ax.axhline(y, color="#718096", lw=0.8, ls=(0, (4, 3)) if j == 0 else (0, (1, 2)), zorder=1)
            ax.text(ax.get_xlim()[0], y, f" {_usd(cst)}/1M output ({name})", fontsize=7, color="#4a5568", va="bottom", ha="left")
    ax.set_xlabel("interactivity: output tok/s per user (1000 / mean TPOT ms)")
    ax.set_ylabel("output tok/s per GPU (per instance on CPU)")
    ax.set_title("Throughput per GPU against interactivity (labels: offered load; hollow: misses the SLO)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    margins(fig, left=0.8, right=0.3, top=0.4, bottom=0.6)
    return svg(fig, key)


def _agg_by_load(rows: Sequence[Mapping[str, Any]]) -> dict[str, pd.DataFrame]:
    """Per variant: one row per load value (mean of p50s, worst p99 over repetitions), sorted."""
    if not rows:
        return {}
    df = pd.DataFrame(rows)
    out = {}
    cols = [c for c in df.columns if c.endswith(("_p50", "_p99")) and c.split("_")[0] in ("ttft", "tpot", "e2e")]
    df["invalid"] = df["verdict"].eq("invalid") if "verdict" in df else False
    for vid, g in df.groupby("variant_id", sort=False):
        agg: dict[str, Any] = {c: ("mean" if c.endswith("_p50") else "max") for c in cols} | {"invalid": "any"}
        a = g.groupby("load_value")[[*cols, "invalid"]].agg(agg).reset_index().sort_values("load_value")
        a["variant_label"] = g["variant_label"].iloc[0]
        a["load_unit"] = g["load_unit"].iloc[0]
        out[str(vid)] = a
    return out


def latency_load_plot(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], slo: Mapping[str, Any],
                      knees: Mapping[str, Mapping[str, Any]], key: str = "latency-load") -> str:  # fmt: skip
    """p50 (dashed) and p99 (solid) TTFT, TPOT, E2E against offered load per variant; the SLO limit
    of each metric as a red line; each variant's knee (last SLO-feasible load) as a ring, and its
    interpolated crossing, when there is one, as a dotted vertical line; invalid points crossed."""
    by = _agg_by_load(rows)
    if not by:
        return message_figure(key, "No measured point: nothing to plot.")
    plt = pyplot()
    metrics = [("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E latency")]
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 3.8))
    unit = next(iter(by.values()))["load_unit"].iloc[0]
    for ax, (m, title) in zip(axes, metrics, strict=True):
        for vid, a in by.items():
            c = colors.get(vid, PALETTE[0])
            x = a["load_value"].to_numpy(dtype=float)
            for p, ls in (("p50", "--"), ("p99", "-")):
                col = f"{m}_{p}"
                if col in a:
                    ax.plot(x, a[col].to_numpy(dtype=float), ls=ls, marker="o", ms=3.5, color=c, lw=1.3,
                            label=f"{a['variant_label'].iloc[0]} {p}")  # fmt: skip
            bad = a[a["invalid"]] if "invalid" in a else a.iloc[0:0]
            for p in ("p50", "p99"):
                if len(bad) and f"{m}_{p}" in bad:
                    ax.scatter(bad["load_value"].to_numpy(dtype=float), bad[f"{m}_{p}"].to_numpy(dtype=float), marker="x",
                               s=40, color="#1a202c", zorder=5, label="invalid point" if m == "ttft" and p == "p99" else None)  # fmt: skip
            k = knees.get(vid) or {}
            if k.get("knee_load") is not None and f"{m}_p99" in a:
                at = a[a["load_value"] == k["knee_load"]]
                if len(at):
                    ax.scatter([k["knee_load"]], [float(at[f"{m}_p99"].iloc[0])], s=120, facecolors="none", edgecolors=c,
                               linewidths=1.6, zorder=4)  # fmt: skip
            if k.get("estimate") is not None:
                ax.axvline(float(k["estimate"]), color=c, ls=":", lw=1.1)
        limit = slo.get(f"{m}_ms")
        if limit is not None:
            pct = slo.get(f"{m}_percentile") or slo.get("percentile")
            ax.axhline(float(limit), color=SLO_COLOR, lw=1.2, label=f"SLO p{pct:g} ≤ {float(limit):g} ms")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"offered load ({unit})")
        ax.set_ylabel("ms")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    h, lab = axes[0].get_legend_handles_labels()
    h2, lab2 = axes[1].get_legend_handles_labels()
    extra = [(hh, ll) for hh, ll in zip(h2, lab2, strict=True) if ll.startswith("SLO") and ll not in lab]
    n_leg = len(lab) + len(extra)
    fig.legend([*h, *(e[0] for e in extra)], [*lab, *(e[1] for e in extra)], fontsize=7, loc="lower center",
               ncol=min(3, n_leg), frameon=False)  # fmt: skip
    fig.set_size_inches(WIDTH, 3.4 + 0.17 * math.ceil(n_leg / 3))
    margins(fig, left=0.7, right=0.2, top=0.65, bottom=0.75 + 0.17 * math.ceil(n_leg / 3), wspace=0.28)
    fig.suptitle("Latency against offered load (dashed p50, solid p99; ring: knee; dotted: interpolated SLO crossing)",
                 fontsize=10)  # fmt: skip
    return svg(fig, key)


def distributions_plot(series: Mapping[str, Mapping[str, Any]], colors: Mapping[str, str], slo: Mapping[str, Any],
                       metrics: Sequence[tuple[str, str]] = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")),
                       key: str = "distributions", title: str = "") -> str:  # fmt: skip
    """Empirical CDFs per series (a variant at its operating point, or a load point of one run) of
    each metric, with the SLO limit as a red vertical line. `series`: label -> {metric: values}."""
    if not any(len(np.asarray(s.get(m, []))) for s in series.values() for m, _ in metrics):
        return message_figure(key, "No successful measured request: no latency distribution.")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(WIDTH, 3.6), squeeze=False)
    for ax, (m, name) in zip(axes[0], metrics, strict=True):
        for i, (label, s) in enumerate(series.items()):
            x, f = ecdf(s.get(m, []))
            if x.size:
                ax.step(x, f, where="post", color=colors.get(label, PALETTE[i % len(PALETTE)]), lw=1.3,
                        label=f"{label} (n={len(np.asarray(s.get(m, [])))})")  # fmt: skip
        limit = slo.get(m)
        if limit is not None:
            ax.axvline(float(limit), color=SLO_COLOR, lw=1.2, label=f"SLO limit {float(limit):g} ms")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of requests ≤ x")
    axes[0][0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    margins(fig, left=0.7, right=0.25, top=0.6 if title else 0.35, bottom=0.6, wspace=0.18)
    return svg(fig, key)


def timeline_plot(requests: pd.DataFrame, telemetry: pd.DataFrame | None, engine: pd.DataFrame | None,
                  points: Sequence[Mapping[str, Any]], t0_ns: int, sampler: str | None, key: str = "timeline",
                  title: str = "") -> str:  # fmt: skip
    """One run on one time axis (seconds since the first load point started, the monotonic clock
    the requests and samplers share): per-request TTFT by send time (errors as red crosses);
    GPU power, utilisation and memory (NVML) or engine CPU % and RSS (CPU sampler); the engine's
    running and waiting requests and KV-cache use (its /metrics); shaded load-point windows.
    `points`: [{label, t0_ns, t_end_ns}]."""
    plt = pyplot()
    tel = telemetry if telemetry is not None and not telemetry.empty else None
    eng = engine if engine is not None and not engine.empty and len(engine.columns) > 1 else None
    if eng is not None:
        eng = eng.sort_values("t_ns").iloc[thin(len(eng), MAX_LINE)]
    gpu = tel is not None and sampler == "nvml" and "power_w" in tel
    if tel is not None and not gpu:
        tel = tel.sort_values("t_ns").iloc[thin(len(tel), MAX_LINE)]
    rows = 1 + (2 if gpu else 1 if tel is not None else 0) + (1 if eng is not None else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(WIDTH, 2.1 * rows + 0.6), sharex=True, squeeze=False)
    axs = [a[0] for a in axes]

    def secs(t: Any) -> np.ndarray:
        return (np.asarray(t, dtype=float) - t0_ns) / 1e9

    ax = axs[0]
    sent = requests[requests["t_sent_ns"].notna()] if len(requests) else requests
    for phase, g in sent.groupby("phase") if len(sent) else []:
        ok = g[g["status"] == "ok"].sort_values("t_sent_ns")
        if len(ok):
            sub = ok.iloc[thin(len(ok))]
            ax.scatter(secs(sub["t_sent_ns"]), sub["ttft_ms"].to_numpy(dtype=float, na_value=np.nan), s=5,
                       color=PHASE_COLORS.get(str(phase), PALETTE[0]),
                       label=f"TTFT, {phase}" + (f" ({len(sub)} of {len(ok)} shown)" if len(sub) < len(ok) else ""))  # fmt: skip
        bad = g[g["status"] != "ok"]
        if len(bad):
            sub = bad.iloc[thin(len(bad), 300)]
            ax.scatter(secs(sub["t_sent_ns"]), np.zeros(len(sub)), marker="x", s=16, color="#c53030",
                       label=f"not ok, {phase} ({len(bad)})")  # fmt: skip
    ax.set_ylabel("TTFT (ms)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    i = 1
    if gpu:
        t = tel.sort_values("t_ns")  # type: ignore[union-attr]
        t = t.assign(_r=t.groupby("gpu").cumcount())  # one sampling round across GPUs
        keep = set(thin(int(t["_r"].max()) + 1, MAX_LINE))
        rnd = t[t["_r"].isin(keep)].groupby("_r")
        x = secs(rnd["t_ns"].min())
        ax = axs[i]
        ax.plot(x, rnd["power_w"].sum(min_count=1), color="#dd6b20", lw=1, label="power, all GPUs (W)")
        ax.set_ylabel("power (W)")
        ax.legend(fontsize=7, loc="upper left")
        if "gpu_util_pct" in t:
            ax2 = ax.twinx()
            ax2.plot(x, rnd["gpu_util_pct"].mean(), color="#2b6cb0", lw=1, label="GPU utilisation, mean (%)")
            ax2.set_ylabel("utilisation (%)")
            ax2.set_ylim(0, 105)
            ax2.legend(fontsize=7, loc="upper right")
        ax = axs[i + 1]
        if "mem_used_bytes" in t:
            ax.plot(x, rnd["mem_used_bytes"].sum(min_count=1) / 2**30, color="#38a169", lw=1, label="GPU memory used, all GPUs (GiB)")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_ylabel("memory (GiB)")
        i += 2
    elif tel is not None:
        ax = axs[i]
        i += 1
        x = secs(tel["t_ns"])
        if "engine_cpu_pct" in tel:
            ax.plot(x, tel["engine_cpu_pct"].to_numpy(dtype=float), color="#dd6b20", lw=1, label="engine CPU % (100 = 1 core)")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_ylabel("CPU (%)")
        if "engine_rss_bytes" in tel:
            rss = tel["engine_rss_bytes"].to_numpy(dtype=float)
            unit, div = ("GiB", 2**30) if np.nanmax(rss, initial=0) >= 2**30 else ("MiB", 2**20)
            ax2 = ax.twinx()
            ax2.plot(x, rss / div, color="#38a169", lw=1, label=f"engine RSS ({unit})")
            ax2.set_ylabel(f"RSS ({unit})")
            ax2.ticklabel_format(axis="y", useOffset=False, style="plain")
            ax2.legend(fontsize=7, loc="upper right")
    if eng is not None:
        ax = axs[i]
        x = secs(eng["t_ns"])
        for c, color, name in (("running", "#2b6cb0", "running requests"), ("waiting", "#c53030", "waiting requests")):
            if c in eng:
                ax.step(x, eng[c].to_numpy(dtype=float), where="post", color=color, lw=1.1, label=name)
        ax.set_ylabel("requests")
        ax.set_ylim(bottom=0)
        if "kv_usage_frac" in eng:
            ax2 = ax.twinx()
            ax2.plot(x, eng["kv_usage_frac"].to_numpy(dtype=float) * 100, color="#805ad5", lw=1, label="KV-cache use (%)")
            ax2.set_ylabel("KV cache (%)")
            ax2.set_ylim(0, 105)
            ax2.legend(fontsize=7, loc="upper right")
        ax.legend(fontsize=7, loc="upper left")
    for a in axs:
        for j, p in enumerate(points):
            if p.get("t0_ns") is None:
                continue
            x0 = secs(p["t0_ns"])
            x1 = secs(p["t_end_ns"]) if p.get("t_end_ns") else x0
            a.axvspan(float(x0), float(x1), color="#edf2f7" if j % 2 == 0 else "#e2e8f0", zorder=0)
            a.axvline(float(x0), color="#718096", lw=0.8, ls="--", zorder=1)
        a.grid(alpha=0.3)
    top = axs[0]
    for p in points:
        if p.get("t0_ns") is not None:
            top.annotate(p["label"], (float(secs(p["t0_ns"])), 1.0), xycoords=("data", "axes fraction"), xytext=(2, 2),
                         textcoords="offset points", fontsize=7, color="#2d3748", va="bottom")  # fmt: skip
    axs[-1].set_xlabel("seconds since the first load point started (shaded: load points; dashed: their starts)")
    if title:
        fig.suptitle(title, fontsize=10)
    margins(fig, left=0.75, right=0.8, top=0.55 if title else 0.35, bottom=0.55, hspace=0.12)
    return svg(fig, key)


def cost_plot(bars: Sequence[Mapping[str, Any]], plans: Sequence[Mapping[str, Any]], colors: Mapping[str, str],
              no_plan: str = "", key: str = "cost") -> str:  # fmt: skip
    """Left: $/1M output tokens of each variant at its operating point split into the billed
    GPU-hours (hardware) and the energy at pricing.usd_per_kwh x PUE (hatched when the price
    already includes it). Right: the monthly cost of each purchasing mix of the capacity plan."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(WIDTH, 3.8))
    if bars:
        y = np.arange(len(bars))
        hw = np.array([b.get("hardware") or 0.0 for b in bars])
        en = np.array([b.get("energy") or 0.0 for b in bars])
        a1.barh(y - 0.2, hw, height=0.4, color=[colors.get(b["variant_id"], PALETTE[0]) for b in bars], label="GPU-hours (billed)")
        a1.barh(y + 0.2, en, height=0.4, color="#ecc94b", hatch=["" if b.get("energy_added") else "//" for b in bars],
                edgecolor="#975a16", label="energy (hatched: included in the hourly price)")  # fmt: skip
        for yi, b in zip(y, bars, strict=True):
            if b.get("energy") is None:
                a1.text(0, yi + 0.2, "  no energy measured", va="center", fontsize=7, color="#4a5568")
        a1.set_yticks(y, [textwrap.fill(str(b["label"]), 28) for b in bars], fontsize=7)
        a1.invert_yaxis()
        a1.set_xlabel("$ per 1M output tokens")
        a1.legend(fontsize=7, loc="lower right")
    else:
        a1.axis("off")
        a1.text(0.5, 0.5, "no priced operating point", ha="center", va="center", fontsize=9)
    a1.set_title("GPU-hours against energy, at each operating point", fontsize=10)
    a1.grid(alpha=0.3, axis="x")
    mixes = ["static_peak", "autoscaled", "reserved_base_on_demand_burst", "reserved_base_on_demand_burst_spot"]
    names = {"static_peak": "static (peak)", "autoscaled": "autoscaled", "reserved_base_on_demand_burst": "reserved + on-demand",
             "reserved_base_on_demand_burst_spot": "reserved + on-demand + spot"}  # fmt: skip
    if plans:
        n = len(plans)
        w = 0.8 / n
        x = np.arange(len(mixes))
        for j, p in enumerate(plans):
            vals = [p["monthly_usd"].get(m) for m in mixes]
            xs = x - 0.4 + w * (j + 0.5)
            a2.bar(xs, [v or 0.0 for v in vals], width=w, color=colors.get(p["variant_id"], PALETTE[j % len(PALETTE)]),
                   label=p["variant_label"])  # fmt: skip
            for xi, v in zip(xs, vals, strict=True):
                a2.text(xi, (v or 0.0), _usd(v) if v is not None else "n/a", ha="center", va="bottom", fontsize=6,
                        rotation=90 if n > 2 else 0)  # fmt: skip
        a2.set_xticks(x, [names[m] for m in mixes], fontsize=7)
        a2.set_ylabel("$ per month")
        a2.legend(fontsize=7, loc="upper right")
        a2.grid(alpha=0.3, axis="y")
    else:
        a2.axis("off")
        a2.text(0.5, 0.5, no_plan or "no capacity plan", ha="center", va="center", fontsize=9, wrap=True)
    a2.set_title("Monthly cost of each purchasing mix (capacity plan)", fontsize=10)
    margins(fig, left=2.0, right=0.2, top=0.4, bottom=0.75, wspace=0.35)
    return svg(fig, key)


def tornado_plot(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str], baseline_usd: float | None,
                 key: str = "tornado") -> str:  # fmt: skip
    """The chosen variant's $/1M at the low and the high setting of each input (bars from the
    baseline), the variant chosen at each end, and the inputs that flip the choice in red."""
    rows = [r for r in rows if r.get("usd_low") is not None or r.get("usd_high") is not None]
    if not rows or baseline_usd is None:
        return message_figure(key, "No sensitivity row to draw (no chosen variant, or nothing could be evaluated).")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 0.7 * len(rows) + 1.4))
    y = np.arange(len(rows))
    for yi, r in zip(y, rows, strict=True):
        c = "#c53030" if r.get("flips") else "#2b6cb0"
        for side, alpha in (("low", 0.55), ("high", 0.95)):
            v = r.get(f"usd_{side}")
            if v is None:
                continue
            ax.barh(yi, v - baseline_usd, left=baseline_usd, height=0.5, color=c, alpha=alpha)
            who = textwrap.shorten(labels.get(r.get(f"chosen_{side}") or "", "none"), 44, placeholder="…")
            ax.text(v, yi + (0.36 if side == "high" else -0.36), f" {r.get(f'{side}_setting')}: {_usd(v)} → {who} ",
                    fontsize=7, va="center", ha="left" if v >= baseline_usd else "right")  # fmt: skip
    ax.axvline(baseline_usd, color="#1a202c", lw=1)
    ax.set_yticks(y, [r["input"] + ("  (flips)" if r.get("flips") else "") for r in rows], fontsize=8)
    ax.invert_yaxis()
    vals = [v for r in rows for v in (r.get("usd_low"), r.get("usd_high")) if v is not None] + [baseline_usd]
    span = max(vals) - min(vals) or baseline_usd * 0.1 or 1.0
    ax.set_xlim(min(vals) - 1.1 * span, max(vals) + 1.1 * span)
    ax.set_xlabel("chosen variant's $ per 1M goodput tokens (line: baseline)")
    ax.set_title("Sensitivity: each input at its low and high setting, and the variant chosen there (red: flips)",
                 fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3, axis="x")
    margins(fig, left=1.9, right=0.3, top=0.4, bottom=0.55)
    return svg(fig, key)


TURNS_CAPTION = ("multi-turn sessions: TTFT p99 solid, p50 dashed; each turn resends the history, so the context grows "
                 "with the turn (right); legend: the prefix cache's hit share per turn (the engine's cached tokens).")


def turn_plot(series: Sequence[Mapping[str, Any]], limit_ms: float | None = None, key: str = "turns") -> str:
    """TTFT p50 (dashed) and p99 (solid) against the turn of a conversation (left) and against the
    context length the turn sent (right; the server's mean prompt tokens), one colour per series;
    the prefix cache's hit share per turn, where the engine reported it, in the legend.
    `series`: {label, color, by_turn: analysis.sessions.by_turn rows}."""
    drawn = [s for s in series if s.get("by_turn")]
    if not drawn:
        return message_figure(key, "No multi-turn sessions in these points: nothing to draw against the turn.")
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    for s in drawn:
        rows = sorted(s["by_turn"], key=lambda r: r["turn"])
        t = [r["turn"] for r in rows]
        ctx = [r.get("prompt_tokens_mean") or np.nan for r in rows]
        hits = [r.get("cache_hit") for r in rows]
        lab = s["label"] + ("" if all(h is None for h in hits) else
                            " (cache hit " + ", ".join("-" if h is None else f"{h:.0%}" for h in hits) + ")")  # fmt: skip
        for ax, x in ((a, t), (b, ctx)):
            ax.plot(x, [r.get("ttft_ms_p99") or np.nan for r in rows], "-o", color=s["color"], ms=4, label=lab)
            ax.plot(x, [r.get("ttft_ms_p50") or np.nan for r in rows], "--", color=s["color"], lw=1)
    for ax, xl in ((a, "turn (0 = the first)"), (b, "context length (mean prompt tokens)")):
        if limit_ms:
            ax.axhline(limit_ms, color=SLO_COLOR, lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel("TTFT (ms)")
        ax.grid(alpha=0.3)
    a.xaxis.get_major_locator().set_params(integer=True)
    a.legend(fontsize=8, loc="upper left")
    margins(fig, left=0.8, right=0.3, top=0.3, bottom=0.6, wspace=0.25)
    return svg(fig, key)
