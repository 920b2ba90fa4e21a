"""The what-if section of decision.json: gathers measured inputs from the decision and its run
folders, then calls the pure math in analysis.whatif (formulas there and in docs/whatif.md).

`evaluate(cfg, decision, runs)` returns the `whatif` dict: settings, the volume used, one row
per technique (or "not evaluated: <why, what to run>"), the semantic-cache curve over the
thresholds, the purchasing policies' monthly $, formulas, assumptions and sources.

Side effects: reads workload.parquet and requests.parquet of the runs it uses; writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis import whatif as wf
from analysis.points import as_float as _f

FORMULAS = {
    "prefix_hit_rate": "increase(vllm:prefix_cache_hits_total) / increase(vllm:prefix_cache_queries_total) over the measure window (tokens)",
    "prefix_saved": "($/1M off - $/1M on) x output tokens per month / 1e6",
    "semantic_cache": "cos(v_j, v_k) = v_j . v_k (TF-IDF rows L2-normalised); hit when max over live entries >= threshold; "
                      "entries expire ttl_s after insertion; a miss inserts its prompt",
    "semantic_saved": "hit_rate x requests per month x measured $ per request",
    "usd_per_request": "$/1M output tokens x mean output tokens per request / 1e6 at the variant's operating point",
    "cascade": "e = share with prompt tokens > threshold; c = (1 - e) c_small + e c_large; reduction = 1 - c / c_large; "
               "E2E = (1 - e) E2E_small + e E2E_large + router ms",
    "policies": "saved = monthly $ static_peak - monthly $ policy (analysis.capacity); spot replica-minutes lost = "
                "interruptions per month x restart s / 60",
    "requests_per_month": "whatif.requests_per_month, else mean(capacity profile req/s) x hours_per_month x 3600",
}  # fmt: skip
ASSUMPTIONS = [
    "Every $ comes from a measured point's $/1M at the decision's price book; volumes from the capacity demand or "
    "whatif.requests_per_month.",
    "A variant's $ per request is its measured mean at its operating point, whatever requests a router or cache sends it.",
    "Semantic cache: the cached answer is ready at the miss's arrival; hits insert and refresh nothing; the lookup runs on a "
    "host already paid for (not billed); a false hit serves another question's answer (a quality cost, not a $ one).",
    "Cascade quality: only when decision.json carries a per-variant quality entry (the quality gate); otherwise not assessed.",
]


def _points(decision: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(decision.get("points") or [])


def operating_point(decision: Mapping[str, Any], variant_id: str) -> dict[str, Any] | None:
    """The variant's selection operating point (candidates), else its highest valid measured load."""
    pts = [p for p in _points(decision) if p["variant_id"] == variant_id]
    if not pts:
        return None
    ranked = {c["variant_id"]: c for c in (decision.get("selection") or {}).get("ranked") or []}
    if variant_id in ranked:
        pid = ranked[variant_id]["point_id"]
        hit = [p for p in pts if p["point_id"] == pid]
        if hit:
            return {**hit[0], "_basis": "operating point (selection)", "_usd_at_slo": ranked[variant_id].get("usd")}
    valid = [p for p in pts if p.get("verdict") != "invalid"] or pts
    p = max(valid, key=lambda r: (r.get("load_value") or 0, -(r.get("repetition") or 0)))
    return {**p, "_basis": "highest measured load (not an SLO candidate)", "_usd_at_slo": None}


def _label(decision: Mapping[str, Any], variant_id: str) -> str:
    return next((r["variant_label"] for r in decision.get("runs") or [] if r.get("variant_id") == variant_id), variant_id)


def _lp_summary(runs_by_id: Mapping[str, Any], run_id: str, point_id: str) -> dict[str, Any]:
    run = runs_by_id.get(run_id)
    if run is None:
        return {}
    return next(((lp.get("summary") or {}) for lp in run.summary.get("load_points") or [] if str(lp.get("point_id")) == point_id),
                {})  # fmt: skip


def _p50(s: Mapping[str, Any], metric: str) -> float | None:
    return _f((s.get(metric) or {}).get("p50"))


