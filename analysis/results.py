"""Reading a results folder into the per-point table the decision works on (analysis.points).

A results folder is results/<experiment> (every run.json below it) or one run folder. For each
run with status ok and each of its load points, the point's rows of requests.parquet go
through the per-point functions: analysis.slo.evaluate_point (attainment, goodput, feasible),
analysis.cost (price, $/1M, phase split, energy), analysis.blocks (the joint time-block
replicates of attainment, SLO percentiles, goodput and $/1M) and analysis.verdict (valid | warn |
invalid). This module only
reads files and assembles; the math lives in those modules.

run.json is read through analysis.records.run.read_run_json: v2 carries variant_id at the top
and point_id / repetition per load point (docs/identity.md), used as written; v1 (written
before identity existed) is upgraded with variant_id and point_id derived from its recorded
config by the same rules (analysis.records.identity). v1 recorded no repetition: it is the 0-based
order of runs with the same (variant_id, point_id) by started_at_utc.

Side effects: reads run.json, requests.parquet, engine_metrics.parquet and telemetry.parquet;
writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis import sessions as sessions_mod
from analysis.metrics import arrow_to_pandas_type
from analysis.points import as_float as _f
from analysis.points import detail_key
from analysis.records.layout import find_runs, lab_alive, request_files
from analysis.records.plain import jsonable
from analysis.records.run import load_unit, read_run_json

# requests.parquet columns the decision needs (the rest, e.g. output_text, is never read)
REQUEST_COLUMNS = (
    "load_point", "phase", "status", "http_status", "t_scheduled_ns", "t_sent_ns", "t_first_token_ns", "t_last_token_ns",
    "t_done_ns", "chunk_ns", "prompt_tokens", "output_tokens", "ttft_ms", "tpot_ms", "e2e_ms",
    # sessions (analysis.sessions); absent from single-request runs' files before they existed
    "session_id", "turn", "session_end", "cached_tokens", "history_tokens",
)  # fmt: skip
# ... and what re-deriving the per-request metrics and re-summarising a point needs (analysis.metrics)
SUMMARY_COLUMNS = (
    *REQUEST_COLUMNS, "t_scheduled_ns", "max_tokens", "prompt_tokens_client", "output_tokens_source",
    "output_tokens_client",
)  # fmt: skip


class ResultsError(ValueError):
    """The folder cannot be decided on (one clear line)."""


@dataclass
class RunInfo:
    path: Path
    summary: dict[str, Any]
    variant_id: str
    variant_label: str = ""
    skipped: str | None = None

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        return self.summary.get("config") or {}


@dataclass
class Table:
    points: pd.DataFrame
    runs: list[RunInfo]
    problems: list[str] = field(default_factory=list)  # per-point issues that did not stop the build
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # (run_id/point_id) -> slo, cost, verdict dicts


def load_runs(folder: Path) -> list[RunInfo]:
    """Every run.json under `folder`, with identity derived for v1; non-ok runs are marked skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise ResultsError(f"results folder {folder} does not exist")
    paths = find_runs(folder)
    if not paths:
        raise ResultsError(f"no runs in {folder}: no run.json below it")
    runs = []
    for p in paths:
        try:
            s = read_run_json(p / "run.json")
        except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError, as is a newer schema
            runs.append(RunInfo(p, {}, "", skipped=f"unreadable run.json: {e}"))
            continue
        info = RunInfo(p, s, str(s["variant_id"]))
        status = s.get("status")
        if status == "running" and not lab_alive(s.get("lab")):
            status = "cancelled"  # its lab died (kill -9): the points it finished are on disk (experiments.sweeps.resume)
        if status not in ("ok", "cancelled"):
            info.skipped = f"status {status}" + (f": {s['failure'].get('reason')}" if s.get("failure") else "")
        elif not [lp for lp in s.get("load_points") or [] if not (lp.get("interrupted") or lp.get("aborted"))]:
            info.skipped = "no load points" if status == "ok" else f"status {status}: no finished load points"
        elif not request_files(p):
            info.skipped = "no requests.parquet"
        runs.append(info)
    label_variants(runs)
    if not any(r.skipped is None for r in runs):
        raise ResultsError(f"no usable runs in {folder}: " + "; ".join(f"{r.path.name}: {r.skipped}" for r in runs))
    return runs


