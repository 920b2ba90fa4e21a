"""The search over launch settings (`tune=<space>`, conf/tune/): an Optuna study whose trials are
launches, each finding its own knee with the knee search, scored by its cost at capacity.

One trial = one Hydra job = one variant (`run_variant`): its knee search's points run inside that
one launch, its folder is named by identity (`<engine>_<quant>_<variant_id>`, docs/identity.md),
and its objective is what `python -m analysis.decide` says of it over the whole results folder:
the variant's $/1M goodput tokens at capacity (analysis.decision, the same selection the end of
the sweep makes). A trial that meets the SLO at no load is *infeasible* (told to the study as +inf,
so the sampler learns to avoid it), never an error; a trial refused by preflight or whose launch
failed is told as FAIL with its reason, and the search goes on. Quantized trials go through the
quality gate like any variant (`quality=gate`): a gate failure excludes them in the decision, so
they are infeasible here too.

Resume. The study lives in memory and is rebuilt on every run: the sampler is seeded
(TPESampler(seed)), so the same space and seed propose the same trials in the same order, and
each proposed trial finds its own folder by identity: a finished one launches nothing (all its
points are on disk) and its objective is read again from its records; an interrupted one resumes
its knee search. So the records are the only store (no study database that could disagree with
them or be lost apart from them), and a re-run with more `tune.n_trials` goes on where the last
stopped. A proposal equal to an earlier trial's settings is answered from that trial without a
job, and `tune.n_trials` counts distinct settings (launches), not proposals. `tune.json` in the sweep folder is the search's history as this layer saw it (trials,
settings, status, objective, engine time); the report reads it (analysis.report_tune).

Engine time. Every trial's launches are counted from their run.json: wall time of each launch
(engine start included) and the start alone (engine.time_to_ready_s); the sum is printed at the
end and recorded in tune.json.

Pruner seam (issue 26 part 2): after each trial the study gets one intermediate value per knee
search point (`trial.report(best feasible $/1M so far, step)`), so an Optuna pruner (the study's
`pruner`) has the per-step curve; stopping a trial *during* its knee search needs the schedule to
ask `should_prune()` between points, which is left to experiments.sweeps.schedule.

Side effects: :func:`run_search` launches jobs through the given launcher, decides over the
results folder into a scratch file, writes tune.json; :func:`space_problems` reads the machine
(engine discovery) but starts nothing.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.records.atomic import write_json_atomic
from analysis.records.layout import LAUNCH_PREFIX
from analysis.records.run import now_utc

log = logging.getLogger("servelab")

TUNE_JSON = "tune.json"
TUNE_SCHEMA_VERSION = 1
SAMPLERS = ("tpe", "random")
# a search stops proposing after this many proposals per trial asked for, even if repeats kept it from
# n_trials distinct settings (TPE converged on a few settings: more proposals would launch nothing)
MAX_ASKS_PER_TRIAL = 5
OBJECTIVE_N_BOOT = 200  # bootstrap replicates of the per-trial decision (decide_folder)


@dataclass
class TuneParam:
    """One searched setting: a launch-level override key and its values (choices, or a range)."""

    key: str = ""  # e.g. engine.max_num_seqs, engine.prefix_caching, quant (a group), engine.extra_args (with flag)
    choices: list[Any] | None = None  # categorical: bool, int, float, str or null
    low: float | None = None  # a range [low, high] instead of choices
    high: float | None = None
    step: float | None = None  # range: grid step (ints default to 1)
    log: bool = False  # range: sample on a log scale
    integer: bool | None = None  # range: whole numbers; null = yes when low and high are whole
    # key=engine.extra_args only: the value is passed to the engine as `<flag>=<value>` (a vLLM flag servelab
    # has no field for, e.g. --max-num-batched-tokens); null drops the flag (engine default)
    flag: str | None = None


@dataclass
class TuneConfig:
    """The search (conf/tune/): which settings, how many trials, which sampler and seed.

    `tune=none` (n_trials 0, no params) leaves the sweep as listed. A sweep with a search measures
    `n_trials` distinct settings in all (finished ones found on disk count, see the module doc;
    a repeated proposal is answered without a launch and does not count; fewer if the space is smaller)."""

    name: str = "none"
    n_trials: int = 0
    seed: int = 0
    sampler: str = "tpe"  # tpe | random
    n_startup_trials: int = 3  # tpe: random trials before the model proposes
    # name -> TuneParam's fields. Typed Any (read through TuneParam by :func:`params_of`, which names an
    # unknown field) so that a command line can add one: '+tune.params.x={key:engine.max_num_seqs,choices:[4,8]}'
    params: dict[str, Any] = field(default_factory=dict)


# -- the space ------------------------------------------------------------------------------------------
def enabled(tc: Any) -> bool:
    return tc is not None and int(getattr(tc, "n_trials", 0) or 0) > 0 and bool(getattr(tc, "params", None))


def params_of(tc: Any) -> dict[str, TuneParam]:
    """tune.params as TuneParam objects (ValueError naming an unknown field)."""
    out: dict[str, TuneParam] = {}
    for name, p in (tc.params or {}).items():
        if isinstance(p, TuneParam):
            out[name] = p
            continue
        known = set(TuneParam.__dataclass_fields__)
        if not isinstance(p, dict) or set(p) - known:
            extra = sorted(set(p) - known) if isinstance(p, dict) else p
            raise ValueError(f"tune.params.{name}: unknown field(s) {extra}; the fields are {', '.join(sorted(known))}")
        out[name] = TuneParam(**p)
    return out


def _is_int_range(p: Any) -> bool:
    if p.integer is not None:
        return bool(p.integer)
    return float(p.low).is_integer() and float(p.high).is_integer() and (p.step is None or float(p.step).is_integer())


def config_problems(tc: Any) -> list[str]:
    """The search config's own problems (before any engine is asked), one line each with the fix."""
    out: list[str] = []
    try:
        params = params_of(tc)
    except ValueError as e:
        return [str(e)]
    if tc.sampler not in SAMPLERS:
        out.append(f"tune.sampler={tc.sampler!r} is not one of {', '.join(SAMPLERS)}")
    if tc.n_trials < 1:
        out.append(f"tune.n_trials must be >= 1 for a search, got {tc.n_trials}")
    if tc.n_startup_trials < 0:
        out.append(f"tune.n_startup_trials must be >= 0 (random trials before TPE models), got {tc.n_startup_trials}")
    for name, p in params.items():
        where = f"tune.params.{name}"
        if not p.key:
            out.append(f"{where}.key is empty: name the launch-level setting it searches, e.g. engine.max_num_seqs")
        elif p.key.split(".", 1)[0] not in ("engine", "quant", "model", "gpu", "placement"):
            out.append(f"{where}.key={p.key} is not a launch-level setting (engine.*, quant, model, gpu.*, placement.*): "
                       "a search over point-level settings is a sweep of loads, not of launches")  # fmt: skip
        if p.key == "engine.extra_args" and not p.flag:
            out.append(f"{where}: key=engine.extra_args needs flag (the engine flag its value is passed with)")
        if p.flag and p.key != "engine.extra_args":
            out.append(f"{where}.flag is set but key={p.key}: a flag is only passed through key=engine.extra_args")
        has_range = p.low is not None or p.high is not None
        if p.choices is not None and has_range:
            out.append(f"{where}: give choices or low/high, not both")
        elif p.choices is not None:
            if len(p.choices) == 0:
                out.append(f"{where}.choices is empty")
            bad = [c for c in p.choices if c is not None and not isinstance(c, bool | int | float | str)]
            if bad:
                out.append(f"{where}.choices holds {bad!r}: only numbers, booleans, strings and null")
        elif p.low is None or p.high is None:
            out.append(f"{where}: give choices, or both low and high")
        elif not p.low < p.high:
            out.append(f"{where}: low={p.low} must be < high={p.high}")
        elif p.log and p.low <= 0:
            out.append(f"{where}: log=true needs low > 0, got {p.low}")
        elif p.log and p.step is not None and not _is_int_range(p):
            out.append(f"{where}: log=true with a step is not supported for floats (Optuna); drop step or log")
    return out