def _baseline_variant(cfg_w: Any, decision: Mapping[str, Any]) -> str | None:
    if cfg_w.variant:
        return resolve_variant(decision, cfg_w.variant, "whatif.variant")
    ch = (decision.get("selection") or {}).get("chosen")
    if ch:
        return ch["variant_id"]
    ranked = (decision.get("selection") or {}).get("ranked") or []
    if ranked:
        return ranked[0]["variant_id"]
    pts = _points(decision)
    return pts[0]["variant_id"] if pts else None


def resolve_variant(decision: Mapping[str, Any], name: str, key: str) -> str:
    """A variant id from its id, label or a unique label prefix; BadInput-style ValueError otherwise."""
    runs = [r for r in decision.get("runs") or [] if not r.get("skipped")]
    ids = {r["variant_id"]: r["variant_label"] for r in runs}
    if name in ids:
        return name
    exact = [v for v, lbl in ids.items() if lbl == name]
    pref = [v for v, lbl in ids.items() if lbl.startswith(name) or v.startswith(name)]
    found = exact or pref
    if len(set(found)) != 1:
        raise ValueError(f"{key}={name}: {'ambiguous' if found else 'no such variant'}; the variants are: "
                         + ", ".join(sorted(set(ids.values()))))  # fmt: skip
    return found[0]


def _volume(cfg: Any, decision: Mapping[str, Any]) -> tuple[float | None, str]:
    w = cfg.whatif
    if w.requests_per_month is not None:
        return float(w.requests_per_month), f"whatif.requests_per_month={w.requests_per_month:g} (stated)"
    cap = decision.get("capacity") or {}
    dem = cap.get("demand")
    if dem and dem.get("profile_rps"):
        h = float(cfg.capacity.hours_per_month)
        n = wf.requests_per_month(dem["profile_rps"], h)
        return n, f"capacity demand ({dem.get('source')}): mean {np.mean(dem['profile_rps']):.3g} req/s x {h:g} h/month"
    return None, "no volume: set whatif.requests_per_month=<n> or a capacity demand (capacity=example, capacity.peak_rps=...)"


def _per_month(x_per_request: float | None, volume: float | None) -> float | None:
    return None if x_per_request is None or volume is None else x_per_request * volume


def evaluate(cfg: Any, decision: Mapping[str, Any], runs: Sequence[Any]) -> dict[str, Any] | None:
    """The `whatif` section (module doc); None when no technique is asked for (whatif=none)."""
    w = cfg.whatif
    if not w.techniques:
        return None
    runs_by_id = {r.run_id: r for r in runs if r.skipped is None}
    volume, volume_src = _volume(cfg, decision)
    base = _baseline_variant(w, decision)
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"techniques": list(w.techniques), "requests_per_month": volume, "volume_source": volume_src,
                           "baseline_variant": base, "baseline_label": _label(decision, base) if base else None,
                           "rows": rows, "semantic_cache_curve": [], "policies": None}  # fmt: skip
    if "prefix_cache" in w.techniques:
        rows.append(prefix_cache_row(decision, runs_by_id, volume))
    if "semantic_cache" in w.techniques:
        r, curve, emb = semantic_cache_row(w.semantic_cache, decision, runs_by_id, base, volume)
        rows.append(r)
        out["semantic_cache_curve"], out["embedder"] = curve, emb
    if "cascade" in w.techniques:
        rows.append(cascade_row(w.cascade, decision, runs_by_id, volume))
    if "autoscaling" in w.techniques:
        pol_rows, policies = autoscaling_rows(cfg, decision, base)
        rows.extend(pol_rows)
        out["policies"] = policies
    out["sources"] = wf.SEED_CLAIMS
    out["formulas"] = FORMULAS
    out["assumptions"] = ASSUMPTIONS
    return out


# -- prefix caching --------------------------------------------------------------------------------
_TRACE_KEYS = ("trace_path", "trace_format", "trace_block_tokens", "trace_model", "trace_log_type")


def _trace_source(run: Any) -> dict[str, Any] | None:
    """The trace a run's requests came from (traffic=trace replays it, workload=fitted draws from it), else None."""
    t, w = run.config.get("traffic") or {}, run.config.get("workload") or {}
    if t.get("kind") != "trace" and w.get("kind") != "fitted":
        return None
    return {"use": "replay" if t.get("kind") == "trace" else "fitted", **{k: t.get(k) for k in _TRACE_KEYS}}