def load_quality(runs: list[RunInfo]) -> tuple[dict[str, dict[str, Any]], dict[str, pd.DataFrame]]:
    """The quality runs of `runs` (experiments.quality): variant_id -> its newest quality.json
    (an ok one over any other), and run_id -> quality.parquet rows, for every run that has them.
    Launches without load points (a quality-only relaunch) count too."""
    best: dict[str, tuple[tuple[int, str], dict[str, Any]]] = {}
    rows: dict[str, pd.DataFrame] = {}
    for r in runs:
        qj = r.path / "quality.json"
        if not qj.is_file():
            continue
        try:
            s = json.loads(qj.read_text())
        except (OSError, ValueError):
            continue
        rank = (int(s.get("status") == "ok"), str(r.summary.get("started_at_utc") or ""))
        vid = str(s.get("variant_id") or r.variant_id)
        if vid not in best or rank > best[vid][0]:
            best[vid] = (rank, s)
        if (r.path / "quality.parquet").is_file():
            rows[str(s.get("run_id") or r.run_id)] = pd.read_parquet(r.path / "quality.parquet")
    return {v: s for v, (_, s) in best.items()}, rows


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: json.dumps(d, sort_keys=True, default=str) if isinstance(d, list) else d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def label_variants(runs: list[RunInfo]) -> None:
    """variant_label = engine/quant; where labels collide, the settings that differ among the colliding
    variants are appended (model, gpu, then engine and quant options, at most 3, as key=value), and
    the first 6 hex of the id where that is still not enough."""
    cfgs = {r.variant_id: r.config for r in runs if r.variant_id}
    launch = {r.variant_id: r.summary.get("launch_fields") or {} for r in runs if r.variant_id}
    base = {vid: f"{(c.get('engine') or {}).get('name', '?')}/{(c.get('quant') or {}).get('name', '?')}"
            for vid, c in cfgs.items()}  # fmt: skip
    labels = dict(base)
    for name in set(base.values()):
        group = [vid for vid, b in base.items() if b == name]
        if len(group) < 2:
            continue
        flat = {vid: flatten(launch[vid]) for vid in group}
        keys = sorted({k for f in flat.values() for k in f})
        differ = [k for k in keys if len({json.dumps(flat[v].get(k), default=str) for v in group}) > 1]
        order = ["model.name", "gpu.name", "gpu.count"]
        differ = sorted(differ, key=lambda k: (order.index(k) if k in order else len(order), k))[:3]
        for vid in group:
            labels[vid] = " ".join([name, *(f"{k.split('.', 1)[-1]}={flat[vid].get(k)}" for k in differ)])
        if len({labels[v] for v in group}) < len(group):
            for vid in group:
                labels[vid] += f" #{vid[:6]}"
    for r in runs:
        r.variant_label = labels.get(r.variant_id, r.variant_id)


