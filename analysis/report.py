"""The self-contained HTML report of one run (opens offline: CSS inline, plots as base64 PNG).

Pure: takes the run summary and data frames, returns the HTML string; the caller writes it.
Matplotlib renders into memory with the Agg backend. Jinja2 autoescaping is on, so text from
engine logs or configs cannot inject markup.

Side effects: none.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.notes import note_text

TEMPLATES = Path(__file__).resolve().parent / "templates"


def fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{float(v):,.{digits}f}"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _point_label(summary: dict[str, Any], p: dict[str, Any]) -> str:
    kind = summary["config"]["traffic"]["kind"]
    unit = {"concurrency": "users", "trace": "x speed-up"}.get(kind, "req/s")
    value = p.get("load_value", p.get("value"))  # run.json v2 names it load_value (v1: value)
    return f"#{p['index']} · {value:g} {unit}"


def latency_cdf_plot(df: pd.DataFrame, labels: dict[int, str]) -> str:
    """Empirical CDFs of TTFT, TPOT and E2E per load point (measure phase, ok requests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ok = df[(df["phase"] == "measure") & (df["status"] == "ok")]
    for ax, col, title in zip(axes, ("ttft_ms", "tpot_ms", "e2e_ms"), ("TTFT", "TPOT", "E2E latency"), strict=True):
        for lp, g in ok.groupby("load_point"):
            v = np.sort(g[col].dropna().to_numpy(dtype=float))
            if v.size:
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=labels.get(int(lp), str(lp)))
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of requests ≤ x")
    if axes[0].get_legend_handles_labels()[0]:  # no measured ok request (e.g. cancelled in warmup): no legend
        axes[0].legend(fontsize=8)
    return _png(fig)


def timeline_plot(df: pd.DataFrame, tel: pd.DataFrame | None, t0_ns: int) -> str:
    """Per-request TTFT over time above engine CPU % and RSS (cpu sampler) or GPU power and utilisation
    (nvml sampler), on the shared monotonic clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if tel is not None and not tel.empty else 1
    fig, axes = plt.subplots(rows, 1, figsize=(13, 2.8 * rows), sharex=True, squeeze=False)
    ax = axes[0][0]
    sent = df[df["t_sent_ns"].notna()]
    colors = {"warmup": "#a0aec0", "measure": "#2b6cb0", "cooldown": "#a0aec0"}
    for phase, g in sent.groupby("phase"):
        ok = g[g["status"] == "ok"]
        ax.scatter((ok["t_sent_ns"].astype(float) - t0_ns) / 1e9, ok["ttft_ms"].astype(float), s=6,
                   color=colors.get(str(phase), "#2b6cb0"), label=f"TTFT ({phase})")  # fmt: skip
        bad = g[g["status"] != "ok"]
        if len(bad):
            ax.scatter((bad["t_sent_ns"].astype(float) - t0_ns) / 1e9, np.zeros(len(bad)), marker="x", s=18,
                       color="#c53030", label=f"not ok ({phase})")  # fmt: skip
    ax.set_ylabel("TTFT ms")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    if rows == 2:
        ax2 = axes[1][0]
        x = (tel["t_ns"].astype(float) - t0_ns) / 1e9
        if "engine_cpu_pct" in tel:
            ax2.plot(x, tel["engine_cpu_pct"], color="#dd6b20", lw=1, label="engine CPU % (100 = 1 core)")
            ax2.set_ylabel("CPU %")
            ax3 = ax2.twinx()
            ax3.plot(x, tel["engine_rss_bytes"] / 2**30, color="#38a169", lw=1, label="engine RSS GiB")
            ax3.set_ylabel("RSS GiB")
            ax3.legend(fontsize=8, loc="upper right")
        elif "power_w" in tel:  # NVML: one row per GPU per sample
            ax3 = ax2.twinx()
            for gpu, g in tel.groupby("gpu") if "gpu" in tel else [(0, tel)]:
                gx = (g["t_ns"].astype(float) - t0_ns) / 1e9
                ax2.plot(gx, g["power_w"].astype(float), lw=1, label=f"GPU {gpu} power W")
                if "gpu_util_pct" in g:
                    ax3.plot(gx, g["gpu_util_pct"].astype(float), lw=1, ls=":", label=f"GPU {gpu} util %")
            ax2.set_ylabel("power W")
            ax3.set_ylabel("GPU util %")
            ax3.legend(fontsize=8, loc="upper right")
        ax2.legend(fontsize=8, loc="upper left")
        ax2.grid(alpha=0.3)
    axes[-1][0].set_xlabel("seconds since the first load point started")
    return _png(fig)


def render_report(summary: dict[str, Any], requests: pd.DataFrame, telemetry: pd.DataFrame | None) -> str:
    """HTML for one run. `requests` must carry the derived columns (analysis.metrics.derive)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["note_text"] = note_text  # notes are Note dicts (v2) or free text (v1 run.json)
    points = sorted(summary.get("load_points", []), key=lambda p: p["index"])
    for p in points:
        p["label"] = _point_label(summary, p)
    labels = {p["index"]: p["label"] for p in points}
    plots: list[tuple[str, str]] = []
    if len(requests) and requests["status"].eq("ok").any():
        plots.append(("Latency distributions", latency_cdf_plot(requests, labels)))
        t0 = min((p["t0_ns"] for p in points if p.get("t0_ns")), default=int(requests["t_sent_ns"].dropna().min()))
        plots.append(("Timeline: requests and engine resources", timeline_plot(requests, telemetry, t0)))
    tel_summary = ((summary.get("telemetry") or {}).get("summary_during_load")) or None
    return env.get_template("report.html.j2").render(
        s=summary, points=points, plots=plots, telemetry=tel_summary, fmt=fmt, note_text=note_text
    )