def _launch_key_without_prefix(run: Any) -> str:
    lf = json.loads(json.dumps(run.summary.get("launch_fields") or {k: run.config.get(k) for k in ("engine", "model", "quant", "gpu")}))
    (lf.get("engine") or {}).pop("prefix_caching", None)
    wl = run.config.get("workload") or {}
    return json.dumps({"launch": lf, "workload": wl, "trace": _trace_source(run)}, sort_keys=True)


def _traffic_of(run: Any) -> dict[str, Any]:
    """What the pair was measured on, in words, and the trace's own prefix reuse when it names its blocks
    (Mooncake: the ideal hit rate an infinite cache would reach on the rows sent; run.json `trace`)."""
    src, rec = _trace_source(run), run.summary.get("trace") or {}
    if src is None:
        return {"label": f"workload={(run.config.get('workload') or {}).get('name')}", "ideal_hit_rate": None}
    name = str(src["trace_path"]).rsplit("/", 1)[-1]
    fmt = rec.get("format") or src["trace_format"]
    label = f"{'the replay of' if src['use'] == 'replay' else 'workload=fitted on'} {name} ({fmt} trace"
    label += f", {rec['block_tokens']}-token blocks)" if rec.get("block_tokens") else ")"
    reuse = (rec.get("prefix_reuse_built") or rec.get("prefix_reuse")) if src["use"] == "replay" else \
        ((rec.get("fitted") or {}).get("generated") or {}).get("prefix_reuse")  # fmt: skip
    return {"label": label, "ideal_hit_rate": _f((reuse or {}).get("ideal_hit_rate"))}