def distributions(tc: Any) -> dict[str, Any]:
    """Optuna distributions of the space, by param name."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, p in params_of(tc).items():
        if p.choices is not None:
            out[name] = CategoricalDistribution(list(p.choices))
        elif _is_int_range(p):
            step = 1 if p.step is None or p.log else int(p.step)
            out[name] = IntDistribution(int(p.low), int(p.high), log=bool(p.log), step=step)
        else:
            out[name] = FloatDistribution(float(p.low), float(p.high), log=bool(p.log), step=p.step)
    return out


def space_size(tc: Any) -> int | None:
    """How many distinct settings the space holds (None: a float range, unbounded)."""
    size = 1
    for d in distributions(tc).values():
        if hasattr(d, "choices"):
            size *= len(d.choices)
        elif isinstance(d.low, int) and isinstance(d.high, int) and not d.log:
            size *= (d.high - d.low) // d.step + 1
        elif isinstance(d.low, int) and isinstance(d.high, int):
            size *= d.high - d.low + 1
        else:
            return None
    return size


def _value(v: Any) -> str:
    """A value as a Hydra override writes it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def trial_overrides(tc: Any, params: dict[str, Any], base_extra_args: Sequence[str] = ()) -> list[str]:
    """The launch-level overrides of one trial's settings (flags folded into one engine.extra_args)."""
    out: list[str] = []
    flags: list[str] = []
    for name, p in params_of(tc).items():
        v = params[name]
        if p.flag:
            if v is not None:
                flags.append(f"{p.flag}={_value(v)}")
        else:
            out.append(f"{p.key}={_value(v)}")
    if flags:
        args = [*base_extra_args, *flags]
        out.append("engine.extra_args=[" + ",".join("'" + a.replace("'", "\\'") + "'" for a in args) + "]")
    return out


