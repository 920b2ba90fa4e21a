"""The HTML reports: one run, or an experiment (a results folder decided by analysis.decide).

`python -m analysis.report <results folder or run folder>` writes report.html, summary.csv and
exports/*.json into that folder (analysis.report_export):
  - a run folder (it holds run.json): the run report, from run.json, its records and the
    per-point decision the run recorded (or the folder's own decision.json when there is one);
  - a results folder: the experiment report, from decision.json and the run folders it lists.
    Without decision.json it says in one line how to get one (the SLO and the prices are a choice,
    so the report does not pick defaults silently) and exits 2.
The same happens at the end of each run (experiments.postrun.after_artifacts -> write_run_report)
and of each sweep (experiments.sweeps.callback runs this command after analysis.decide).

Both reports are one self-contained file: CSS, the table-sorting script and every figure (inline
SVG, analysis.report_plots) are inside it; it makes no network request and works with scripts off.
Jinja2 autoescaping is on: text from datasets, prompts, engine logs and configs shows as text.
Templates: analysis/templates/ (_base, _macros, _table, _validity, _provenance shared by
report.html.j2 and experiment.html.j2). docs/report.md says where every number comes from.

Exit codes: 0 written, 2 bad input (one line on stderr). Side effects: render_* are pure; write_*
and main write the files above.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import report_data as rd
from analysis import report_plots as rp
from analysis import report_tune
from analysis.notes import note_text
from analysis.points import detail_key
from analysis.records.atomic import write_text_atomic
from analysis.records.run import load_unit

TEMPLATES = Path(__file__).resolve().parent / "templates"
EXIT_BAD_INPUT = 2
USAGE = "usage: python -m analysis.report <results folder or run folder>"


def fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{float(v):,.{digits}f}"


class ReportError(ValueError):
    """The folder cannot be reported on (one clear line)."""


def _env() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["note_text"] = note_text  # notes are Note dicts (v2) or free text (v1 run.json)
    env.globals.update(fmt=fmt, note_text=note_text, usd=rd.usd, usd_ci=rd.usd_ci, generator="analysis.report")
    env.filters["g"] = lambda v: "—" if v is None else f"{float(v):g}"
    return env


def _point_label(summary: dict[str, Any], p: dict[str, Any]) -> str:
    kind = summary["config"]["traffic"]["kind"]
    unit = load_unit(kind)
    value = p.get("load_value", p.get("value"))  # run.json v2 names it load_value (v1: value)
    return f"#{p['index']} · {value:g} {unit}"


def _plot(pid: str, title: str, caption: str, svg: str) -> dict[str, str]:
    return {"id": pid, "title": title, "caption": caption, "svg": svg}


# -- the run report ------------------------------------------------------------------------------
def run_plots(run: rd.RunData, rows: Sequence[Mapping[str, Any]], slo: Mapping[str, Any], labels: Mapping[int, str],
              knee: Mapping[str, Any]) -> list[dict[str, str]]:  # fmt: skip
    """Latency against load, the latency distributions per load point, and the aligned timeline."""
    s, req = run.summary, run.requests
    limits = rd.slo_limits(slo)
    vid = str(s.get("variant_id") or "run")
    colors = {vid: rp.PALETTE[0]}
    out = [_plot("latency-load", "Latency against offered load",
                 "p50 and p99 per load point; red: the SLO limits; ring: the highest SLO-feasible load.",
                 rp.latency_load_plot([{**r, "variant_id": vid} for r in rows], colors, limits,
                                      {vid: {"knee_load": knee.get("knee_load")}}, key="latency-load"))]  # fmt: skip
    series: dict[str, dict[str, np.ndarray]] = {}
    if len(req):
        for i, lbl in labels.items():
            mask = req["load_point"] == i
            series[lbl] = {m: rd.ok_values(req, mask, m) for m in ("ttft_ms", "tpot_ms", "e2e_ms")}
    out.append(_plot("distributions", "TTFT, TPOT and E2E distributions per load point",
                     "empirical CDFs of the measure phase's successful requests; red: the SLO limit.",
                     rp.distributions_plot(series, {}, limits, (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")),
                                           key="distributions")))  # fmt: skip
    if sess := rd.turn_series_of_run(s, labels, rp.PALETTE):
        out.append(_plot("turns", "TTFT against the turn of a conversation", rp.TURNS_CAPTION,
                         rp.turn_plot(sess, limits.get("ttft_ms"), key="turns")))  # fmt: skip
    out.append(_plot("timeline", "Timeline: requests, resources and the engine on one time axis",
                     "per-request TTFT; " + ("GPU power, utilisation and memory" if (s.get("telemetry") or {}).get("sampler") == "nvml"
                                             else "engine CPU and RSS") + "; the engine's running and waiting requests and "
                     "KV-cache use from its /metrics; shaded: load points.", _timeline(run, "timeline")))  # fmt: skip
    return out


def _timeline(run: rd.RunData, key: str, title: str = "") -> str:
    t0 = rd.timeline_origin(run.summary, run.requests)
    if t0 is None:
        return rp.message_figure(key, "No request was sent: no timeline.")
    sampler = (run.summary.get("telemetry") or {}).get("sampler")
    return rp.timeline_plot(run.requests, run.telemetry, run.engine, rd.point_windows(run.summary), t0, sampler, key=key,
                            title=title)  # fmt: skip


def run_view(run: rd.RunData, decision: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything report.html.j2 shows beyond run.json itself."""
    s = run.summary
    rows = run_view_rows(run, decision)
    decided = any(r.get("verdict") for r in rows)
    knee = rd.run_knee(rows)
    slo = (decision or {}).get("config", {}).get("slo") or (s.get("config") or {}).get("slo") or {}
    pts = sorted(s.get("load_points") or [], key=lambda p: p["index"])
    labels = {p["index"]: _point_label(s, p) for p in pts} if s.get("config", {}).get("traffic") else {}
    dec0 = next(((p.get("summary") or {}).get("decision") for p in pts if (p.get("summary") or {}).get("decision")), None) or {}
    pricing = ((decision or {}).get("config") or {}).get("pricing", {}).get("name") or dec0.get("pricing")

    def lbl(r: Mapping[str, Any]) -> str:
        return rd.load_label(r.get("load_value"), r.get("load_unit") or "")

    validity = rd.run_validity(s, run.run_id) + rd.row_validity(rows, with_variant=False)
    return {
        "rows": rows, "decided": decided, "knee": knee, "slo_text": rd.slo_text(slo), "slo_name": slo.get("name"),
        "pricing": pricing, "label": rd.variant_label_of(s), "options": rd.engine_options(s), "folder": str(run.path),
        "meets": [lbl(r) for r in rows if r.get("feasible") and r.get("verdict") != "invalid"],
        "misses": [lbl(r) for r in rows if r.get("feasible") is False and r.get("verdict") != "invalid"],
        "invalid": [lbl(r) for r in rows if r.get("verdict") == "invalid"],
        "plots": run_plots(run, rows, slo, labels, knee) if pts else [],
        "validity": rd.sort_validity(validity), "provenance": [rd.provenance(run, s)],
        "better": rd.comparison_directions(), "best": {},  # one variant: no operating points to compare
    }  # fmt: skip