def prefix_cache_row(decision: Mapping[str, Any], runs_by_id: Mapping[str, Any], volume: float | None) -> dict[str, Any]:
    """On/off pair of one launch (everything but engine.prefix_caching equal) at a common load."""
    name = "prefix caching (measured)"
    groups: dict[str, dict[bool, list[Any]]] = {}
    for r in runs_by_id.values():
        pc = ((r.config.get("engine") or {}).get("prefix_caching"))
        if pc is None:
            continue
        groups.setdefault(_launch_key_without_prefix(r), {}).setdefault(bool(pc), []).append(r)
    pair = next((g for g in groups.values() if True in g and False in g), None)
    if pair is None:
        return wf.not_evaluated(name, "no pair of runs with engine.prefix_caching=true and =false on the same engine, model "
                                      "and workload: run `python run.py experiment=prefix_cache` and decide on results/prefix_cache")  # fmt: skip
    on_vid, off_vid = pair[True][0].variant_id, pair[False][0].variant_id
    pts = _points(decision)
    loads_on = {p["load_value"] for p in pts if p["variant_id"] == on_vid}
    loads_off = {p["load_value"] for p in pts if p["variant_id"] == off_vid}
    common = sorted(loads_on & loads_off)
    if not common:
        return wf.not_evaluated(name, "the prefix-caching on and off runs share no load point: measure both at the same traffic.points")
    load = common[-1]

    def at(vid: str, load: float = load) -> dict[str, Any]:
        p = next(x for x in pts if x["variant_id"] == vid and x["load_value"] == load)
        s = _lp_summary(runs_by_id, p["run_id"], p["point_id"])
        return {"run_id": p["run_id"], "point": p, "summary": s, "hit_rate": wf.prefix_hit_rate(s.get("engine_metrics")),
                "ttft_ms_p50": _p50(s, "ttft_ms"), "ttft_ms_p99": _f((s.get("ttft_ms") or {}).get("p99")),
                "e2e_ms_p50": _p50(s, "e2e_ms"), "output_tok_per_s": _f(p.get("output_tok_per_s")),
                "usd_per_1m_output": _f(p.get("usd_per_1m_output")), "usd_per_1m_goodput": _f(p.get("usd_per_1m_goodput")),
                "feasible": p.get("feasible"), "verdict": p.get("verdict")}  # fmt: skip

    on, off = at(on_vid), at(off_vid)
    ranked = {c["variant_id"]: c for c in (decision.get("selection") or {}).get("ranked") or []}
    if on_vid in ranked and off_vid in ranked:
        basis, u_on, u_off = "selection ($/1M goodput tokens at each variant's operating point, at the SLO)", ranked[on_vid]["usd"], ranked[off_vid]["usd"]
    elif on["usd_per_1m_goodput"] is not None and off["usd_per_1m_goodput"] is not None:
        basis, u_on, u_off = f"$/1M goodput tokens at the common load {load:g}", on["usd_per_1m_goodput"], off["usd_per_1m_goodput"]
    else:
        basis, u_on, u_off = f"$/1M output tokens at the common load {load:g} (a variant misses the SLO there)", \
            on["usd_per_1m_output"], off["usd_per_1m_output"]  # fmt: skip
    saved_1m = (u_off - u_on) if u_on is not None and u_off is not None else None
    tok_per_req = _f(on["point"].get("output_tokens_mean"))
    per_month = saved_1m * tok_per_req / 1e6 * volume if saved_1m is not None and tok_per_req and volume is not None else None

    def pct(a: float | None, b: float | None) -> str:
        return f"{(a - b) / b * 100:+.0f} %" if a is not None and b else "n/a"

    dt = on["ttft_ms_p50"] - off["ttft_ms_p50"] if on["ttft_ms_p50"] is not None and off["ttft_ms_p50"] is not None else None
    hr_on, hr_off = on["hit_rate"], off["hit_rate"]
    by_load = []
    for x in common:
        a, b = at(on_vid, x), at(off_vid, x)
        by_load.append({"load_value": x, "on": {k: v for k, v in a.items() if k not in ("point", "summary")},
                        "off": {k: v for k, v in b.items() if k not in ("point", "summary")}})  # fmt: skip
    ttft = "; ".join(f"at {b['load_value']:g} {on['point'].get('load_unit')} {b['on']['ttft_ms_p50'] or 0:.0f} vs "
                     f"{b['off']['ttft_ms_p50'] or 0:.0f} ms" for b in by_load)  # fmt: skip
    traffic = _traffic_of(pair[True][0])
    ideal = traffic["ideal_hit_rate"]
    head = (f"on {traffic['label']}: engine hit rate {_pct(hr_on)} on vs {_pct(hr_off)} off"
            + (f" (the trace's ideal, an infinite cache: {_pct(ideal)})" if ideal is not None else "")
            + f"; TTFT p50 (on vs off) {ttft}; output tok/s at {load:g} {pct(on['output_tok_per_s'], off['output_tok_per_s'])}")  # fmt: skip
    inputs = [{"run_id": on["run_id"], "what": f"prefix_caching=true at {load:g} {on['point'].get('load_unit')}"},
              {"run_id": off["run_id"], "what": f"prefix_caching=false at {load:g} {off['point'].get('load_unit')}"}]
    details = {"load_value": load, "basis": basis, "usd_per_1m_on": u_on, "usd_per_1m_off": u_off,
               "ttft_ms_p50_delta": dt, "on": {k: v for k, v in on.items() if k not in ("point", "summary")},
               "off": {k: v for k, v in off.items() if k not in ("point", "summary")},
               "on_variant": _label(decision, on_vid), "off_variant": _label(decision, off_vid), "by_load": by_load,
               "traffic": traffic["label"], "trace_ideal_hit_rate": ideal}  # fmt: skip
    deltas = [f"{b['on']['ttft_ms_p50'] - b['off']['ttft_ms_p50']:+.0f} ms at {b['load_value']:g}" for b in by_load
              if b["on"]["ttft_ms_p50"] is not None and b["off"]["ttft_ms_p50"] is not None]  # fmt: skip
    lat = f"TTFT p50 with caching: {', '.join(deltas)} {on['point'].get('load_unit')} (negative = faster)" if deltas else ""
    return wf.row(name, evaluated=True, measured_inputs=inputs, headline=head, usd_per_1m_saved=saved_1m,
                  usd_per_month_saved=per_month, latency_cost=lat, quality_cost="none (same outputs; caching is exact)",
                  assumptions=[f"$ basis: {basis}", "hit rate in tokens, as the engine counts it"], details=details,
                  variant=_label(decision, on_vid))  # fmt: skip


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