def space_points(tc: Any) -> list[dict[str, Any]]:
    """Settings that cover every value of the space once: each param's every choice (or both ends of
    its range) with the other params at their first choice (or low end). Preflighting these finds
    every value the engine cannot take, one line each."""
    first = {n: (p.choices[0] if p.choices is not None else (int(p.low) if _is_int_range(p) else float(p.low)))
             for n, p in params_of(tc).items()}  # fmt: skip
    out: list[dict[str, Any]] = [dict(first)]
    for n, p in params_of(tc).items():
        values = list(p.choices) if p.choices is not None else [first[n], int(p.high) if _is_int_range(p) else float(p.high)]
        for v in values:
            pt = {**first, n: v}
            if pt not in out:
                out.append(pt)
    return out


def space_problems(tc: Any, base_overrides: Sequence[str], check: Callable[[list[str]], list[str]],
                   base_extra_args: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """Every problem of the space before the search starts, one line per problem: the config's own,
    then `check(overrides)` (preflight of the run those overrides compose) over space_points(),
    each line naming the setting that causes it. A problem every point shares is said once."""
    out = config_problems(tc)
    if out:
        return out
    seen: set[str] = set()
    points = space_points(tc)
    base_lines = set(check(list(base_overrides) + trial_overrides(tc, points[0], base_extra_args)))
    for line in sorted(base_lines):
        out.append(f"every trial: {line}")
        seen.add(line)
    for pt in points[1:]:
        ovr = trial_overrides(tc, pt, base_extra_args)
        changed = [o for o in ovr if o not in trial_overrides(tc, points[0], base_extra_args)]
        for line in check(list(base_overrides) + ovr):
            if line not in seen:
                seen.add(line)
                out.append(f"{' '.join(changed)}: {line}")
    return out


# -- a trial's outcome, from the records ---------------------------------------------------------------
@dataclass
class Outcome:
    state: str  # complete | infeasible | pruned | failed | refused
    value: float | None  # $/1M at capacity (complete); inf (infeasible); None otherwise
    reason: str | None = None
    usd_bound: str | None = None  # "estimate" or "at most" (the knee was not reached)
    knee: float | None = None
    load_unit: str | None = None
    intermediate: list[tuple[int, float]] = field(default_factory=list)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def engine_time(variant_dir: Path) -> dict[str, Any]:
    """The trial's engine time from its launches' run.json: wall seconds of each launch (engine start
    included: the engine is held from before its start to the end of the launch) and the start alone."""
    launches = []
    for rj in sorted(Path(variant_dir).glob(f"{LAUNCH_PREFIX}*/run.json")):
        d = read_json(rj) or {}
        wall = _span_s(d.get("started_at_utc"), d.get("finished_at_utc"))
        ttr = (d.get("engine") or {}).get("time_to_ready_s")
        start = ttr
        if ttr is None and (d.get("failure") or {}).get("phase") == "engine_start":
            start = wall  # cut (Ctrl-C) or failed while starting: all of it was start
        launches.append({"launch": rj.parent.name, "status": d.get("status"), "wall_s": wall, "time_to_ready_s": ttr,
                         "start_s": start})  # fmt: skip
    return {"launches": launches, "engine_s": round(sum(la["wall_s"] or 0.0 for la in launches), 1),
            "start_s": round(sum(la["start_s"] or 0.0 for la in launches), 1)}  # fmt: skip


def _span_s(a: str | None, b: str | None) -> float | None:
    from datetime import datetime

    if not a or not b:
        return None
    try:
        return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 1)
    except ValueError:
        return None


