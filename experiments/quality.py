"""The quality run of one launch: the gate's prompt sets sent to a ready engine lease, raw rows kept.

After a launch's load points (experiments.runner), with quality=gate:
1. every prompt of the generic set is completed greedily (temperature 0, `max_new_tokens`, EOS
   ignored so every continuation has the same length) and every task prompt greedily up to the
   first newline; token ids and their log-probabilities are kept where the engine returns them;
2. where the engine has prompt log-probabilities (adapter.quality_measure == "prompt_logprobs"),
   the *reference* continuation of each generic prompt is sent back as part of the prompt
   (teacher forcing: the reference's own prompt token ids + its continuation ids, max_tokens 1,
   prompt_logprobs 1) and the log-probability and rank the engine gives each of its tokens is kept.
   The reference is the baseline's rows (quant=none of the same model, found in the experiment
   folder by find_reference); for the baseline itself, its own continuations;
3. where it has none but returns the top-k log-probabilities of generated tokens (OpenAI
   `logprobs: k` on completions, `logprobs: true, top_logprobs: k` on chat; quality_measure
   "generated_topk": SGLang, TGI), step 1 asks for them (quality.top_logprobs) and keeps each
   generated token, its log-probability and the top-k (analysis.quality.generated_topk scores
   them up to the first divergence); otherwise the greedy text alone is kept (measure "text").
Rows go to quality.parquet (one per prompt), the summary to quality.json, both atomically. The
figures are computed from them later by analysis.quality (docs/quality.md).

:func:`baseline_first` measures the baseline variant first where the experiment has none (through
the runner's own entry, in this process); :func:`quality_phase` is the step the runner calls.

Side effects: HTTP requests to the lease's engine; writes quality.parquet / quality.json in the
run folder; reads earlier quality.json/parquet files of the experiment.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.records.atomic import write_json_atomic
from analysis.records.identity import stable_hash
from experiments.artifacts import write_parquet
from loadgen import quality_sets

log = logging.getLogger("servelab")

QUALITY_JSON = "quality.json"
QUALITY_ROWS = "quality.parquet"
SCHEMA_VERSION = 1
MIN_OK_SHARE = 0.9  # below this share of answered prompts the quality run counts as failed


def is_baseline(cfg: Any) -> bool:
    return cfg.quant.name == cfg.quality.baseline_quant


def prompt_items(q: Any) -> list[dict[str, Any]]:
    """The prompts of this quality config, in order: generic then tasks (set, prompt_key, prompt, answer)."""
    generic = quality_sets.load_set(q.generic_path or quality_sets.GENERIC_PATH, need_answers=False)
    generic = generic[: q.num_prompts] if q.num_prompts else generic
    task_path = quality_sets.TASK_PATH if q.task_path is None else q.task_path
    tasks = quality_sets.load_set(task_path, need_answers=True) if task_path else []
    tasks = tasks[: q.num_tasks] if q.num_tasks else tasks
    out = [{"set": "generic", "prompt_key": g["id"], "prompt": g["prompt"], "answer": None} for g in generic]
    out += [{"set": "tasks", "prompt_key": t["id"], "prompt": t["prompt"], "answer": t["answer"]} for t in tasks]
    return out


def sets_key(q: Any, items: list[dict[str, Any]]) -> str:
    """What a reference must share with a variant to be comparable: the prompts and lengths."""
    return stable_hash({"prompts": [(i["set"], i["prompt_key"]) for i in items], "max_new_tokens": q.max_new_tokens,
                        "task_max_tokens": q.task_max_tokens})  # fmt: skip


@dataclass
class Reference:
    """The baseline's quality rows a variant is scored against."""

    run_id: str
    variant_id: str
    path: Path
    rows: pd.DataFrame