# -- semantic cache ----------------------------------------------------------------------------------
def _paraphrase_stream(decision: Mapping[str, Any], runs_by_id: Mapping[str, Any]) -> dict[str, Any] | None:
    """Prompts, clusters and arrival times of a measured paraphrase run's operating point."""
    import pandas as pd

    from analysis.records.layout import request_files
    from analysis.results import read_requests

    for run in runs_by_id.values():
        if (run.config.get("workload") or {}).get("kind") != "paraphrase" or not (run.path / "workload.parquet").is_file():
            continue
        op = operating_point(decision, run.variant_id)
        if op is None or op["run_id"] != run.run_id:
            continue
        wl = pd.read_parquet(run.path / "workload.parquet", columns=["prompt_idx", "prompt", "cluster"])
        req = pd.concat([read_requests(f, ("load_point", "phase", "prompt_idx", "t_scheduled_ns", "status"))
                         for f in request_files(run.path)])  # fmt: skip
        lp = next(lp for lp in run.summary.get("load_points") or [] if str(lp.get("point_id")) == op["point_id"])
        req = req[(req["load_point"] == int(lp["index"])) & (req["phase"] == "measure")].sort_values("t_scheduled_ns")
        m = req.merge(wl, on="prompt_idx", how="inner")
        if m.empty:
            continue
        t = (m["t_scheduled_ns"].to_numpy(dtype=float) - float(m["t_scheduled_ns"].min())) / 1e9
        return {"prompts": m["prompt"].tolist(), "clusters": m["cluster"].astype(int).tolist(), "times_s": t.tolist(),
                "op": op, "run": run, "source": f"measured: the paraphrase run {run.run_id}'s measure-phase requests "
                f"at {op['load_value']:g} {op['load_unit']} ({len(m)} requests, arrival order as sent)"}  # fmt: skip
    return None