def outcome(variant: dict[str, Any], decision: dict[str, Any] | None, decide_error: str | None = None) -> Outcome:
    """A trial's outcome from its variant.json (status) and the decision over the results folder."""
    status = variant.get("status")
    vid = variant.get("variant_id")
    if status == "refused":
        return Outcome("refused", None, f"refused by preflight: {variant.get('reason')}")
    if status == "failed":
        return Outcome("failed", None, f"failed: {variant.get('reason')}")
    if status == "cancelled":
        return Outcome("failed", None, "cancelled (Ctrl-C or SIGTERM)")
    if decision is None:
        return Outcome("failed", None, f"no decision over the results: {decide_error}")
    sel = decision.get("selection") or {}
    steps = intermediate_values(decision, vid)
    for c in sel.get("ranked") or []:
        if c.get("variant_id") == vid:
            return Outcome("complete", float(c["usd"]), None, c.get("usd_bound"), c.get("capacity_rps") or c.get("load_value"),
                           c.get("load_unit"), steps)  # fmt: skip
    for e in sel.get("excluded") or []:
        if e.get("variant_id") == vid:
            why = "; ".join(str(r.get("message")) for r in e.get("reasons") or [])
            if any(r.get("kind") == "cannot_win" for r in e.get("reasons") or []):
                # economy.halving stopped its knee search: an earlier trial is certainly cheaper (Optuna: PRUNED)
                return Outcome("pruned", math.inf, why, intermediate=steps)
            return Outcome("infeasible", math.inf, why, intermediate=steps)
    return Outcome("infeasible", math.inf, "no measured point of this trial in the decision", intermediate=steps)


def intermediate_values(decision: dict[str, Any], vid: str | None) -> list[tuple[int, float]]:
    """(step, best feasible $/1M so far) per knee-search point of the variant, in the order measured:
    what an Optuna pruner would have seen after each point (steps with nothing feasible yet are left out)."""
    cost = {}
    for r in decision.get("points") or []:
        if r.get("variant_id") == vid and r.get("feasible") and r.get("usd_per_1m_goodput") is not None:
            lv = float(r["load_value"])
            cost[lv] = min(cost.get(lv, math.inf), float(r["usd_per_1m_goodput"]))
    out: list[tuple[int, float]] = []
    best = math.inf
    searches = [s for s in decision.get("searches") or [] if s.get("variant_id") == vid]
    pts = [p for s in searches for p in s.get("points") or []]
    for i, p in enumerate(pts):
        if p.get("feasible") and float(p["load"]) in cost:
            best = min(best, cost[float(p["load"])])
        if math.isfinite(best):
            out.append((i, best))
    return out