def read_requests(path: Path, columns: tuple[str, ...] | None = REQUEST_COLUMNS) -> pd.DataFrame:
    """requests.parquet as pandas (nullable ints and strings), only `columns` that exist (None = all)."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    cols = None if columns is None else [c for c in columns if c in names]
    # Row group by row group: the decoder's transient buffers exist for one group at a time
    # (200 k x 128 chunks in 4 groups: 0.53 GiB peak instead of 0.65). self_destruct frees the
    # Arrow buffers column by column as pandas takes them.
    parts = [pf.read_row_group(i, columns=cols) for i in range(pf.num_row_groups)]
    table = pa.concat_tables(parts) if parts else pf.schema_arrow.empty_table().select(cols or names)
    del parts
    return table.to_pandas(types_mapper=arrow_to_pandas_type, self_destruct=True, split_blocks=True)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _read_optional(path: Path, columns: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in columns if c in names]).to_pandas()


def gpu_of(config: dict[str, Any], catalog: dict[str, Any] | None = None) -> SimpleNamespace:
    """The run's GPU (name, count from its config; spec figures from the catalog entry when given)."""
    g = dict(config.get("gpu") or {"name": "cpu", "count": 0})
    cat = catalog or {}
    for k in ("tdp_w", "memory_gib", "memory_bandwidth_gb_per_s"):
        if g.get(k) is None and cat.get(k) is not None:
            g[k] = cat[k]
    g.setdefault("tdp_w", None)
    return SimpleNamespace(**g)