def _generated_stream(s: Any, op: Mapping[str, Any]) -> dict[str, Any]:
    """No paraphrase run: the paraphrase generator's items cycled as the load generator does
    (arrival i asks item i mod n), Poisson arrivals at the baseline's measured request rate."""
    from loadgen.workload import paraphrase_clusters

    cl = paraphrase_clusters(s.num_clusters, s.paraphrases_per_cluster, s.seed)
    n = s.num_clusters * s.paraphrases_per_cluster
    items = [(cl[i % s.num_clusters][1][i // s.num_clusters], i % s.num_clusters) for i in range(n)]
    rate = _f(op.get("offered_rate_rps")) or _f(op.get("goodput_rps")) or 1.0
    gaps = np.random.default_rng(s.seed).exponential(1.0 / rate, s.requests)
    t = np.cumsum(gaps) - gaps[0]
    return {"prompts": [items[i % n][0] for i in range(s.requests)], "clusters": [items[i % n][1] for i in range(s.requests)],
            "times_s": t.tolist(), "source": f"generated: loadgen.workload.paraphrase_clusters({s.num_clusters} clusters x "
            f"{s.paraphrases_per_cluster}, seed {s.seed}), {s.requests} requests in round robin, Poisson at {rate:.3g} req/s "
            "(no paraphrase run in this results folder; run `python run.py workload=paraphrase` for measured prompts)"}  # fmt: skip


def semantic_cache_row(s: Any, decision: Mapping[str, Any], runs_by_id: Mapping[str, Any], base: str | None,
                       volume: float | None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:  # fmt: skip
    name = "semantic cache (simulated on measured costs)"
    stream = _paraphrase_stream(decision, runs_by_id)
    if stream is None:
        op = operating_point(decision, base) if base else None
        if op is None:
            return wf.not_evaluated(name, "no measured point to take a cost per request from"), [], None
        stream = {**_generated_stream(s, op), "op": op, "run": runs_by_id.get(op["run_id"])}
    op = stream["op"]
    cost = wf.usd_per_request(_f(op.get("usd_per_1m_output")), _f(op.get("output_tokens_mean")))
    if cost is None:
        return wf.not_evaluated(name, f"the point {op['run_id']}/{op['point_id']} has no $/1M output (no price or no output)"), [], None
    prompts = stream["prompts"]
    distinct = sorted(set(prompts))
    emb = wf.TfidfEmbedder(s.analyzer, s.ngram_min, s.ngram_max, s.sublinear_tf).fit(distinct)
    vec_of = dict(zip(distinct, emb.embed(distinct), strict=True))
    vectors = np.stack([vec_of[p] for p in prompts])
    curve = []
    for th in sorted(set([*s.thresholds, s.threshold])):
        r = wf.simulate_cache(vectors, stream["clusters"], stream["times_s"], th, s.ttl_s)
        curve.append({**r.to_dict(), "usd_saved_per_1k_requests": r.hit_rate * cost * 1000,
                      "usd_per_month_saved": _per_month(r.hit_rate * cost, volume)})  # fmt: skip
    # the operating threshold again, with the real lookup (embed the prompt + search) timed per request
    timed = wf.simulate_cache(vectors, stream["clusters"], stream["times_s"], s.threshold, s.ttl_s,
                              lookup=lambda j: emb.embed([prompts[j]])[0])  # fmt: skip
    summ = _lp_summary(runs_by_id, op["run_id"], op["point_id"])
    e2e = _p50(summ, "e2e_ms")
    lk = timed.lookup_ms_p50 or 0.0
    desc = emb.describe()
    inputs = [{"run_id": op["run_id"], "what": f"$ {cost:.3g} per request ({op['variant_label']} at {op['load_value']:g} "
                                               f"{op['load_unit']}, {op['_basis']}); E2E p50 {e2e or 0:.0f} ms"}]  # fmt: skip
    assume = [f"prompts: {stream['source']}",
              f"embedder: {desc['name']} ({desc['library']}, analyzer={desc['analyzer']}, ngram_range={desc['ngram_range']}, "
              f"sublinear_tf={desc['sublinear_tf']}, L2-normalised; {desc['fitted_on']})",
              f"threshold {s.threshold:g}, ttl {s.ttl_s:g} s; the threshold depends on the embedder: "
              "../shared/reference/cost-and-capacity.md (d) (no universal constant; the seeds' 0.95 is not one)",
              "clusters of the paraphrase workload are the ground truth of 'the same question'"]  # fmt: skip
    at = next(c for c in curve if c["threshold"] == float(s.threshold))
    head = (f"hit rate {_pct(at['hit_rate'])} at cosine >= {s.threshold:g} (ideal {_pct(at['ideal_hit_rate'])}), "
            f"false hits {_pct(at['false_hit_rate'])} of requests")  # fmt: skip
    details = {"threshold": s.threshold, "ttl_s": s.ttl_s, "usd_per_request": cost, "lookup_ms_p50": timed.lookup_ms_p50,
               "miss_e2e_ms_p50": e2e, "hit_latency_ms": lk, "miss_latency_ms": (e2e + lk) if e2e is not None else None,
               "requests": timed.requests, "hits": timed.hits, "false_hits": timed.false_hits, "prompt_source": stream["source"],
               "embedder": desc}  # fmt: skip
    r = wf.row(name, evaluated=True, measured_inputs=inputs, assumptions=assume, headline=head,
               usd_per_month_saved=at["usd_per_month_saved"],
               latency_cost=f"hit {lk:.2f} ms (measured lookup, median) vs miss {e2e or 0:.0f} ms E2E p50 + the lookup",
               quality_cost=f"{at['false_hits']} false hits = {_pct(at['false_hit_rate'])} of requests get another question's answer",
               details=details, variant=str(op["variant_label"]))  # fmt: skip
    return r, curve, desc


# -- cascade -----------------------------------------------------------------------------------------
def _quality(decision: Mapping[str, Any], vid: str, label: str) -> float | None:
    """A per-variant quality number from an optional decision `quality` entry (the quality gate's);
    accepts {variant_id or label: number | {score|agreement|quality|value: number}} or a list of such dicts."""
    q = decision.get("quality")
    if not q:
        return None
    entries = q.get("variants", q) if isinstance(q, Mapping) else q
    e: Any = None
    if isinstance(entries, Mapping):
        e = entries.get(vid, entries.get(label))
    elif isinstance(entries, list):
        e = next((x for x in entries if isinstance(x, Mapping) and (x.get("variant_id") == vid or x.get("variant_label") == label)), None)
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        return float(e)
    if isinstance(e, Mapping) and ("top1_agreement" in e or "gate" in e):
        # the quality gate's entry (analysis.quality): top-1 agreement with the unquantized baseline,
        # which agrees with itself (1.0)
        t1 = e.get("top1_agreement") or {}
        if isinstance(t1, Mapping) and isinstance(t1.get("value"), (int, float)):
            return float(t1["value"])
        return 1.0 if e.get("gate") == "not_gated" and e.get("baseline_variant_id") == e.get("variant_id") else None
    if isinstance(e, Mapping):
        for k in ("score", "agreement", "quality", "value"):
            if isinstance(e.get(k), (int, float)) and not isinstance(e.get(k), bool):
                return float(e[k])
    return None


def _auto_pair(decision: Mapping[str, Any], runs_by_id: Mapping[str, Any]) -> tuple[str, str] | None:
    vids: dict[str, Any] = {}
    for r in runs_by_id.values():
        vids.setdefault(r.variant_id, r)
    if len(vids) != 2:
        return None
    a, b = vids.values()
    key = lambda r: ((r.config.get("model") or {}).get("path"), (r.config.get("quant") or {}).get("name"))  # noqa: E731
    if key(a) == key(b):
        return None
    ops = {v: operating_point(decision, v) for v in vids}
    cost = {v: wf.usd_per_request(_f((o or {}).get("usd_per_1m_output")), _f((o or {}).get("output_tokens_mean"))) for v, o in ops.items()}
    if any(c is None for c in cost.values()):
        return None
    small, large = sorted(vids, key=lambda v: cost[v])
    return small, large


def cascade_row(c: Any, decision: Mapping[str, Any], runs_by_id: Mapping[str, Any], volume: float | None) -> dict[str, Any]:
    import pandas as pd

    from analysis.records.layout import request_files
    from analysis.results import read_requests

    name = "cascade routing (two measured variants)"
    if c.small and c.large:
        small, large = resolve_variant(decision, c.small, "whatif.cascade.small"), resolve_variant(decision, c.large, "whatif.cascade.large")
    elif c.small or c.large:
        raise ValueError("whatif.cascade: set both small and large (variant labels or ids), or neither")
    else:
        pair = _auto_pair(decision, runs_by_id)
        if pair is None:
            return wf.not_evaluated(name, "needs a small and a large variant (two models, or one quantized and not) in this results "
                                          "folder: run e.g. `python run.py -m quant=none,awq` (or two model=...) and decide with "
                                          "whatif.cascade.small=<label> whatif.cascade.large=<label>")  # fmt: skip
        small, large = pair
    ops = {v: operating_point(decision, v) for v in (small, large)}
    if any(o is None for o in ops.values()):
        return wf.not_evaluated(name, "a cascade variant has no measured point")
    cost = {v: wf.usd_per_request(_f(o.get("usd_per_1m_output")), _f(o.get("output_tokens_mean"))) for v, o in ops.items()}
    if any(x is None for x in cost.values()):
        return wf.not_evaluated(name, "a cascade variant has no $/1M output at its point (no price or no output)")
    # the routed stream: the large variant's measured requests (its operating point, measure phase)
    op_l = ops[large]
    run = runs_by_id[op_l["run_id"]]
    lp = next(lp for lp in run.summary.get("load_points") or [] if str(lp.get("point_id")) == op_l["point_id"])
    req = pd.concat([read_requests(f, ("load_point", "phase", "prompt_tokens", "prompt_tokens_client")) for f in request_files(run.path)])
    req = req[(req["load_point"] == int(lp["index"])) & (req["phase"] == "measure")]
    toks = req["prompt_tokens_client"].astype("Float64").fillna(req["prompt_tokens"].astype("Float64")).dropna().to_numpy(dtype=float)
    if toks.size == 0:
        return wf.not_evaluated(name, f"no prompt lengths recorded in {run.run_id}")
    th = float(c.threshold) if c.threshold is not None else float(np.percentile(toks, 90, method="lower"))
    esc, router_ms = wf.route(toks, th)
    lbl = {v: _label(decision, v) for v in (small, large)}
    e2e = {v: _p50(_lp_summary(runs_by_id, o["run_id"], o["point_id"]), "e2e_ms") for v, o in ops.items()}
    q = {v: _quality(decision, v, lbl[v]) for v in (small, large)}
    res = wf.blend(esc, usd_per_request_small=cost[small], usd_per_request_large=cost[large],
                   output_tokens_small=_f(ops[small].get("output_tokens_mean")),
                   output_tokens_large=_f(ops[large].get("output_tokens_mean")), e2e_ms_small=e2e[small],
                   e2e_ms_large=e2e[large], router_ms=router_ms, quality_small=q[small], quality_large=q[large])  # fmt: skip
    saved = (cost[large] - res.usd_per_request_blended)
    claim = wf.SEED_CLAIMS["cascade"]
    head = (f"{_pct(res.escalation_rate)} escalated to {lbl[large]}; ${res.usd_per_1m_output_blended or 0:.3g}/1M blended vs "
            f"${res.usd_per_1m_output_large or 0:.3g}/1M all-large: {100 * res.cost_reduction:.0f} % cheaper "
            f"(seed claim: {100 * claim['cost_reduction']:.0f} % with {100 * claim['share_to_small']:.0f} % to the small model)")  # fmt: skip
    inputs = [{"run_id": ops[v]["run_id"], "what": f"{role} {lbl[v]}: $ {cost[v]:.3g} per request at {ops[v]['load_value']:g} "
                                                   f"{ops[v]['load_unit']} ({ops[v]['_basis']})"}
              for role, v in (("small", small), ("large", large))]  # fmt: skip
    th_src = "whatif.cascade.threshold" if c.threshold is not None else "the stream's 90th percentile (null threshold: the seed's 90 % to the small model)"
    assume = [f"rule prompt_length: escalate when prompt tokens > {th:g} ({th_src})",
              f"routed stream: {res.requests} measure-phase requests of {run.run_id}",
              "each variant's measured $ per request applies to the requests routed to it",
              f"seed claim: {claim['claim']} ({claim['source']}); {claim['reference']}"]  # fmt: skip
    qual = (f"blended top-1 agreement with the baseline {res.quality_blended:.3g} (small {q[small]:.3g}, large {q[large]:.3g})"
            if res.quality_blended is not None
            else "not assessed: no quality entry for both variants in decision.json")  # fmt: skip
    lat = (f"E2E p50 {res.e2e_ms_p50_blended:.0f} ms blended (small {e2e[small] or 0:.0f}, large {e2e[large] or 0:.0f}) incl. router "
           f"{(router_ms or 0) * 1000:.1f} us (measured median)") if res.e2e_ms_p50_blended is not None else ""  # fmt: skip
    return wf.row(name, evaluated=True, measured_inputs=inputs, assumptions=assume, headline=head,
                  usd_per_month_saved=_per_month(saved, volume),
                  usd_per_1m_saved=((res.usd_per_1m_output_large or 0) - (res.usd_per_1m_output_blended or 0))
                  if res.usd_per_1m_output_blended is not None else None, latency_cost=lat, quality_cost=qual,
                  details={**res.to_dict(), "threshold_tokens": th, "small": lbl[small], "large": lbl[large],
                           "seed_claim_cost_reduction": claim["cost_reduction"]}, variant=f"{lbl[small]} -> {lbl[large]}")  # fmt: skip


# -- autoscaling and spot ------------------------------------------------------------------------------
def autoscaling_rows(cfg: Any, decision: Mapping[str, Any], base: str | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    names = [n for _, n in wf.POLICIES]
    cap = decision.get("capacity") or {}
    plans = cap.get("plans") or []
    if not plans:
        why = ("no capacity plan in this decision: add a demand, e.g. capacity=example (a 24-hour profile) or "
               "capacity.profile_rps=[...]")  # fmt: skip
        return [wf.not_evaluated(n, why) for n in names], None
    plan = next((p for p in plans if p["variant_id"] == base), plans[0])
    op = operating_point(decision, plan["variant_id"]) or {}
    ready = _f(op.get("time_to_ready_s"))
    c = cfg.capacity
    start = c.engine_start_s if c.engine_start_s is not None else ready
    restart = c.spot_restart_s if c.spot_restart_s is not None else ready
    src = {"run_id": op.get("run_id", "?"), "value_s": round(start, 1) if start is not None else None}
    rows = wf.policy_rows(plan, restart_s=restart, engine_start=src, pricing_name=str(cfg.pricing.name),
                          demand_source=str((cap.get("demand") or {}).get("source")))  # fmt: skip
    m = plan["monthly_usd"]
    policies = {"variant_label": plan["variant_label"], "monthly_usd": dict(m),
                "slo_miss_minutes_per_month": plan.get("slo_miss_minutes_per_month"),
                "spot_interruptions_per_month": plan.get("spot_interruptions_per_month")}  # fmt: skip
    return rows, policies


def problems(cfg: Any) -> list[str]:
    """config_problems of the whatif group (empty when whatif=none)."""
    w = getattr(cfg, "whatif", None)
    return [] if w is None else wf.config_problems(w)