# -- the study ------------------------------------------------------------------------------------------
def make_study(tc: Any) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # servelab prints its own trial lines
    if tc.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=int(tc.seed))
    else:
        sampler = optuna.samplers.TPESampler(seed=int(tc.seed), n_startup_trials=int(tc.n_startup_trials))
    # NopPruner: the seam for issue 26 part 2 (module doc); the study gets the intermediate values already
    return optuna.create_study(direction="minimize", sampler=sampler, pruner=optuna.pruners.NopPruner(),
                               study_name=f"servelab-{tc.name}")  # fmt: skip


@dataclass
class JobResult:
    """What the tune loop needs of one launched job: its folder and exit code."""

    variant_dir: Path
    code: int | None


def run_search(tc: Any, base_overrides: Sequence[str], sweep_dir: Path, *,
               launch: Callable[[list[str], int], JobResult],
               decide: Callable[[Path], dict[str, Any]],
               base_extra_args: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Run the study: ask, launch (one job per new setting), score from the records, tell; tune.json
    after every trial. Returns the tune.json content. A KeyboardInterrupt/SystemExit from a job (Ctrl-C)
    records the trial as interrupted and is raised again (the next run resumes it)."""
    import optuna

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = make_study(tc)
    dists = distributions(tc)
    trials: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"kind": "servelab.tune", "schema_version": TUNE_SCHEMA_VERSION, "name": tc.name,
                           "seed": int(tc.seed), "sampler": tc.sampler, "n_trials": int(tc.n_trials),
                           "objective": "usd_per_1m_goodput at capacity (analysis.decision selection), minimize",
                           "space": {n: optuna.distributions.distribution_to_json(d) for n, d in dists.items()},
                           "keys": {n: p.key + (f" {p.flag}" if p.flag else "") for n, p in params_of(tc).items()},
                           "started_at_utc": now_utc(), "earlier_runs": _earlier_runs(sweep_dir),
                           "trials": trials}  # fmt: skip
    seen: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    job = 0
    size = space_size(tc)
    n = -1
    # n_trials counts distinct settings (launches), not proposals: TPE re-proposes settings in a small
    # space, and a repeat costs no launch. Bounded: the space's size, and MAX_ASKS_PER_TRIAL proposals each.
    while len(seen) < min(int(tc.n_trials), size or math.inf) and n + 1 < MAX_ASKS_PER_TRIAL * int(tc.n_trials):
        n += 1
        trial = study.ask(fixed_distributions=dists)
        params = dict(trial.params)
        key = json.dumps(params, sort_keys=True, default=str)
        ovr = trial_overrides(tc, params, base_extra_args)
        row: dict[str, Any] = {"number": n, "params": params, "overrides": ovr}
        if key in seen:  # the sampler proposed settings already measured: same launch, same answer
            prev = seen[key]
            row |= {k: prev[k] for k in ("folder", "variant_id", "state", "value", "reason", "usd_bound", "knee", "load_unit")}
            row |= {"duplicate_of": prev["number"], "engine": {"launches": [], "engine_s": 0.0, "start_s": 0.0},
                    "new_launches": 0}  # fmt: skip
        else:
            trials.append(row | {"state": "running"})
            write_json_atomic(sweep_dir / TUNE_JSON, doc)
            log.info("tune: trial %d (%d/%d distinct) %s", n, len(seen) + 1, tc.n_trials, " ".join(ovr))
            t_trial = time.monotonic()
            try:
                before = _launch_names(sweep_dir)
                res = launch(list(base_overrides) + ovr, job)
            except BaseException:
                trials[-1] = row | {"state": "interrupted", "reason": "interrupted (Ctrl-C or SIGTERM): the next run resumes it"}
                doc["finished_at_utc"] = now_utc()
                write_json_atomic(sweep_dir / TUNE_JSON, doc)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            job += 1
            variant = read_json(res.variant_dir / "variant.json") or {
                "status": "failed", "reason": f"no variant.json (exit {res.code})"}  # fmt: skip
            decision, err = None, None
            if variant.get("status") == "ok":
                try:
                    decision = decide(sweep_dir)
                except Exception as e:  # noqa: BLE001 - a trial the decision cannot read is a failed trial, not a crash
                    err = f"{type(e).__name__}: {e}"
            oc = outcome(variant, decision, err)
            et = engine_time(res.variant_dir)
            new = sorted(set(_launch_names(sweep_dir)) - set(before))
            row |= {"folder": res.variant_dir.name, "variant_id": variant.get("variant_id"), "state": oc.state,
                    "value": oc.value, "reason": oc.reason, "usd_bound": oc.usd_bound, "knee": oc.knee,
                    "load_unit": oc.load_unit, "engine": et, "new_launches": len(new),
                    "reused": not new and oc.state in ("complete", "infeasible", "pruned"),
                    "trial_wall_s": round(time.monotonic() - t_trial, 1),
                    "intermediate": [[s, v] for s, v in oc.intermediate]}  # fmt: skip
            trials.pop()
            seen[key] = row
        for step, v in row.get("intermediate") or []:
            trial.report(v, step)  # the pruner's view of the knee search (module doc)
        if row["state"] in ("complete", "infeasible"):
            study.tell(trial, row["value"])
        elif row["state"] == "pruned":  # halved (economy.halving): the sampler learns it as pruned, not as a cost
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        trials.append(row)
        best = _best(trials)
        row["best_so_far"] = best["value"] if best else None
        write_json_atomic(sweep_dir / TUNE_JSON, doc)
        log.info("tune: trial %d %s: %s%s", n, row["state"], _usd(row.get("value")),
                 f" ({row['reason']})" if row.get("reason") else "")  # fmt: skip
    doc |= totals(trials)
    doc["finished_at_utc"] = now_utc()
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    write_json_atomic(sweep_dir / TUNE_JSON, doc)
    return doc


def _earlier_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The runs of this search before this one (from the tune.json this run replaces): when, how many
    trials, which were cut (Ctrl-C: `interrupted`; `running`: the process was killed)."""
    old = read_json(Path(sweep_dir) / TUNE_JSON)
    if not old or old.get("kind") != "servelab.tune":
        return []
    cut = [t["number"] for t in old.get("trials") or [] if t.get("state") in ("interrupted", "running")]
    return [*(old.get("earlier_runs") or []),
            {"started_at_utc": old.get("started_at_utc"), "finished_at_utc": old.get("finished_at_utc"),
             "trials": len(old.get("trials") or []), "cut_trials": cut, "new_launches": old.get("new_launches")}]  # fmt: skip


def _launch_names(sweep_dir: Path) -> list[str]:
    return [str(p.parent.relative_to(sweep_dir)) for p in Path(sweep_dir).glob(f"*/{LAUNCH_PREFIX}*/run.json")]


def _best(trials: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    done = [t for t in trials if t.get("state") == "complete" and t.get("value") is not None]
    return min(done, key=lambda t: t["value"]) if done else None


def totals(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The search's cost accounting: engine-minutes (starts included), over distinct trials."""
    own = [t for t in trials if "duplicate_of" not in t and t.get("engine")]
    engine_s = sum(t["engine"]["engine_s"] for t in own)
    start_s = sum(t["engine"]["start_s"] for t in own)
    best = _best(trials)
    return {"engine_minutes": round(engine_s / 60, 2), "start_minutes": round(start_s / 60, 2),
            "launches": sum(len(t["engine"]["launches"]) for t in own),
            "new_launches": sum(t.get("new_launches", 0) for t in own),
            "reused_trials": sum(1 for t in own if t.get("reused")),
            "best": {k: best.get(k) for k in ("number", "params", "value", "folder", "variant_id", "usd_bound")} if best else None,
            "states": {s: sum(1 for t in trials if t.get("state") == s) for s in sorted({t.get("state") for t in trials})}}  # fmt: skip


def _usd(v: Any) -> str:
    if v is None:
        return "-"
    return "infeasible (meets the SLO at no load)" if math.isinf(v) else f"${v:,.4g}/1M"


def summary_text(doc: dict[str, Any]) -> str:
    """The table printed at the end of a search: one row per trial, then the engine time and the best."""
    names = list(doc.get("space") or {})
    head = f"{'#':>3} {'state':<10} {'$/1M at capacity':>18} {'engine min':>10} {'start min':>9}  " + "  ".join(names)
    lines = [head, "-" * len(head)]
    for t in doc["trials"]:
        e = t.get("engine") or {}
        v = t.get("value")
        cost = "-" if v is None else t["state"] if math.isinf(v) else f"${v:,.4g}" + (" (<=)" if t.get("usd_bound") == "at most" else "")
        tag = f" = #{t['duplicate_of']}" if "duplicate_of" in t else " (reused)" if t.get("reused") else ""
        lines.append(f"{t['number']:>3} {t['state']:<10} {cost:>18} {e.get('engine_s', 0) / 60:>10.2f} "
                     f"{e.get('start_s', 0) / 60:>9.2f}  " + "  ".join(f"{_value(t['params'].get(n))}" for n in names) + tag)  # fmt: skip
    lines.append(f"engine time: {doc.get('engine_minutes', 0):.2f} engine-minutes over {doc.get('launches', 0)} launch(es), "
                 f"{doc.get('start_minutes', 0):.2f} of them starting engines; {doc.get('new_launches', 0)} launch(es) this run, "
                 f"{doc.get('reused_trials', 0)} trial(s) read back from earlier runs")  # fmt: skip
    b = doc.get("best")
    lines.append(f"best trial: #{b['number']} {b['folder']} {_usd(b['value'])}" if b else "best trial: none met the SLO")
    return "\n".join(lines)


def decide_folder(groups: dict[str, Any]) -> Callable[[Path], dict[str, Any]]:
    """decide(sweep_dir) -> decision, as `python -m analysis.decide` would at the runs' slo, pricing and
    quality, written to a scratch file (the sweep's own decision.json is written at its end)."""
    from analysis.decision import default_config, run_decision

    def decide(sweep_dir: Path) -> dict[str, Any]:
        cfg = default_config(**groups)
        # the objective is the cost's point estimate, which the replicates do not change; fewer of them
        # make the per-trial decision ~3x faster (8.8 -> 3.1 s over 4 trials; measured). The sweep's own
        # decision.json at the end uses the configured n_boot.
        cfg.n_boot = min(int(cfg.n_boot), OBJECTIVE_N_BOOT)
        with tempfile.TemporaryDirectory(prefix="servelab-tune-") as tmp:
            cfg.output = str(Path(tmp) / "decision.json")
            d, _ = run_decision(Path(sweep_dir).resolve(), cfg)
        return d

    return decide


def preflight_check(compose: Callable[[list[str]], Any]) -> Callable[[list[str]], list[str]]:
    """check(overrides) -> preflight's problems of the run those overrides compose (no engine started;
    engine discovery is cached per interpreter, GPU count and model)."""
    from engines import ADAPTERS
    from experiments import discover, preflight

    facts_cache: dict[tuple[Any, ...], Any] = {}

    def check(overrides: list[str]) -> list[str]:
        try:
            cfg = compose(overrides)
        except Exception as e:  # noqa: BLE001 - a value Hydra cannot compose is a problem of the space
            return [f"cannot compose: {e}"]
        cls = ADAPTERS.get(cfg.engine.name)
        adapter = cls(cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload) if cls else None
        facts = None
        if adapter is not None:
            k = (cfg.engine.name, cfg.engine.python, cfg.gpu.count, cfg.model.path)
            if k not in facts_cache:
                facts_cache[k] = discover.host_facts(adapter, cfg.engine, cfg.gpu.count, cfg.model.path)
            facts = facts_cache[k]
        return preflight.plan_problems(cfg) + [p for p in preflight.check(cfg, adapter, facts)
                                               if p not in preflight.plan_problems(cfg)]  # fmt: skip

    return check


__all__ = ["TUNE_JSON", "JobResult", "Outcome", "TuneConfig", "TuneParam", "config_problems", "decide_folder",
           "distributions", "enabled", "engine_time", "outcome", "preflight_check", "run_search", "space_points",
           "space_problems", "space_size", "summary_text", "totals", "trial_overrides"]  # fmt: skip