def find_reference(experiment_dir: Path, cfg: Any, key: str) -> Reference | None:
    """The newest complete baseline quality run of the same model (and prompt sets) in the experiment,
    preferring the same engine."""
    found: list[tuple[int, float, Path, dict[str, Any]]] = []
    for qj in Path(experiment_dir).glob(f"*/launch-*/{QUALITY_JSON}"):
        try:
            d = json.loads(qj.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (d.get("status") == "ok" and d.get("role") == "baseline" and d.get("model") == cfg.model.name
                and d.get("sets_key") == key and (qj.parent / QUALITY_ROWS).is_file()):  # fmt: skip
            found.append((int(d.get("engine") == cfg.engine.name), qj.stat().st_mtime, qj, d))
    if not found:
        return None
    _, _, qj, d = max(found, key=lambda t: (t[0], t[1]))
    return Reference(run_id=d["run_id"], variant_id=d["variant_id"], path=qj.parent / QUALITY_ROWS,
                     rows=pd.read_parquet(qj.parent / QUALITY_ROWS))  # fmt: skip


# The most one quality answer may be (its JSON holds top-k log-probabilities of every token).
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class Client:
    """Blocking OpenAI-completions calls for the quality run (one requests.Session per thread)."""

    def __init__(self, base_url: str, model: str, headers: dict[str, str], timeout_s: float, fields: Any,
                 chat: bool = False) -> None:  # fmt: skip
        # chat: an engine that serves chat completions only (TGI); greedy text, no token ids
        self.chat = chat
        self.url = base_url.rstrip("/") + ("/v1/chat/completions" if chat else "/v1/completions")
        self.model, self.headers, self.timeout_s, self.fields = model, headers, timeout_s, fields
        self._local = threading.local()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import requests

        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        # No redirects: the key in self.headers goes to the configured server only. The answer is read
        # by blocks against a total deadline (requests' timeout is per read: a slow drip never ends)
        # and a cap (an endpoint is not trusted: docs/security.md).
        deadline = time.monotonic() + self.timeout_s
        r = s.post(self.url, json={"model": self.model, **body}, headers=self.headers, timeout=self.timeout_s,
                   allow_redirects=False, stream=True)  # fmt: skip
        try:
            data = bytearray()
            for block in r.iter_content(65536):
                data += block
                if len(data) > MAX_ANSWER_BYTES:
                    raise RuntimeError(f"answer over {MAX_ANSWER_BYTES} bytes; not read further")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete answer within {self.timeout_s} s (quality.request_timeout_s, total)")
        finally:
            r.close()
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {bytes(data[:200]).decode(errors='replace')}")
        return json.loads(bytes(data))

    def generate(self, prompt: str, max_tokens: int, *, fixed_length: bool, stop: list[str] | None,
                 top_logprobs: int | None = None) -> dict[str, Any]:  # fmt: skip
        """One greedy completion. `top_logprobs` k: also the top-k log-probabilities of every
        generated token (OpenAI's fields), kept as gen_tokens / gen_logprobs / gen_top_logprobs_json."""
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                                **self.fields(fixed_length)}  # fmt: skip
        if stop:
            body["stop"] = stop
        if self.chat:
            body["messages"] = [{"role": "user", "content": body.pop("prompt")}]
            if top_logprobs:
                body.update(logprobs=True, top_logprobs=top_logprobs)
            c = self._post(body)["choices"][0]
            out = {"gen_text": (c.get("message") or {}).get("content") or "", "gen_token_ids": None,
                   "gen_logprobs": None, "prompt_token_ids": None, "finish_reason": c.get("finish_reason")}  # fmt: skip
            if top_logprobs:
                content = (c.get("logprobs") or {}).get("content")
                if not content:
                    raise RuntimeError("logprobs.content missing from the chat answer (top_logprobs asked)")
                out.update(gen_tokens=[e["token"] for e in content], gen_logprobs=[float(e["logprob"]) for e in content],
                           gen_top_logprobs_json=json.dumps([{t["token"]: float(t["logprob"]) for t in e.get("top_logprobs") or []}
                                                             for e in content]))  # fmt: skip
            return out
        if top_logprobs:
            body["logprobs"] = top_logprobs
        c = self._post(body)["choices"][0]
        lp = c.get("logprobs") or {}
        out = {"gen_text": c.get("text") or "", "gen_token_ids": c.get("token_ids"), "gen_logprobs": lp.get("token_logprobs"),
               "prompt_token_ids": c.get("prompt_token_ids"), "finish_reason": c.get("finish_reason")}  # fmt: skip
        if top_logprobs:
            if not lp.get("tokens") or lp.get("top_logprobs") is None:
                raise RuntimeError("logprobs.tokens / top_logprobs missing from the answer (logprobs asked)")
            out.update(gen_tokens=list(lp["tokens"]), gen_top_logprobs_json=json.dumps(
                [{k: float(v) for k, v in (d or {}).items()} for d in lp["top_logprobs"]]))  # fmt: skip
        return out

    def score(self, prompt_ids: list[int], cont_ids: list[int]) -> tuple[list[float], list[int]]:
        """Log-probability and rank of each token of cont_ids after prompt_ids (teacher forcing)."""
        c = self._post({"prompt": list(prompt_ids) + list(cont_ids), "max_tokens": 1, "temperature": 0.0,
                        "prompt_logprobs": 1})["choices"][0]  # fmt: skip
        pl = c.get("prompt_logprobs")
        if not pl or len(pl) != len(prompt_ids) + len(cont_ids):
            raise RuntimeError(f"prompt_logprobs missing or of length {len(pl or [])}, expected {len(prompt_ids) + len(cont_ids)}")
        lps, ranks = [], []
        for j, tok in enumerate(cont_ids):
            e = pl[len(prompt_ids) + j][str(tok)]
            lps.append(float(e["logprob"]))
            ranks.append(int(e["rank"]))
        return lps, ranks