def point_row(pdf: pd.DataFrame, s: dict[str, Any], *, slo: Any, price: Any, gpu: Any, ident: dict[str, Any],
              engine_metrics: pd.DataFrame | None = None, telemetry: pd.DataFrame | None = None, engine: str = "",
              run_summary: dict[str, Any] | None = None, traffic: dict[str, Any] | None = None,
              interrupted: bool = False, n_boot: int = 1000, seed: int = 0, model_config: dict[str, Any] | None = None,
              stopped_early: str | None = None,
              quant: dict[str, Any] | None = None, bandwidth: tuple[float | None, str] = (None, "")
              ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(table row, details) of one load point: its request rows `pdf` (derived columns present) and
    its run.json summary `s` through analysis.slo, cost, confidence and verdict.

    `ident`: variant_id, variant_label, run_id, point_id, repetition, load_value, load_unit,
    time_to_ready_s, started_at_utc. `stopped_early`: why the overload test stopped the point
    (experiments.economy): it is infeasible, whatever its shortened window's rows say.
    `model_config`: the model's parsed config.json (roofline;
    None = no roofline); `bandwidth`: (GB/s, where it comes from). No I/O.
    """
    from analysis import cost
    from analysis import slo as slo_mod
    from analysis import verdict as verdict_mod

    rs = run_summary or {}
    units = cost.billed_units(gpu)
    if "chunk_ns" in pdf.columns and getattr(slo, "itl_ms", None) is None:
        # the chunk lists are most of the memory (1 M x 128 chunks = 1 GiB) and only an ITL
        # threshold reads them: every row filter below would copy them
        pdf = pdf.drop(columns=["chunk_ns"])
    m = pdf[pdf["phase"] == "measure"].reset_index(drop=True)
    sent = m[m["t_sent_ns"].notna()]
    t0 = int(sent["t_sent_ns"].min()) if len(sent) else None
    t1 = int(sent["t_done_ns"].max()) if len(sent) and sent["t_done_ns"].notna().any() else None
    res = slo_mod.evaluate_point(pdf, slo, window_s=s.get("measure_window_s"))
    if stopped_early:  # its queue grew past the SLO: infeasible (not a short feasible window)
        res = dataclasses.replace(res, feasible=False, reasons=(f"stopped early: {stopped_early}", *res.reasons))
    split = cost.phase_split(pdf, engine_metrics=engine_metrics, engine=engine, t0_ns=t0, t1_ns=t1)
    pc = cost.point_cost(
        price=price, window_s=res.window_s, output_tokens=int(_first(s, "window_generated_tokens", "output_tokens") or 0),
        prompt_tokens=int(_first(s, "window_prompt_tokens", "prompt_tokens") or 0),
        goodput_output_tokens=res.goodput_output_tokens,
        split=split, energy_j=(s.get("energy") or {}).get("joules"), tdp_w=getattr(gpu, "tdp_w", None),
        devices=int(gpu.count),
    )  # fmt: skip
    meets, _per, _values = slo_mod.meets_mask(m, slo)
    ok = (m["status"] == "ok").to_numpy(dtype=bool)
    tok = np.where(ok, m["output_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float), 0).astype(np.int64)
    out_tok = _f(s.get("output_tok_per_s"))
    boot = _point_replicates(m, ok, meets, tok, slo, res, out_tok, n_boot=n_boot, seed=seed)
    rep = boot["replicates"]
    v = verdict_mod.verdict(
        s, requests=pdf, window=(t0, t1) if t0 is not None and t1 is not None else None,
        telemetry_t_ns=None if telemetry is None else telemetry["t_ns"].to_numpy(),
        telemetry_interval_s=(rs.get("telemetry") or {}).get("interval_s"),
        scrape_t_ns=None if engine_metrics is None else engine_metrics["t_ns"].to_numpy(),
        scrape_interval_s=(rs.get("engine_metrics") or {}).get("interval_s"),
        warmup_s=(traffic or {}).get("warmup_s"), interrupted=interrupted,
        open_loop=ident.get("load_unit") == "req/s",
    )  # fmt: skip
    n_req = res.requests or 0
    cost_g = _cost_replicates(pc["usd_per_1m_goodput"], res.goodput_output_tok_per_s,
                              rep.throughput.get("goodput_output_tok_per_s"))  # fmt: skip
    cost_o = _cost_replicates(pc["usd_per_1m_output"], out_tok, rep.throughput.get("output_tok_per_s"))
    ok_n = int((s.get("requests") or {}).get("ok") or 0)
    row = {
        **{k: ident.get(k) for k in ("variant_id", "variant_label", "run_id", "point_id", "repetition", "load_value",
                                     "load_unit")},
        "offered_rate_rps": _f(s.get("offered_rate_rps")) or _f(s.get("achieved_rate_rps")),
        "gpu_name": gpu.name, "gpu_count": int(gpu.count), "verdict": v.status,
        "verdict_reasons": list(v.reasons), "feasible": bool(res.feasible), "attainment": res.attainment,
        "goodput_rps": res.goodput_rps, "output_tok_per_s": out_tok,
        "goodput_output_tok_per_s": res.goodput_output_tok_per_s,
        "tok_per_s_per_gpu": out_tok / units if out_tok is not None else None,
        "tok_per_s_per_user": _f(s.get("interactivity_tok_per_s")),
        "usd_per_1m_output": pc["usd_per_1m_output"], **_ci_columns("usd_per_1m_output", cost_o),
        "usd_per_1m_goodput": pc["usd_per_1m_goodput"], **_ci_columns("usd_per_1m_goodput", cost_g),
        "ttft_ms_p99": _p(s, "ttft_ms"), "tpot_ms_p99": _p(s, "tpot_ms"), "e2e_ms_p99": _p(s, "e2e_ms"),
        "time_to_ready_s": _f(ident.get("time_to_ready_s")),
        # optional columns (analysis.points)
        "attainment_boot": rep.attainment, "p_feasible": 0.0 if stopped_early else rep.p_feasible,
        **_ci_columns("goodput_output_tok_per_s", rep.throughput.get("goodput_output_tok_per_s")),
        **_ci_columns("goodput_rps", rep.throughput.get("goodput_rps")),
        **_ci_columns("output_tok_per_s", rep.throughput.get("output_tok_per_s")),
        **{f"slo_{k}_boot": v for k, v in rep.thresholds.items()},
        "n_blocks": rep.blocks.n_blocks, "block_s": rep.blocks.length_s,
        "prefill_time_share": split.get("prefill_share"), "split_method": split.get("method"),
        "prompt_tokens_mean": (_first(s, "processed_prompt_tokens", "prompt_tokens") or 0) / ok_n if ok_n else None,
        "output_tokens_mean": (_first(s, "generated_tokens", "output_tokens") or 0) / ok_n if ok_n else None,
        "usd_per_hour": price.usd_per_hour, "price_source": price.source, "price_as_of": price.as_of,
        "usd_per_1m_total": pc["usd_per_1m_total"],
        "usd_per_1m_input_split": pc["split"]["usd_per_1m_input_split"],
        "usd_per_1m_output_split": pc["split"]["usd_per_1m_output_split"],
        "j_per_output_token": pc["energy"].get("j_per_output_token"), "energy_method": pc["energy"].get("method"),
        "usd_energy_per_1m_output": pc["energy"].get("usd_energy_per_1m_output"),
        "feasibility_reasons": list(res.reasons), "requests": n_req, "started_at_utc": ident.get("started_at_utc"),
    }  # fmt: skip
    for t in res.thresholds:
        row[f"slo_{t.metric}"] = t.value_ms
    if sessions_mod.has_sessions(pdf):  # a session meets the SLO when every one of its turns does
        meets_all, _p2, _v2 = slo_mod.meets_mask(pdf, slo)
        row["session_attainment"] = sessions_mod.by_session(pdf, pd.Series(meets_all, index=pdf.index)).get("slo_attainment")
    roof = _roofline(model_config, quant or {}, bandwidth, out_tok, split, res.window_s, row, int(gpu.count))
    row["decode_bound_tok_per_s"], row["mbu"] = roof.get("tok_per_s_bound"), roof.get("mbu")
    ci_out = {
        "goodput_rps": _ci(res.goodput_rps, rep.throughput.get("goodput_rps")),
        "goodput_output_tok_per_s": _ci(res.goodput_output_tok_per_s, rep.throughput.get("goodput_output_tok_per_s")),
        "output_tok_per_s": _ci(out_tok, rep.throughput.get("output_tok_per_s")),
        "usd_per_1m_output": _ci(pc["usd_per_1m_output"], cost_o),
        "usd_per_1m_goodput": _ci(pc["usd_per_1m_goodput"], cost_g),
        "attainment": _ci(res.attainment, rep.attainment),
        **{f"slo_{k}": _ci(row.get(f"slo_{k}"), v_) for k, v_ in rep.thresholds.items()},
    }  # fmt: skip
    details = {"slo": res.to_dict(), "verdict": v.to_dict(), "cost": {k: v_ for k, v_ in pc.items() if k != "price"},
               "price": pc["price"], "split": split, "goodput_ci": ci_out, "latency_ci": boot["latency_ci"],
               "p_feasible": rep.p_feasible, "blocks": rep.blocks.describe(), "intervals": INTERVALS,
               "roofline": roof}  # fmt: skip
    return row, details


def _roofline(model_config, quant, bandwidth, out_tok, split, window_s, row, devices) -> dict[str, Any]:
    """analysis.roofline for one point: batch by Little's law over decode time (phase split),
    context = mean prompt + half the mean output."""
    from analysis import roofline

    if not model_config:
        return {"mbu": None, "why_missing": "no config.json for the model"}
    try:
        shape = roofline.model_shape(model_config)
    except (KeyError, TypeError, ValueError) as e:
        return {"mbu": None, "why_missing": f"config.json not understood: {e}"}
    decode_s = split.get("decode_s")
    batch = roofline.decode_batch_from_records(decode_s, window_s) if decode_s and window_s else None
    ctx = (row.get("prompt_tokens_mean") or 0.0) + (row.get("output_tokens_mean") or 0.0) / 2
    method = "sum of decode time / window (Little's law; " + str(split.get("method")) + ")"
    return roofline.point_roofline(
        shape, bandwidth[0], output_tok_per_s=out_tok, batch=batch, context_tokens=ctx, batch_method=method,
        bandwidth_source=bandwidth[1], quant_method=quant.get("method"), quant_bits=quant.get("bits"),
        kv_cache_dtype=str(quant.get("kv_cache_dtype") or "auto"), devices=max(devices, 1),
    )  # fmt: skip


def model_config_of(config: dict[str, Any], base: Path) -> dict[str, Any] | None:
    """The parsed config.json at the run's model.path (relative paths: cwd, then the project root)."""
    mp = (config.get("model") or {}).get("path")
    if not mp:
        return None
    for root in (Path.cwd(), base):
        f = (root / mp / "config.json") if not Path(mp).is_absolute() else Path(mp) / "config.json"
        if f.is_file():
            try:
                return json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                return None
    return None