def render_run(run: rd.RunData, decision: Mapping[str, Any] | None = None) -> str:
    """HTML of the run report for a loaded run folder."""
    s = run.summary
    points = sorted(s.get("load_points") or [], key=lambda p: p["index"])
    for p in points:
        p["label"] = _point_label(s, p)
    tel_summary = ((s.get("telemetry") or {}).get("summary_during_load")) or None
    return _env().get_template("report.html.j2").render(
        s=s, points=points, telemetry=tel_summary, v=run_view(run, decision), has_decision=decision is not None
    )


def render_report(summary: dict[str, Any], requests: pd.DataFrame, telemetry: pd.DataFrame | None, *,
                  engine_metrics: pd.DataFrame | None = None, run_dir: Path | None = None) -> str:  # fmt: skip
    """HTML for one run from its summary (run.json as a dict) and frames (`requests` with the derived
    columns, analysis.metrics.derive). `engine_metrics`: raw /metrics rows; `run_dir`: where the
    workload and engine log are read from (None: not shown)."""
    eng = rd.engine_concepts(engine_metrics, str(((summary.get("config") or {}).get("engine") or {}).get("name") or ""))
    run = rd.RunData(path=Path(run_dir) if run_dir else Path(str(summary.get("run_id") or "run")), summary=summary,
                     requests=requests, telemetry=telemetry if telemetry is not None and not telemetry.empty else None,
                     engine=eng)  # fmt: skip
    if run_dir is not None:
        full = rd.load_run(Path(run_dir), summary=summary, requests=requests, telemetry=telemetry,
                           engine_metrics=engine_metrics if engine_metrics is not None else pd.DataFrame())  # fmt: skip
        run.prompts, run.replies, run.log_tail = full.prompts, full.replies, full.log_tail
    return render_run(run)


