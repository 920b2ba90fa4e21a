"""The experiment report's search section (a folder made by `tune=<space>`, docs/tune.md): the
trials of tune.json (settings, outcome, engine time with the start), the objective per trial with
the best so far, and which settings mattered (Optuna's parameter importance, rebuilt from the
trials; only with enough finished trials). Pure: tune.json's content in, view dict and SVG text out.

Side effects: none (:func:`read` reads tune.json).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from analysis import report_plots as rp

TUNE_JSON = "tune.json"
# fANOVA over fewer finished trials than this says more about the sampler's path than the settings
MIN_IMPORTANCE_TRIALS = 5


def read(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / TUNE_JSON).read_text())
    except (OSError, ValueError):
        return None


def view(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """{rows, names, plot, importance, totals, best} for _tune.html.j2; None when the folder is no search."""
    if not doc:
        return None
    trials = list(doc.get("trials") or [])
    names = list(doc.get("space") or {})
    rows = []
    for t in trials:
        e = t.get("engine") or {}
        v = t.get("value")
        rows.append({"number": t.get("number"), "state": t.get("state"), "params": [_fmt(t["params"].get(n)) for n in names],
                     "value": None if v is None or not math.isfinite(v) else v, "bound": t.get("usd_bound"),
                     "knee": t.get("knee"), "load_unit": t.get("load_unit") or "",
                     "engine_min": (e.get("engine_s") or 0.0) / 60, "start_min": (e.get("start_s") or 0.0) / 60,
                     "tag": f"same settings as #{t['duplicate_of']}" if "duplicate_of" in t
                     else "read back from an earlier run" if t.get("reused") else "",
                     "reason": t.get("reason") or "", "folder": t.get("folder") or ""})  # fmt: skip
    imp, why = importance(doc)
    distinct = sum(1 for t in trials if "duplicate_of" not in t)
    return {"name": doc.get("name"), "seed": doc.get("seed"), "distinct": distinct, "sampler": doc.get("sampler"), "n_trials": doc.get("n_trials"),
            "objective": doc.get("objective"), "keys": doc.get("keys") or {}, "names": names, "rows": rows,
            "totals": {k: doc.get(k) for k in ("engine_minutes", "start_minutes", "launches", "new_launches", "reused_trials")},
            "best": doc.get("best"), "importance": imp, "importance_why": why, "earlier_runs": doc.get("earlier_runs") or [],
            "plot": {"id": "tune-history", "title": "Search history: $/1M goodput tokens at capacity per trial, and the best so far",
                     "caption": "x: trial number; marks at the top: infeasible (met the SLO at no load); at the bottom: refused or "
                                "failed; hollow: an upper bound (the knee was not reached).",
                     "svg": history_plot(trials)}}  # fmt: skip


def _fmt(v: Any) -> str:
    return "null" if v is None else ("true" if v is True else "false" if v is False else str(v))


def history_plot(trials: Sequence[Mapping[str, Any]], key: str = "tune-history") -> str:
    done = [t for t in trials if t.get("state") in ("complete", "infeasible", "pruned", "failed", "refused")]
    if not done:
        return rp.message_figure(key, "No finished trial yet.")
    plt = rp.pyplot()
    fig, ax = plt.subplots(figsize=(rp.WIDTH, 3.2))
    fin = [t for t in done if t.get("state") == "complete" and t.get("value") is not None]
    top = max([t["value"] for t in fin] or [1.0]) * 1.25
    for t in fin:
        hollow = t.get("usd_bound") == "at most"
        ax.plot(t["number"], t["value"], "o", color=rp.PALETTE[0], mfc="none" if hollow else rp.PALETTE[0])
    for t in done:
        if t.get("state") in ("infeasible", "pruned"):  # pruned: halved, an earlier trial certainly cheaper
            ax.plot(t["number"], top, "x", color=rp.SLO_COLOR)
        elif t.get("state") in ("failed", "refused"):
            ax.plot(t["number"], 0, "v", color="#4a5568")
    xs, best, ys = [], math.inf, []
    for t in sorted(done, key=lambda t: t["number"]):
        if t.get("state") == "complete" and t.get("value") is not None:
            best = min(best, t["value"])
        if math.isfinite(best):
            xs.append(t["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color=rp.PALETTE[2], label="best so far")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("trial")
    ax.set_ylabel("$ / 1M goodput tokens")
    ax.set_ylim(bottom=0, top=top * 1.08)
    ax.set_xticks(sorted({t["number"] for t in done}))
    ax.grid(alpha=0.3)
    rp.margins(fig, left=0.8, right=0.3, top=0.2, bottom=0.55)
    return rp.svg(fig, key)


def importance(doc: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Optuna's fANOVA importance (seeded) over the finished trials of tune.json, rebuilt as a study;
    ([], why) when there are too few of them or nothing varied."""
    import optuna
    from optuna.distributions import json_to_distribution

    dists = {n: json_to_distribution(d) for n, d in (doc.get("space") or {}).items()}
    own = [t for t in doc.get("trials") or [] if "duplicate_of" not in t
           and t.get("state") == "complete" and t.get("value") is not None]  # fmt: skip
    if len(own) < MIN_IMPORTANCE_TRIALS:
        return [], (f"parameter importance needs at least {MIN_IMPORTANCE_TRIALS} trials that met the SLO with distinct "
                    f"settings; this search has {len(own)} (run more: tune.n_trials=<n>, the finished ones are reused)")  # fmt: skip
    varied = [n for n in dists if len({json.dumps(t["params"].get(n)) for t in own}) > 1]
    if not varied:
        return [], "no setting varied among the trials that met the SLO"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for t in own:
        study.add_trial(optuna.trial.create_trial(params={n: t["params"][n] for n in dists}, distributions=dists,
                                                  value=float(t["value"])))  # fmt: skip
    imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                                                  params=varied)  # fmt: skip
    return [{"param": k, "importance": float(v)} for k, v in imp.items()], None