def run_quality(lease: Any, cfg: Any, run_dir: Path, record: Any, *, experiment_dir: Path,
                progress: Any = None) -> dict[str, Any]:  # fmt: skip
    """The quality run against the ready `lease` (module doc); returns the summary written to quality.json."""
    from experiments.lease import auth_headers

    q = cfg.quality
    t0 = time.monotonic()
    items = prompt_items(q)
    key = sets_key(q, items)
    baseline = is_baseline(cfg)
    measure = lease.adapter.quality_measure
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": "servelab.quality", "run_id": record.run_id,
        "variant_id": record.variant_id, "engine": cfg.engine.name, "quant": cfg.quant.name, "model": cfg.model.name,
        "role": "baseline" if baseline else "variant", "baseline_quant": q.baseline_quant, "measure": measure,
        "sets_key": key, "n_generic": sum(i["set"] == "generic" for i in items),
        "n_tasks": sum(i["set"] == "tasks" for i in items), "max_new_tokens": q.max_new_tokens,
        "task_max_tokens": q.task_max_tokens, "concurrency": q.concurrency, "reference": None, "status": "running",
    }  # fmt: skip
    ref = None
    if not baseline:
        ref = find_reference(experiment_dir, cfg, key)
        if ref is None:
            summary.update(status="no_baseline", reason=f"no quant={q.baseline_quant} quality rows of model={cfg.model.name} "
                           f"with these prompt sets in {experiment_dir}; run quant={q.baseline_quant} quality=gate first")  # fmt: skip
            write_json_atomic(run_dir / QUALITY_JSON, summary)
            return summary
        summary["reference"] = {"run_id": ref.run_id, "variant_id": ref.variant_id, "path": str(ref.path)}
    chat = "completions" not in lease.adapter.usage_endpoints
    if chat and measure == "prompt_logprobs":  # teacher forcing needs token ids in the prompt: completions only
        measure = "text"
        summary["measure"] = measure
    topk = q.top_logprobs if measure == "generated_topk" else None
    if topk is not None:
        summary["top_logprobs"] = topk
    client = Client(lease.plan.base_url, lease.plan.served_model, auth_headers(lease.plan), q.request_timeout_s,
                    lease.adapter.quality_fields, chat=chat)  # fmt: skip
    done = [0]
    total = len(items) * (2 if measure == "prompt_logprobs" else 1)
    lock = threading.Lock()

    def tick(stage: str) -> None:
        with lock:
            done[0] += 1
            # a line per quarter: the full sets take about a minute on the CPU default
            if done[0] == total or done[0] % max(1, total // 4) == 0:
                log.info("quality: %s %d/%d requests", stage, done[0], total)

    def gen(it: dict[str, Any]) -> dict[str, Any]:
        if (why := lease.failure_reason()) is not None:
            raise lease.crash_error() from RuntimeError(why)
        row = {**it, "error": None}
        try:
            if it["set"] == "generic":
                row.update(client.generate(it["prompt"], q.max_new_tokens, fixed_length=True, stop=None,
                                           top_logprobs=topk))  # fmt: skip
            else:
                row.update(client.generate(it["prompt"], q.task_max_tokens, fixed_length=False, stop=["\n"]))
        except Exception as e:  # noqa: BLE001 - one failed prompt is recorded, not fatal
            row["error"] = f"generate: {type(e).__name__}: {e}"
        tick("generate")
        return row

    with ThreadPoolExecutor(max_workers=q.concurrency) as ex:
        rows = list(ex.map(gen, items))
        if measure == "prompt_logprobs":
            own = pd.DataFrame(rows)
            refrows = ref.rows if ref is not None else own
            refmap = {r.prompt_key: r for r in refrows[refrows["set"] == "generic"].itertuples()}

            def tf(row: dict[str, Any]) -> dict[str, Any]:
                if (why := lease.failure_reason()) is not None:
                    raise lease.crash_error() from RuntimeError(why)
                r = refmap.get(row["prompt_key"]) if row["set"] == "generic" else None
                row.update(tf_logprobs=None, tf_ranks=None, tf_reference_run_id=None)
                if r is not None and r.error is None and r.gen_token_ids is not None and r.prompt_token_ids is not None:
                    try:
                        lps, ranks = client.score([int(x) for x in r.prompt_token_ids], [int(x) for x in r.gen_token_ids])
                        row.update(tf_logprobs=lps, tf_ranks=ranks, tf_reference_run_id=ref.run_id if ref else record.run_id)
                    except Exception as e:  # noqa: BLE001
                        row["error"] = (row["error"] + "; " if row["error"] else "") + f"score: {type(e).__name__}: {e}"
                tick("teacher-forced")
                return row

            rows = list(ex.map(tf, rows))
    df = pd.DataFrame(rows)
    df.insert(0, "measure", measure)
    df.insert(0, "variant_id", record.variant_id)
    df.insert(0, "run_id", record.run_id)
    df["prompt_idx"] = range(len(df))
    write_parquet(df, run_dir / QUALITY_ROWS)
    n_err = int(df["error"].notna().sum())
    ok_share = 1 - n_err / max(len(df), 1)
    summary.update(status="ok" if ok_share >= MIN_OK_SHARE else "failed", errors=n_err, wall_s=round(time.monotonic() - t0, 3),
                   rows=QUALITY_ROWS)  # fmt: skip
    if n_err:
        summary["first_error"] = str(df["error"].dropna().iloc[0])
    if summary["status"] == "failed":
        summary["reason"] = f"{n_err} of {len(df)} prompts failed (first: {summary['first_error']})"
    write_json_atomic(run_dir / QUALITY_JSON, summary)
    log.info("quality: %s, %d prompts (%d generic, %d tasks), measure %s, %d errors, %.1f s%s", summary["role"], len(df),
             summary["n_generic"], summary["n_tasks"], measure, n_err, summary["wall_s"],
             f", reference {ref.run_id}" if ref else "")  # fmt: skip
    return summary


def quality_done(variant_dir: Path, cfg: Any) -> bool:
    """Whether a launch of this variant already has an ok quality run for the current prompt sets
    (False for unreadable sets: the run's preflight then refuses them in one line)."""
    try:
        key = sets_key(cfg.quality, prompt_items(cfg.quality))
    except quality_sets.QualitySetError:
        return False
    for qj in Path(variant_dir).glob(f"launch-*/{QUALITY_JSON}"):
        try:
            d = json.loads(qj.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if d.get("status") == "ok" and d.get("sets_key") == key:
            return True
    return False


# -- the quality step of a launch ------------------------------------------------------------------
def pending(cfg: Any, variant_dir: Path) -> bool:
    """Whether quality=gate still has to run for this variant (no ok quality run of these prompt sets)."""
    return cfg.quality is not None and cfg.quality.enabled and not quality_done(variant_dir, cfg)


def baseline_first(cfg: Any, variant_dir: Path, overrides: list[str] | None, *, launch: Callable[..., int],
                   progress: Any = None) -> None:  # fmt: skip
    """quality=gate on a quantized variant whose experiment has no baseline quality rows: the baseline
    (quant=<baseline_quant>, the same command otherwise) is measured first, as its own variant of the
    experiment (its points too, so the speed-up has a measured reference), through `launch`: the
    entry every variant of a sweep goes through (experiments.runner.run_variant), in this process.
    A variant that its own preflight refuses launches no baseline (its run is then refused with
    those problems in one line, as any other)."""
    from analysis.records.identity import launch_key
    from analysis.records.layout import variant_dir_name
    from engines.process import Supervisor
    from experiments.config import compose_run
    from experiments.lease import EngineLease

    q = cfg.quality
    if is_baseline(cfg) or not q.launch_baseline:
        return
    if problems := EngineLease(cfg, variant_dir, variant_dir, Supervisor(guardian=False)).prepare():
        log.info("quality: no baseline launched: this variant is refused (%s)", "; ".join(problems))
        return
    try:
        key = sets_key(q, prompt_items(q))
    except quality_sets.QualitySetError:
        return  # the variant's own preflight refuses the bad prompt set in one line
    if find_reference(variant_dir.parent, cfg, key) is not None:
        return
    keep = [o for o in (overrides or []) if o.split("=", 1)[0].lstrip("+~") not in ("quant", "hydra.mode")]
    base_overrides = [*keep, f"quant={q.baseline_quant}", f"experiment_name={cfg.experiment_name}",
                      f"results_dir={cfg.results_dir}"]  # fmt: skip
    base = compose_run(base_overrides)
    base_dir = Path(cfg.results_dir) / cfg.experiment_name / variant_dir_name(base.engine.name, base.quant.name,
                                                                              launch_key(base))  # fmt: skip
    log.info("quality: no quant=%s baseline rows in %s; launching the baseline first: %s", q.baseline_quant,
             variant_dir.parent, " ".join(base_overrides))  # fmt: skip
    rc = launch(base, base_dir, base_overrides, progress=progress)
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        log.error("quality: the baseline launch ended with exit %d; this variant's quality run will say no_baseline", rc)


def quality_phase(lease: Any, cfg: Any, run_dir: Path, record: Any, *, progress: Any = None) -> None:
    """The quality step of a launch after its load points: the gate's prompt sets against the ready
    lease (run_quality), its summary into run.json (`quality`, artifacts.quality)."""
    log.info("quality: the gate's prompt sets against %s/%s", cfg.engine.name, cfg.quant.name)
    record.quality = run_quality(lease, cfg, run_dir, record, experiment_dir=run_dir.parent.parent, progress=progress)
    if (run_dir / QUALITY_ROWS).is_file():
        record.artifacts["quality"] = QUALITY_ROWS
    record.save(run_dir)


__all__ = ["QUALITY_JSON", "QUALITY_ROWS", "Reference", "find_reference", "is_baseline", "prompt_items",
           "quality_done", "run_quality", "sets_key"]  # fmt: skip