# -- exports -------------------------------------------------------------------------------------
def point_exports(run: rd.RunData, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """`<run_id>_point<index>` -> the vLLM-format JSON of each finished point of the run."""
    from analysis.report_export import vllm_point_json

    out: dict[str, dict[str, Any]] = {}
    req = run.requests
    if not len(req):
        return out
    by_key = {(str(r.get("point_id")), int(r.get("repetition") or 0)): r for r in rows if r.get("run_id") == run.run_id}
    for lp in run.summary.get("load_points") or []:
        if lp.get("interrupted") or lp.get("aborted"):
            continue
        pr = req[req["load_point"] == lp["index"]]
        if pr.empty:
            continue
        r = by_key.get((str(lp.get("point_id")), int(lp.get("repetition") or 0))) or {}
        ident = {"run_id": run.run_id, "variant_id": run.summary.get("variant_id"),
                 "variant_label": r.get("variant_label") or rd.variant_label_of(run.summary),
                 "point_id": lp.get("point_id"), "repetition": lp.get("repetition"), "index": lp["index"],
                 "load_value": lp.get("load_value", lp.get("value")), "load_unit": lp.get("load_unit")}  # fmt: skip
        out[f"{run.run_id}_point{lp['index']}"] = vllm_point_json(pr, summary=lp.get("summary") or {}, run=run.summary, ident=ident)
    return out


def write_run_report(run_dir: Path, *, summary: dict[str, Any] | None = None, requests: pd.DataFrame | None = None,
                     telemetry: pd.DataFrame | None = None, engine_metrics: pd.DataFrame | None = None) -> Path:  # fmt: skip
    """report.html, summary.csv and exports/ of one run folder (frames in memory are used as given)."""
    from analysis.report_export import write_exports

    run_dir = Path(run_dir)
    run = rd.load_run(run_dir, summary=summary, requests=requests, telemetry=telemetry, engine_metrics=engine_metrics)
    decision = _read_decision(run_dir / "decision.json") if (run_dir / "decision.json").is_file() else None
    html = render_run(run, decision)
    write_text_atomic(run_dir / "report.html", html)
    rows = run_view_rows(run, decision)
    write_exports(run_dir, rows, point_exports(run, rows))
    return run_dir / "report.html"


def run_view_rows(run: rd.RunData, decision: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    rows = rd.rows_from_decision(decision, {run.run_id: run.summary}) if decision else rd.rows_from_run(run.summary)
    knee = rd.run_knee(rows)
    for r in rows:
        r["is_operating_point"] = knee.get("row") is r  # the highest SLO-feasible load of the run
        r["is_chosen"] = False
    return rows


# -- the experiment report -----------------------------------------------------------------------
def _read_decision(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable decision.json: {e}") from e
    if d.get("kind") != "servelab.decision" or d.get("schema_version") != 1:
        raise ReportError(f"{path}: not a servelab decision.json of schema 1 (kind={d.get('kind')!r}, "
                          f"schema_version={d.get('schema_version')!r}): re-run python -m analysis.decide")  # fmt: skip
    return d


def _resolve(recorded: str, folder: Path, decided_at: str) -> Path:
    """A run folder named in decision.json: as recorded, else at the same place relative to the
    results folder (the folder was moved or copied after deciding)."""
    p = Path(recorded)
    if (p / "run.json").is_file():
        return p
    try:
        rel = p.relative_to(Path(decided_at))
    except ValueError:
        rel = Path(*p.parts[-2:])
    return folder / rel


def operating_points(decision: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """variant_id -> (point_id, why): the selection's operating point, else the knee point, else the
    lowest valid load (where it already misses the SLO)."""
    sel = decision.get("selection") or {}
    ranked = {c["variant_id"]: c["point_id"] for c in sel.get("ranked") or []}
    knees = {k["variant_id"]: k for k in decision.get("knees") or []}
    out = {}
    for vid in dict.fromkeys(r["variant_id"] for r in rows):
        mine = sorted([r for r in rows if r["variant_id"] == vid], key=lambda r: float(r["load_value"]))
        if vid in ranked:
            out[vid] = (ranked[vid], "operating point")
        elif (knees.get(vid) or {}).get("point_id"):
            out[vid] = (knees[vid]["point_id"], "knee")
        else:
            valid = [r for r in mine if r.get("verdict") != "invalid"] or mine
            out[vid] = (valid[0]["point_id"], "lowest load (misses the SLO)" if valid[0].get("verdict") != "invalid" else "invalid")
    return out


def _confidence(decision: Mapping[str, Any], labels: Mapping[str, str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    sel = decision.get("selection") or {}
    ch, ru = sel.get("chosen"), sel.get("runner_up")
    out = []
    if ch is None:
        return ["Nothing to be sure about: no variant meets the SLO at any valid measured load."]
    iv = decision.get("intervals") or {}
    at_cap = sel.get("basis") == "knee" and ch.get("usd_bound") in ("estimate", "at most")
    what = ("the cost at capacity (price / goodput tok/s at the SLO crossing)" if at_cap and ch.get("usd_bound") == "estimate"
            else "at most the cost at the highest load measured (knee not reached)" if at_cap
            else "the operating point's cost")  # fmt: skip
    out.append(f"Cost interval {rd.usd_ci(ch['usd'], ch.get('usd_lo'), ch.get('usd_hi'))} per 1M goodput tokens, "
               f"{what}: 95 % seeded time-block bootstrap"
               + (f"; it includes {'; '.join(iv['includes'])}" if iv.get("includes") else "")
               + (f"; it does not include {'; '.join(iv['excludes'])}" if iv.get("excludes") else "") + ".")  # fmt: skip
    if ch.get("capacity_rps") is not None and at_cap:
        lo, hi = ch.get("capacity_rps_lo"), ch.get("capacity_rps_hi")
        out.append(f"Capacity under the SLO {ch['capacity_rps']:.3g} req/s"
                   + (f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else " (no interval)")
                   + (" at least: the knee was not reached" if ch.get("usd_bound") == "at most" else "")
                   + ": goodput at the SLO crossing, interval from the same joint replicates.")  # fmt: skip
    if ru is not None:
        p = next((x.get("p_a_cheaper") for x in sel.get("p_cheaper") or [] if x.get("b") == ru["variant_id"]), None)
        if sel.get("tie") and ru["variant_id"] in (sel.get("tied") or []):
            out.append(f"Tied with {ru['variant_label']}: the intervals overlap" + (f"; P(chosen cheaper) = {p:.2f}" if p is not None else "") + ".")
        else:
            out.append(f"Cheaper than the runner-up {ru['variant_label']} with non-overlapping intervals"
                       + (f"; P(chosen cheaper) = {p:.2f}" if p is not None else "") + ".")  # fmt: skip
    sens = decision.get("sensitivity") or {}
    flips = [r for r in sens.get("rows") or [] if r.get("flips")]
    for r in flips:
        sides = [f"{r[f'{s}_setting']} → {labels.get(r.get(f'chosen_{s}') or '', 'none')}" for s in ("low", "high")
                 if r.get(f"chosen_{s}") != r.get("baseline")]  # fmt: skip
        out.append(f"Sensitive to {r['input']}: the choice changes at " + ", ".join(sides) + ".")
    if not flips:
        tested = ", ".join(r["input"] for r in sens.get("rows") or []) or "nothing"
        out.append(f"No tested input flips the choice (tested: {tested}).")
    for n in sens.get("not_evaluated") or []:
        out.append(f"Not evaluated: {n}.")
    knee = next((k for k in decision.get("knees") or [] if k["variant_id"] == ch["variant_id"]), None)
    if knee and knee.get("status") == "all_feasible":
        out.append("The chosen variant met the SLO at every load measured: its knee was not reached, so its capacity per "
                   "replica is at least what is shown and its cost at the knee at most.")  # fmt: skip
    op = next((r for r in rows if r["variant_id"] == ch["variant_id"] and r["point_id"] == ch["point_id"]), None)
    if op is not None:
        warns = [note_text(v) for v in op.get("verdict_reasons") or [] if not isinstance(v, dict) or v.get("severity") == "warn"]
        if warns:
            out.append("The chosen point's measurement is flagged: " + "; ".join(warns) + ".")
    return out


def _prices(decision: Mapping[str, Any], gpus_used: set[str]) -> list[dict[str, str]]:
    p = (decision.get("config") or {}).get("pricing") or {}
    out = [{"item": f"price book {p.get('name')} ({p.get('provider', '')}), tier {p.get('tier')}",
            "value": f"${p['usd_per_hour']:g}/h override" if p.get("usd_per_hour") is not None else "per GPU below",
            "source": str(p.get("source") or ""), "as_of": str(p.get("as_of") or "")}]  # fmt: skip
    for g, e in sorted((p.get("gpus") or {}).items()):
        if g not in gpus_used:
            continue
        tiers = ", ".join(f"{t} ${v:g}/h" for t, v in e.items() if t in ("on_demand", "spot", "reserved_1y", "reserved_3y", "owned")
                          and v is not None)  # fmt: skip
        out.append({"item": f"{g} ($ per {'instance' if g == 'cpu' else 'GPU'}-hour)", "value": tiers or "—",
                    "source": str(e.get("source") or ""), "as_of": str(e.get("as_of") or "")})  # fmt: skip
    out.append({"item": "electricity", "value": f"${p.get('usd_per_kwh')}/kWh × PUE {p.get('pue')}"
                + (" (included in the hourly price)" if p.get("energy_included") else " (added to the cost)"),
                "source": f"{p.get('usd_per_kwh_source', '')}; PUE: {p.get('pue_source', '')}", "as_of": str(p.get("as_of") or "")})  # fmt: skip
    if p.get("spot_interruptions_per_hour") is not None:
        out.append({"item": "spot interruptions", "value": f"{p['spot_interruptions_per_hour']}/h",
                    "source": str(p.get("spot_interruptions_source") or ""), "as_of": str(p.get("as_of") or "")})  # fmt: skip
    return out


def _capacity(decision: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    cap = decision.get("capacity")
    if not cap:
        return {"plans": [], "missing": f"no demand was given. Plan one with `python -m analysis.decide {folder} "
                "capacity.peak_rps=<req/s>` (or capacity=example for a 24-hour profile), then render this report again."}  # fmt: skip
    d = cap.get("demand") or {}
    prof = d.get("profile_rps") or []
    txt = f"peak {d.get('peak_rps', 0):g} req/s ({d.get('source')})"
    if len(prof) > 1:
        txt += f", a profile of {len(prof)} bins of {d.get('bin_s', 0):g} s (mean {np.mean(prof):.3g} req/s)"
    return {**cap, "demand_text": txt}


def experiment_view(folder: Path, decision: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(view for experiment.html.j2, comparison rows, vLLM-format exports) of a decided results folder."""
    from analysis.records.layout import find_runs
    from analysis.records.run import read_run_json

    folder = Path(folder)
    summaries: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    validity: list[dict[str, str]] = []
    for r in decision.get("runs") or []:
        p = _resolve(str(r.get("path", "")), folder, str(decision.get("results") or folder))
        try:
            summaries[r["run_id"]] = read_run_json(p / "run.json")
            paths[r["run_id"]] = p
        except (OSError, ValueError) as e:
            validity.append({"where": str(r.get("run_id")), "severity": "warn", "message": f"run folder not readable: {e}"})
    found = {p.name for p in find_runs(folder)} if folder.is_dir() else set()
    listed = {paths[k].name for k in paths}
    if found - listed:
        validity.append({"where": "decision.json", "severity": "warn", "message": f"{len(found - listed)} run folder(s) below "
                         f"{folder} are newer than decision.json and not in it: re-run python -m analysis.decide {folder}"})  # fmt: skip
    rows = rd.rows_from_decision(decision, summaries)
    sel = decision.get("selection") or {}
    ch = sel.get("chosen")
    ops = operating_points(decision, rows)
    ranked = {c["variant_id"]: c["point_id"] for c in sel.get("ranked") or []}
    for r in rows:
        r["is_operating_point"] = ranked.get(r["variant_id"]) == r["point_id"]  # candidates only
        r["is_chosen"] = bool(ch and r["variant_id"] == ch["variant_id"] and r["point_id"] == ch["point_id"])
    order = [c["variant_id"] for c in sel.get("ranked") or []] + [r["variant_id"] for r in rows]
    colors = rp.color_map(order)
    labels = {r["variant_id"]: r["variant_label"] for r in rows}
    slo = (decision.get("config") or {}).get("slo") or {}
    limits = rd.slo_limits(slo)

    # per run: the timeline, the operating point's latencies, the exports (one run in memory at a time)
    timelines, series, exports = [], {}, {}
    for i, run_rec in enumerate(decision.get("runs") or []):
        rid = run_rec["run_id"]
        if rid not in paths or run_rec.get("skipped"):
            continue
        run = rd.load_run(paths[rid], summary=summaries[rid])
        vid = run_rec["variant_id"]
        lab = labels.get(vid, run_rec.get("variant_label") or rid)
        timelines.append(_plot(f"timeline-{i}", f"Timeline of {rid}", f"{lab}: per-request TTFT, resources and the engine's "
                               "queue on one time axis; shaded: load points.", _timeline(run, f"timeline-{i}")))  # fmt: skip
        pid, why = ops.get(vid, (None, ""))
        if pid is not None and len(run.requests):
            r0 = next((r for r in rows if r["variant_id"] == vid and r["point_id"] == pid), None)
            key = f"{lab} @ {rd.load_label(r0['load_value'], r0['load_unit'])}" + (f" ({why})" if why != "operating point" else "") \
                if r0 else lab  # fmt: skip
            mask = run.requests["point_id"] == pid
            s = series.setdefault(key, {"ttft_ms": [], "tpot_ms": [], "_vid": vid})
            for m in ("ttft_ms", "tpot_ms"):
                s[m].append(rd.ok_values(run.requests, mask, m))
        exports.update(point_exports(run, rows))
        del run
    dist = {k: {m: np.concatenate(v[m]) if v[m] else np.zeros(0) for m in ("ttft_ms", "tpot_ms")} for k, v in series.items()}
    dist_colors = {k: colors.get(v["_vid"], rp.PALETTE[0]) for k, v in series.items()}

    points_by_key = {(p["variant_id"], p["point_id"]): p for p in decision.get("points") or []}
    prices = []
    for g, unit_price in sorted({(p["gpu_name"], (p.get("usd_per_hour") or 0) / max(int(p.get("gpu_count") or 0), 1))
                                 for p in decision.get("points") or [] if p.get("usd_per_hour")}):  # fmt: skip
        prices.append((g, unit_price))
    if ch is not None:
        cp = points_by_key.get((ch["variant_id"], ch["point_id"])) or {}
        prices.sort(key=lambda gp: gp[0] != cp.get("gpu_name"))
    bars = []
    for vid, (pid, _why) in ops.items():
        row = next((r for r in rows if r["variant_id"] == vid and r["point_id"] == pid), None)
        det = (decision.get("point_details") or {}).get(detail_key(row["run_id"], pid, row.get("repetition")), {}) if row else {}
        cost = det.get("cost") or {}
        if not cost:
            continue
        en = cost.get("energy") or {}
        bars.append({"variant_id": vid, "label": f"{labels[vid]} @ {rd.load_label(row['load_value'], row['load_unit'])}",
                     "hardware": cost.get("usd_per_1m_output_hardware"), "energy": en.get("usd_energy_per_1m_output"),
                     "energy_added": bool(en.get("added_to_cost"))})  # fmt: skip
    capacity = _capacity(decision, folder)
    knees = {k["variant_id"]: k for k in decision.get("knees") or []}
    sens = decision.get("sensitivity") or {}
    turns = rd.turn_series_at(summaries, ops, rows, labels, colors)  # multi-turn traffic only
    plots = [
        _plot("pareto", "Pareto frontier: throughput per GPU against throughput per user",
              "every valid point, by variant; black line: the frontier (decision.json pareto); dashed: iso-cost lines "
              "($/1M output tokens at the book's price).",
              rp.pareto_plot(rows, decision.get("pareto") or [], colors, prices,
                             (ch["variant_id"], ch["point_id"]) if ch else None)),
        _plot("latency-load", "Latency against offered load, per variant",
              "p50 dashed, p99 solid; red: the SLO limits; ring: each variant's knee (decision.json knees); dotted: "
              "the interpolated SLO crossing.", rp.latency_load_plot(rows, colors, limits, knees)),
        _plot("distributions", "TTFT and TPOT distributions per variant, at its operating point",
              "empirical CDFs of the measure phase's successful requests (all repetitions); red: the SLO limit.",
              rp.distributions_plot(dist, dist_colors, limits)),
        *timelines,
        *([_plot("turns", "TTFT against the turn of a conversation, per variant at its operating point", rp.TURNS_CAPTION,
                 rp.turn_plot(turns, limits.get("ttft_ms"), key="turns"))] if turns else []),  # fmt: skip
        _plot("cost", "Cost breakdown", "left: $/1M output tokens at each operating point, billed GPU-hours against "
              "energy; right: the capacity plan's monthly cost of each purchasing mix.",
              rp.cost_plot(bars, capacity.get("plans") or [], colors, no_plan="no capacity plan in decision.json:\nsee the capacity section")),
        _plot("tornado", "Sensitivity (tornado)", "the chosen variant's $/1M at each input's low and high setting, and "
              "who would be chosen there (decision.json sensitivity).",
              rp.tornado_plot(sens.get("rows") or [], labels, ch["usd"] if ch else None)),
    ]  # fmt: skip
    rec = _recommendation(decision, summaries, rows, labels, capacity)
    for rid, s in summaries.items():
        validity += rd.run_validity(s, f"{labels[s['variant_id']]} · {rid}" if s.get("variant_id") in labels else rid)
    validity += rd.row_validity(rows, with_variant=True)
    for p in decision.get("problems") or []:
        validity.append({"where": "decision", "severity": "warn", "message": str(p)})
    for k in decision.get("knees") or []:
        for n in k.get("notes") or []:
            validity.append({"where": f"{k['variant_label']} · knee", "severity": "info", "message": str(n)})
    for e in sel.get("excluded") or []:
        validity.append({"where": e["variant_label"], "severity": "excluded",
                         "message": "; ".join(f"{x['kind']}: {x['message']}" for x in e.get("reasons") or [])})  # fmt: skip
    runs_by_id = {r["run_id"]: r for r in decision.get("runs") or []}
    prov = [rd.provenance(None, summaries.get(rid, {"run_id": rid}), runs_by_id[rid].get("variant_label") or "",
                          runs_by_id[rid].get("skipped")) for rid in runs_by_id]  # fmt: skip
    for p, rid in zip(prov, runs_by_id, strict=True):
        if rid in paths:
            p["path"] = str(paths[rid])
            p["prompts"] = rd.prompts_of(paths[rid])
            p["replies"] = rd.replies_of(paths[rid])
            p["log_tail"] = rd.log_tail(paths[rid] / "engine.log")
    pricing = (decision.get("config") or {}).get("pricing") or {}
    better = rd.comparison_directions()  # which side of each table column is better (the metric catalog)
    view = {
        "experiment": folder.resolve().name, "folder": str(folder), "created": decision.get("created_at_utc"),
        "n_variants": len(labels), "n_runs": len(decision.get("runs") or []), "rows": rows, "rec": rec,
        "slo_text": rd.slo_text(slo), "pricing_text": f"{pricing.get('name')} ({pricing.get('tier')} tier; "
        f"{pricing.get('source') or 'no source'}, as of {pricing.get('as_of') or '?'})",
        "plots": plots, "capacity": capacity, "formulas": decision.get("formulas") or {},
        "assumptions": decision.get("assumptions") or [], "prices": _prices(decision, {r["gpu_name"] for r in rows}),
        "validity": rd.sort_validity(validity), "provenance": prov,
        "better": better, "best": rd.best_cells(rows, better),
    }  # fmt: skip
    view["whatif"] = _whatif_view(decision, folder)
    view["tune"] = report_tune.view(report_tune.read(folder))  # a search's history (tune.json), None otherwise
    view["quality"] = decision.get("quality") or {"applied": False, "why": "decision.json has no quality section (decided before the gate existed)"}
    return view, rows, exports


def _whatif_view(decision: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The what-if section (analysis.report_whatif; decision.json whatif)."""
    from analysis import report_whatif

    return report_whatif.view(decision, str(folder))


def _recommendation(decision: Mapping[str, Any], summaries: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                    labels: Mapping[str, str], capacity: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    sel = decision.get("selection") or {}
    ch, ru = sel.get("chosen"), sel.get("runner_up")
    out: dict[str, Any] = {"chosen": None, "runner_up": ru, "excluded": [], "confidence": _confidence(decision, labels, rows),
                           "headline": sel.get("headline"), "tie": bool(sel.get("tie"))}  # fmt: skip
    if sel.get("basis") == "knee" or sel.get("basis") is None:
        out["basis_text"] = ("each variant at its capacity under the SLO (the knee): the cost at capacity, "
                             "measured at the highest load that still meets the SLO"
                             + (f"; the chosen one at {ch['load_value']:g} {ch['load_unit']} per replica" if ch else ""))  # fmt: skip
    else:
        out["basis_text"] = f"the lowest measured point at {sel['basis'].removeprefix('load ')} per replica"
    if ch is not None:
        run = next((s for s in summaries.values() if s.get("variant_id") == ch["variant_id"] and s.get("engine")), None) or \
            next((s for s in summaries.values() if s.get("variant_id") == ch["variant_id"]), {})  # fmt: skip
        eng = run.get("engine") or {}
        cfg = run.get("config") or {}
        plan = next((p for p in capacity.get("plans") or [] if p["variant_id"] == ch["variant_id"]), None)
        if plan:
            hw = f"{plan['gpus_peak']} GPUs" if plan["gpus_per_replica"] else f"{plan['replicas_peak']} hosts"
            replicas = (f"{plan['replicas_peak']} replicas ({hw}) for a peak of {plan['peak_rps']:g} req/s, at "
                        f"μ = {plan['mu_rps']:.3g} req/s per replica and ρ max {plan['rho_max']:g}")  # fmt: skip
        else:
            replicas = "no capacity plan (see the capacity section)"
        launch = {x.get("variant_id"): x.get("launch_fields") or {} for x in summaries.values() if x.get("variant_id")}
        out["chosen"] = {**ch, "differs": rd.differing_settings(launch).get(ch["variant_id"], []) if len(launch) > 1 else [],
                         "engine": " ".join(str(x) for x in (eng.get("name") or (cfg.get("engine") or {}).get("name"),
                                                                      eng.get("dist"), eng.get("version")) if x),
                         "quant": (cfg.get("quant") or {}).get("name"), "effective_quant": eng.get("effective_quant"),
                         "options": rd.engine_options(run), "gpu": rd.gpu_text(run), "replicas": replicas}  # fmt: skip
    if ru is not None:
        out["p_cheaper"] = next((x.get("p_a_cheaper") for x in sel.get("p_cheaper") or [] if x.get("b") == ru["variant_id"]), None)
        out["runner_up_tied"] = bool(sel.get("tie") and ru["variant_id"] in (sel.get("tied") or []))
    else:
        out["p_cheaper"], out["runner_up_tied"] = None, False
    out["tied_labels"] = [labels.get(v, v) for v in sel.get("tied") or []]
    for e in sel.get("excluded") or []:
        first = (e.get("reasons") or [{}])[0]
        more = len(e.get("reasons") or []) - 1
        out["excluded"].append({"label": e["variant_label"], "line": f"{first.get('kind', '?')}: {first.get('message', '')}"
                                + (f" (+{more} more reasons, in Validity)" if more > 0 else "")})  # fmt: skip
    return out


def render_experiment(folder: Path, decision: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(HTML, comparison rows, exports) of the experiment report."""
    view, rows, exports = experiment_view(folder, decision)
    html = _env().get_template("experiment.html.j2").render(v=view, has_decision=True)
    return html, rows, exports


def write_experiment_report(folder: Path) -> Path:
    """report.html, summary.csv and exports/ of a decided results folder (ReportError: bad input)."""
    from analysis.report_export import write_exports

    folder = Path(folder)
    path = folder / "decision.json"
    if not path.is_file():
        raise ReportError(f"no decision.json in {folder}: run `python -m analysis.decide {folder} [slo=... pricing=...]` "
                          f"first (it picks the SLO and the prices), then this command again")  # fmt: skip
    html, rows, exports = render_experiment(folder, _read_decision(path))
    write_text_atomic(folder / "report.html", html)
    write_exports(folder, rows, exports)
    return folder / "report.html"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE + "\n" + (__doc__ or ""))
        return 0 if args else EXIT_BAD_INPUT
    if len(args) != 1:
        print(f"report: one folder, got {len(args)} arguments ({USAGE})", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder = Path(args[0])
    try:
        if not folder.is_dir():
            raise ReportError(f"{folder} is not a folder")
        if (folder / "run.json").is_file():
            out = write_run_report(folder)
        else:
            from analysis.records.layout import find_runs

            if not (folder / "decision.json").is_file() and not find_runs(folder):
                raise ReportError(f"no runs in {folder}: no run.json below it")
            out = write_experiment_report(folder)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    n = len(list((out.parent / "exports").glob("*.json")))
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB), {out.parent / 'summary.csv'}, {out.parent / 'exports'}/ ({n} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