def bandwidth_of(run_summary: dict[str, Any], gpu: Any) -> tuple[float | None, str]:
    """Memory bandwidth for the roofline: the host measurement recorded in run.json (`host_bandwidth`,
    experiments.hostbench) for cpu, else the GPU catalog's spec figure."""
    hb = run_summary.get("host_bandwidth") or {}
    if int(getattr(gpu, "count", 0) or 0) == 0:
        v = _f(hb.get("memory_bandwidth_gb_per_s"))
        return (v, f"measured: {hb.get('method')}") if v else (None, "no host bandwidth recorded in run.json")
    v = _f(getattr(gpu, "memory_bandwidth_gb_per_s", None))
    return (v, "spec (conf/gpu)") if v else (None, "no memory bandwidth in conf/gpu")


def build_table(folder: Path, *, slo: Any, pricing: Any, gpu_catalog: dict[str, dict[str, Any]] | None = None,
                n_boot: int = 1000, seed: int = 0) -> Table:  # fmt: skip
    """The per-point table (analysis.points.REQUIRED + optional columns) of every usable run."""
    from analysis import cost
    from analysis.metrics import derive

    runs = load_runs(folder)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    details: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.skipped:
            continue
        cfg = run.config
        traffic = cfg.get("traffic") or {}
        kind = str(traffic.get("kind") or "poisson")
        gpu = gpu_of(cfg, (gpu_catalog or {}).get((cfg.get("gpu") or {}).get("name", "cpu")))
        price = cost.price_for(pricing, gpu)  # PriceMissing is a bad input: the caller refuses
        files = request_files(run.path)
        names = set(pq.read_schema(files[0]).names)
        if "ttft_ms" in names:
            # chunk_ns (the largest column) only when an ITL threshold needs the gaps
            cols = tuple(c for c in REQUEST_COLUMNS if c != "chunk_ns" or getattr(slo, "itl_ms", None) is not None)
            req = _concat([read_requests(f, cols) for f in files])
        else:  # records without derived metrics: derive them
            req = derive(_concat([read_requests(f, SUMMARY_COLUMNS) for f in files]))
        em = _read_optional(run.path / "engine_metrics.parquet", ["name", "value", "t_ns"])
        tel = _read_optional(run.path / "telemetry.parquet", ["t_ns"])
        by_point = dict(tuple(req.groupby("load_point", sort=True))) if len(req) else {}
        mcfg = model_config_of(cfg, Path(__file__).resolve().parent.parent)
        served = (run.summary.get("engine") or {}).get("effective_dtype")
        if mcfg is not None and served:
            # what the engine computed in, not what the checkpoint stores (vLLM's CPU build serves a
            # float32 checkpoint in bfloat16 under dtype=auto): the weights it streams per token
            mcfg = {**mcfg, "dtype": served, "torch_dtype": served}
        bw = bandwidth_of(run.summary, gpu)
        for lp in run.summary.get("load_points") or []:
            i = int(lp["index"])
            if run.summary.get("status") != "ok" and (lp.get("interrupted") or lp.get("aborted")):
                # a cancelled run's unfinished point: a resumed launch measures it again
                problems.append(f"{run.run_id} point {i}: not finished (interrupted); left out")
                continue
            pdf = by_point.get(i)
            if pdf is None or pdf.empty:
                problems.append(f"{run.run_id} point {i}: no request records")
                continue
            pid = str(lp["point_id"])
            ident = {"variant_id": run.variant_id, "variant_label": run.variant_label, "run_id": run.run_id,
                     "point_id": pid, "repetition": lp.get("repetition"), "load_value": float(lp["load_value"]),
                     "load_unit": lp.get("load_unit") or load_unit(kind),
                     "time_to_ready_s": (run.summary.get("engine") or {}).get("time_to_ready_s"),
                     "started_at_utc": run.summary.get("started_at_utc")}  # fmt: skip
            row, det = point_row(
                pdf, lp.get("summary") or {}, slo=slo, price=price, gpu=gpu, ident=ident, engine_metrics=em,
                telemetry=tel, engine=str((cfg.get("engine") or {}).get("name") or ""), run_summary=run.summary,
                traffic=traffic, interrupted=bool(lp.get("interrupted")), n_boot=n_boot, seed=seed,
                stopped_early=(lp.get("stopped_early") or {}).get("reason"),
                model_config=mcfg, quant=cfg.get("quant") or {}, bandwidth=bw,
            )  # fmt: skip
            rows.append(row)
            details[detail_key(run.run_id, pid, lp.get("repetition"))] = det
    df = pd.DataFrame(rows)
    if df.empty:
        raise ResultsError(f"no load points with request records in {folder}")
    if df["repetition"].isna().any():  # v1: order of runs per (variant, point)
        order = df.sort_values(["started_at_utc", "run_id"]).groupby(["variant_id", "point_id"]).cumcount()
        df["repetition"] = df["repetition"].fillna(order).astype(int)
    return Table(points=df, runs=runs, problems=problems, details=details)


# What a point's intervals carry, and what they do not (decision.json, the report's "how sure").
INTERVALS = {
    "method": "time-block bootstrap (analysis.blocks): the measure window cut into blocks, drawn with replacement, "
              "every figure of a replicate from the same draw",
    "includes": ["which requests arrived and were served in the window (the throughput it produced)",
                 "correlation between neighbouring requests (blocks as long as the dependence lasts)",
                 "the output-length spread", "repetitions' run-to-run spread, where a point was repeated"],
    "excludes": ["drift beyond the window (a later hour, another host of the same type)",
                 "price uncertainty (the sensitivity section varies it)", "client-side measurement error"],
}  # fmt: skip


def _point_replicates(m: pd.DataFrame, ok: np.ndarray, meets: np.ndarray, tok: np.ndarray, slo: Any, res: Any,
                      out_tok: float | None, *, n_boot: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """Joint time-block replicates of one point (analysis.blocks) and its latency intervals."""
    from analysis import blocks as bl
    from analysis import slo as slo_mod

    t = m["t_sent_ns"].astype("Float64")
    if "t_scheduled_ns" in m.columns:  # a dropped request was never sent: its scheduled time
        t = t.fillna(m["t_scheduled_ns"].astype("Float64"))
    t = t.to_numpy(dtype=float, na_value=np.nan)
    t = np.where(np.isfinite(t), t, np.nanmin(t) if np.isfinite(t).any() else 0.0)
    e2e = m["e2e_ms"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    blocks = bl.make_blocks(t, np.where(ok, e2e, np.nan))
    idx = blocks.index
    ths = []
    for th in slo_mod.thresholds(slo):
        if th.metric == "itl_ms":
            gaps, owner = slo_mod.itl_gaps(m["chunk_ns"])
            keep = ok[owner]
            vals, vidx = gaps[keep], idx[owner[keep]]
        else:
            v = m[th.metric].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
            keep = ok & np.isfinite(v)
            vals, vidx = v[keep], idx[keep]
        ths.append(bl.Threshold(th.metric, vals, vidx, th.percentile, th.limit_ms))
    lat = {}
    for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
        v = m[name].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        keep = ok & np.isfinite(v)
        lat[name] = (v[keep], idx[keep])
    sums = {"goodput_rps": (meets.astype(float), res.goodput_rps),
            "goodput_output_tok_per_s": (np.where(meets, tok, 0).astype(float), res.goodput_output_tok_per_s),
            "output_tok_per_s": (tok.astype(float), out_tok)}  # fmt: skip
    rep = bl.point_replicates(blocks, meets=meets, target=float(slo.attainment_target), thresholds=ths, sums=sums,
                              latency=lat, n=n_boot, seed=seed)  # fmt: skip
    from analysis.confidence import too_few_warning

    latency_ci = {}
    for name, (vals, _i) in lat.items():
        for q in (50, 90, 99):
            key = f"{name}_p{q:g}"
            est = float(np.percentile(vals, q)) if vals.size else None
            latency_ci[key] = {**_ci(est, rep.latency.get(key)), "warning": too_few_warning(vals.size, q, name)}
    return {"replicates": rep, "latency_ci": latency_ci}


def p_feasible(requests: pd.DataFrame, slo: Any, *, window_s: float | None = None, n_boot: int = 1000,
               seed: int = 0) -> float | None:  # fmt: skip
    """The share of a point's joint time-block replicates that meet the SLO (analysis.blocks): how
    sure its feasible/infeasible verdict is, for the knee search. None without measure requests."""
    from analysis import slo as slo_mod
    from analysis.metrics import derive

    df = requests if "ttft_ms" in requests.columns else derive(requests)
    m = df[df["phase"] == "measure"].reset_index(drop=True)
    if m.empty:
        return None
    res = slo_mod.evaluate_point(df, slo, window_s=window_s)
    meets, _per, _v = slo_mod.meets_mask(m, slo)
    ok = (m["status"] == "ok").to_numpy(dtype=bool)
    tok = np.where(ok, m["output_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float), 0).astype(np.int64)
    rep = _point_replicates(m, ok, meets, tok, slo, res, None, n_boot=n_boot, seed=seed)["replicates"]
    return rep.p_feasible


def _cost_replicates(estimate: float | None, rate: float | None, rate_boot: np.ndarray | None) -> np.ndarray | None:
    """$/1M replicates from throughput replicates: the cost scales as 1 / throughput (same price,
    same window), so cost_r = estimate x rate / rate_r (a replicate that served nothing: inf)."""
    if estimate is None or rate is None or rate_boot is None:
        return None
    r = np.asarray(rate_boot, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, estimate * rate / np.where(r > 0, r, 1.0), np.inf)


def _ci(estimate: Any, boot: np.ndarray | None) -> dict[str, Any]:
    from analysis.confidence import LEVEL, interval

    lo, hi = interval(boot) if boot is not None else (None, None)
    return {"estimate": _f(estimate), "lo": lo, "hi": hi, "level": LEVEL,
            "n_boot": int(len(boot)) if boot is not None else 0, "method": "time blocks"}  # fmt: skip


def _ci_columns(name: str, boot: np.ndarray | None) -> dict[str, Any]:
    """<name>_lo, <name>_hi and <name>_boot table columns of a replicate array."""
    from analysis.confidence import interval

    lo, hi = interval(boot) if boot is not None else (None, None)
    return {f"{name}_lo": lo, f"{name}_hi": hi, f"{name}_boot": boot}


def _first(s: dict[str, Any], *keys: str) -> Any:
    """The first of `keys` present in a point summary: the v2 names (analysis.catalog: tokens inside
    the steady window, generated vs requested), then the v1 ones."""
    return next((s[k] for k in keys if s.get(k) is not None), None)


def _p(s: dict[str, Any], metric: str) -> float | None:
    return _f((s.get(metric) or {}).get("p99"))



def table_for_json(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The table's rows as JSON-ready dicts (bootstrap replicates left out: they are large)."""
    drop = [c for c in df.columns if c.endswith("_boot")]
    out = []
    for r in df.drop(columns=drop).to_dict(orient="records"):
        out.append({k: jsonable(v) for k, v in r.items()})
    return out
