"""What the seeds' cost techniques would save on this workload: the what-if math. Pure (no I/O).

Four techniques, each a row of one table (`decision.json` `whatif`, docs/whatif.md):

prefix caching (measured): the same engine with its prefix cache on and off on one workload.
  hit_rate            = increase of vllm:prefix_cache_hits_total / increase of
                        vllm:prefix_cache_queries_total over the point's measure window (tokens)
  ttft_ms_p50_delta   = TTFT p50 (on) - TTFT p50 (off)       (negative: caching is faster)
  usd_per_1m_saved    = $/1M (off) - $/1M (on)                (at the SLO: the selection's goodput $/1M
                        when both variants are candidates, else the common point's)
  usd_per_month_saved = usd_per_1m_saved * output tokens per month / 1e6

semantic cache (simulated on measured costs): prompts embedded by a stated local embedder
(TF-IDF character n-grams, analysis.whatif.TfidfEmbedder), replayed in arrival order through a
cache with a cosine threshold theta and a TTL:
  request j (time t_j): expire entries with t_j - t_insert > ttl_s; s = max_k cos(v_j, v_k);
    s >= theta -> hit (false hit when the entry's cluster != j's cluster; hits insert nothing and
    refresh nothing); else miss, and j's prompt is inserted at t_j (its answer assumed cached at once)
  hit_rate = hits / requests,  false_hit_rate = false hits / requests,
  false_hit_share_of_hits = false hits / hits,  ideal_hit_rate = requests whose cluster is in the
    cache's window (ttl) before them / requests (what a perfect embedder would reach)
  usd_per_month_saved = hit_rate * requests per month * measured $ per request
  hit latency = the measured lookup (embed + similarity search) median ms; miss = lookup + E2E

cascade routing (from two measured variants): a router sends request i to the large variant
(escalates) when its prompt tokens > threshold (rule prompt_length), else to the small one:
  e = escalated / requests
  usd_per_request_blended = (1 - e) c_small + e c_large        (c = measured $ per request)
  usd_per_1m_output_blended = usd_per_request_blended / ((1 - e) o_small + e o_large) * 1e6
  cost_reduction = 1 - usd_per_request_blended / c_large        (vs everything on the large one)
  e2e_ms_p50_blended = (1 - e) E2E_small + e E2E_large + router median ms
  quality_blended = (1 - e) q_small + e q_large                 (when a quality entry exists)

autoscaling and spot: rows of the capacity plan (analysis.capacity), nothing recomputed:
  saved(policy) = monthly $ static_peak - monthly $ policy; SLO-miss minutes per month = the plan's
  (scale-up lag = provisioning + measured engine start); spot: interruptions per month x restart s
  = replica-minutes lost per month.

$ per request of a variant at a point = $/1M output tokens x mean output tokens per request / 1e6
(= billed $/hour / (req/s x 3600): the measured throughput at that point).

Side effects: none (the router and lookup timings read the clock; nothing else).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TECHNIQUES = ("prefix_cache", "semantic_cache", "cascade", "autoscaling")
RULES = ("prompt_length",)
ANALYZERS = ("char", "char_wb")
EPS = 1e-9  # cosine ties: an identical prompt scores 1 - rounding

SEED_CLAIMS = {
    "cascade": {
        "claim": "90% of simple queries go to a tiny model ... an 87% cost reduction; router latency 15-25 ms",
        "cost_reduction": 0.87, "share_to_small": 0.90, "router_ms": [15.0, 25.0],
        "source": "../shared/seeds/002_400661b782f52eab.txt (seed text, undated; read 2026-12-01)",
        "reference": "../shared/reference/cost-and-capacity.md (d): 87% has no primary source; FrugalGPT (TMLR 2024) "
                     "up to 98% on specific tasks, RouteLLM (LMSYS 2024-07-01) >85% MT-Bench, 45% MMLU, 35% GSM8K "
                     "at 95% of GPT-4 quality: savings depend on the workload (35-98%)",
    },
    "semantic_cache": {
        "claim": "cosine similarity > 0.95 (seed 000); 0.8 with all-MiniLM-L6-v2 (seed 003)",
        "threshold": 0.95,
        "source": "../shared/seeds/000_ddd5f64ab77de8d9.txt, 003_2c315db2b3629012.txt (seed texts, undated; read 2026-12-01)",
        "reference": "../shared/reference/cost-and-capacity.md (d): no universal constant; vLLM Semantic Router's "
                     "default similarity_threshold is 0.86 (config/config.yaml, 2026-08); vCache (arXiv 2502.03771): "
                     "static thresholds give no correctness guarantee. The threshold depends on the embedder: "
                     "a TF-IDF character n-gram cosine is not a sentence-embedding cosine",
    },
    "spot": {
        "claim": "up to 70-90% off on-demand prices; instances can be preempted",
        "source": "../shared/seeds/003_2c315db2b3629012.txt (seed text, undated; read 2026-12-01)",
    },
}  # fmt: skip


# -- configuration (conf/whatif/, composed by analysis.decide) -----------------------------------
@dataclass
class SemanticCacheConfig:
    thresholds: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99])
    threshold: float = 0.8  # the operating threshold the table row reports
    ttl_s: float = 3600.0
    # the embedder: sklearn TfidfVectorizer(analyzer, ngram_range=(ngram_min, ngram_max), sublinear_tf), L2-normalised
    analyzer: str = "char_wb"
    ngram_min: int = 3
    ngram_max: int = 5
    sublinear_tf: bool = True
    # no paraphrase run measured: prompts from loadgen.workload.paraphrase_clusters with these settings
    num_clusters: int = 16
    paraphrases_per_cluster: int = 4
    requests: int = 256
    seed: int = 0


@dataclass
class CascadeConfig:
    small: str | None = None  # variant label or id; null = the cheaper of exactly two variants differing in model/quant
    large: str | None = None
    rule: str = "prompt_length"  # prompt_length: escalate when prompt tokens > threshold
    threshold: float | None = None  # prompt tokens; null = the 90th percentile of the routed stream (the seed's 90 %)


@dataclass
class WhatIfConfig:
    """conf/whatif/: which techniques the decision evaluates, and their settings (docs/whatif.md)."""

    name: str = "none"
    techniques: list[str] = field(default_factory=list)
    # volume for $ per month; null = the capacity plan's demand (mean req/s x hours_per_month x 3600)
    requests_per_month: float | None = None
    variant: str | None = None  # whose costs the semantic cache and autoscaling rows use; null = the chosen one
    semantic_cache: SemanticCacheConfig = field(default_factory=SemanticCacheConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)


def config_problems(w: Any) -> list[str]:
    """Bad what-if settings, one line each naming the fix."""
    from loadgen.workload import MAX_CLUSTERS, MAX_PARAPHRASES

    def number(x: Any) -> bool:  # finite: NaN and infinity pass no range check
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    out = []
    bad = [t for t in w.techniques if t not in TECHNIQUES]
    if bad:
        out.append(f"whatif.techniques: unknown {bad}; use any of {list(TECHNIQUES)} (or whatif=all|none)")
    if w.requests_per_month is not None and not (number(w.requests_per_month) and w.requests_per_month >= 0):
        out.append(f"whatif.requests_per_month={w.requests_per_month} must be >= 0, or null (the capacity plan's demand)")
    s = w.semantic_cache
    if not s.thresholds or any(not (number(t) and 0 < t <= 1) for t in s.thresholds):
        out.append(f"whatif.semantic_cache.thresholds={list(s.thresholds)} must be a non-empty list of cosines in (0, 1]")
    if not (number(s.threshold) and 0 < s.threshold <= 1):
        out.append(f"whatif.semantic_cache.threshold={s.threshold} must be in (0, 1]")
    if not (number(s.ttl_s) and s.ttl_s > 0):
        out.append(f"whatif.semantic_cache.ttl_s={s.ttl_s} must be > 0")
    if s.analyzer not in ANALYZERS:
        out.append(f"whatif.semantic_cache.analyzer={s.analyzer!r}: use char or char_wb")
    if not 1 <= s.ngram_min <= s.ngram_max:
        out.append(f"whatif.semantic_cache.ngram_min={s.ngram_min}, whatif.semantic_cache.ngram_max={s.ngram_max}: "
                   "need 1 <= ngram_min <= ngram_max")  # fmt: skip
    if not 1 <= s.num_clusters <= MAX_CLUSTERS:
        out.append(f"whatif.semantic_cache.num_clusters={s.num_clusters} must be 1..{MAX_CLUSTERS}")
    if not 1 <= s.paraphrases_per_cluster <= MAX_PARAPHRASES:
        out.append(f"whatif.semantic_cache.paraphrases_per_cluster={s.paraphrases_per_cluster} must be 1..{MAX_PARAPHRASES}")
    if s.requests < 1:
        out.append(f"whatif.semantic_cache.requests={s.requests} must be >= 1")
    c = w.cascade
    if c.rule not in RULES:
        out.append(f"whatif.cascade.rule={c.rule!r}: use prompt_length")
    if c.threshold is not None and not (number(c.threshold) and c.threshold >= 0):
        out.append(f"whatif.cascade.threshold={c.threshold} must be >= 0 (prompt tokens), or null (the 90th percentile)")
    if c.small is not None and c.small == c.large:
        out.append(f"whatif.cascade.small and whatif.cascade.large are both {c.small!r}: name two different variants")
    return out


# -- the embedder --------------------------------------------------------------------------------
class TfidfEmbedder:
    """TF-IDF over character n-grams (scikit-learn TfidfVectorizer), rows L2-normalised, so the
    cosine of two prompts is their dot product. Fitted on the simulation's own distinct prompts
    (offline, local, deterministic)."""

    def __init__(self, analyzer: str = "char_wb", ngram_min: int = 3, ngram_max: int = 5, sublinear_tf: bool = True):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.params = {"analyzer": analyzer, "ngram_range": [ngram_min, ngram_max], "sublinear_tf": sublinear_tf,
                       "lowercase": True, "norm": "l2"}  # fmt: skip
        self._vec = TfidfVectorizer(analyzer=analyzer, ngram_range=(ngram_min, ngram_max), sublinear_tf=sublinear_tf,
                                    lowercase=True, norm="l2", dtype=np.float64)  # fmt: skip

    def fit(self, prompts: Sequence[str]) -> TfidfEmbedder:
        self._vec.fit(list(prompts))
        return self

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        return self._vec.transform(list(prompts)).toarray()

    def describe(self) -> dict[str, Any]:
        import sklearn

        return {"name": "tfidf-char-ngrams", "library": f"scikit-learn {sklearn.__version__} TfidfVectorizer",
                **self.params, "vocabulary": len(self._vec.vocabulary_), "fitted_on": "the simulated stream's distinct prompts"}  # fmt: skip


# -- the semantic cache ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheResult:
    threshold: float
    ttl_s: float
    requests: int
    hits: int
    false_hits: int
    hit_rate: float
    false_hit_rate: float
    false_hit_share_of_hits: float
    ideal_hit_rate: float
    entries_inserted: int
    lookup_ms_p50: float | None = None  # measured only when a lookup function is timed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate_cache(vectors: np.ndarray, clusters: Sequence[Any], times_s: Sequence[float], threshold: float,
                   ttl_s: float, lookup: Callable[[int], np.ndarray] | None = None,
                   clock: Callable[[], int] = time.perf_counter_ns) -> CacheResult:  # fmt: skip
    """Replay requests (row j of `vectors`, unit length, in arrival order) through the cache (module doc).

    `lookup(j)`, when given, returns request j's vector the way a real cache would get it (embedding
    its prompt); the lookup (that call + the similarity search) is then timed per request and its
    median reported as lookup_ms_p50.
    """
    n = len(clusters)
    if not (len(vectors) == n == len(times_s)):
        raise ValueError("vectors, clusters and times_s must have one entry per request")
    order = np.argsort(np.asarray(times_s, dtype=float), kind="stable")
    d = vectors.shape[1] if n else 0
    cache = np.zeros((max(n, 1), d))
    c_cluster: list[Any] = []
    c_time = np.zeros(max(n, 1))
    size = 0
    hits = false = ideal = 0
    ideal_at: dict[Any, float] = {}  # a perfect embedder's cache: cluster -> when it was inserted
    lookups: list[int] = []
    for j in order:
        t = float(times_s[j])
        cl = clusters[j]
        if cl in ideal_at and t - ideal_at[cl] <= ttl_s:
            ideal += 1
        else:
            ideal_at[cl] = t
        t0 = clock() if lookup is not None else 0
        v = lookup(j) if lookup is not None else vectors[j]
        best_k, best = -1, -1.0
        if size:
            sims = cache[:size] @ v
            sims[t - c_time[:size] > ttl_s] = -np.inf  # expired entries
            best_k = int(np.argmax(sims))
            best = float(sims[best_k])
        if lookup is not None:
            lookups.append(clock() - t0)
        if best_k >= 0 and best >= threshold - EPS:
            hits += 1
            false += int(c_cluster[best_k] != cl)
        else:
            cache[size] = vectors[j]
            c_cluster.append(cl)
            c_time[size] = t
            size += 1
    return CacheResult(
        threshold=float(threshold), ttl_s=float(ttl_s), requests=n, hits=hits, false_hits=false,
        hit_rate=hits / n if n else 0.0, false_hit_rate=false / n if n else 0.0,
        false_hit_share_of_hits=false / hits if hits else 0.0, ideal_hit_rate=ideal / n if n else 0.0,
        entries_inserted=int(size), lookup_ms_p50=float(np.median(lookups)) / 1e6 if lookups else None,
    )  # fmt: skip


# -- the cascade router -----------------------------------------------------------------------------
def escalates_by_prompt_length(prompt_tokens: float, threshold: float) -> bool:
    """The router rule prompt_length: send to the large variant when prompt tokens > threshold."""
    return prompt_tokens > threshold


def route(prompt_tokens: Sequence[float], threshold: float, clock: Callable[[], int] = time.perf_counter_ns
          ) -> tuple[np.ndarray, float | None]:  # fmt: skip
    """(escalated mask, median router ms): the rule applied to every request, each call timed."""
    out = np.zeros(len(prompt_tokens), dtype=bool)
    ns = []
    for i, p in enumerate(prompt_tokens):
        t0 = clock()
        out[i] = escalates_by_prompt_length(float(p), threshold)
        ns.append(clock() - t0)
    return out, (float(np.median(ns)) / 1e6 if ns else None)


@dataclass(frozen=True)
class CascadeResult:
    requests: int
    escalated: int
    escalation_rate: float
    usd_per_request_small: float
    usd_per_request_large: float
    usd_per_request_blended: float
    usd_per_1m_output_blended: float | None
    usd_per_1m_output_large: float | None
    cost_reduction: float
    e2e_ms_p50_blended: float | None
    router_ms_p50: float | None
    quality_blended: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def blend(escalated: np.ndarray, *, usd_per_request_small: float, usd_per_request_large: float,
          output_tokens_small: float | None = None, output_tokens_large: float | None = None,
          e2e_ms_small: float | None = None, e2e_ms_large: float | None = None, router_ms: float | None = None,
          quality_small: float | None = None, quality_large: float | None = None) -> CascadeResult:  # fmt: skip
    """Share-weighted measured costs, latency and quality of a cascade (module doc)."""
    n = int(len(escalated))
    k = int(np.sum(escalated))
    e = k / n if n else 0.0
    c = (1 - e) * usd_per_request_small + e * usd_per_request_large
    tok = None
    if output_tokens_small and output_tokens_large:
        tok = (1 - e) * output_tokens_small + e * output_tokens_large
    lat = None
    if e2e_ms_small is not None and e2e_ms_large is not None:
        lat = (1 - e) * e2e_ms_small + e * e2e_ms_large + (router_ms or 0.0)
    q = None
    if quality_small is not None and quality_large is not None:
        q = (1 - e) * quality_small + e * quality_large
    return CascadeResult(
        requests=n, escalated=k, escalation_rate=e, usd_per_request_small=usd_per_request_small,
        usd_per_request_large=usd_per_request_large, usd_per_request_blended=c,
        usd_per_1m_output_blended=c / tok * 1e6 if tok else None,
        usd_per_1m_output_large=usd_per_request_large / output_tokens_large * 1e6 if output_tokens_large else None,
        cost_reduction=1 - c / usd_per_request_large if usd_per_request_large else 0.0, e2e_ms_p50_blended=lat,
        router_ms_p50=router_ms, quality_blended=q,
    )  # fmt: skip


# -- costs and volumes -------------------------------------------------------------------------------
def usd_per_request(usd_per_1m_output: float | None, output_tokens_mean: float | None) -> float | None:
    """$ per request = $/1M output tokens x mean output tokens / 1e6 (module doc)."""
    if usd_per_1m_output is None or output_tokens_mean is None or not math.isfinite(usd_per_1m_output):
        return None
    return usd_per_1m_output * output_tokens_mean / 1e6


def requests_per_month(profile_rps: Sequence[float], hours_per_month: float) -> float:
    """Mean of the (periodic) profile x hours_per_month x 3600."""
    return float(np.mean(profile_rps)) * hours_per_month * 3600.0 if len(profile_rps) else 0.0


def prefix_hit_rate(engine_metrics: Mapping[str, Any] | None) -> float | None:
    """Hit tokens / queried tokens over a window from summarize_engine_metrics' increases; 0.0 when
    the engine reported counters that did not move (prefix caching off); None without counters."""
    em = engine_metrics or {}
    q, h = em.get("prefix_cache_queries_total_increase"), em.get("prefix_cache_hits_total_increase")
    if q is None:
        return None
    return float(h or 0.0) / q if q > 0 else 0.0


# -- table rows --------------------------------------------------------------------------------------
def row(technique: str, *, evaluated: bool, why: str = "", measured_inputs: Sequence[Mapping[str, Any]] = (),
        assumptions: Sequence[str] = (), usd_per_month_saved: float | None = None, usd_per_1m_saved: float | None = None,
        latency_cost: str = "", quality_cost: str = "", headline: str = "", details: Mapping[str, Any] | None = None,
        variant: str = "") -> dict[str, Any]:  # fmt: skip
    """One row of the what-if table; not evaluated rows carry `why` (what is missing, what to run)."""
    return {"technique": technique, "variant": variant, "status": "evaluated" if evaluated else "not_evaluated",
            "why": why, "headline": headline, "measured_inputs": [dict(m) for m in measured_inputs],
            "assumptions": list(assumptions), "usd_per_month_saved": usd_per_month_saved,
            "usd_per_1m_saved": usd_per_1m_saved, "latency_cost": latency_cost, "quality_cost": quality_cost,
            "details": dict(details or {})}  # fmt: skip


def not_evaluated(technique: str, why: str) -> dict[str, Any]:
    return row(technique, evaluated=False, why=why)


POLICIES = (("autoscaled", "autoscaling (reactive, 24-hour profile)"),
            ("reserved_base_on_demand_burst", "reserved base + on-demand burst"),
            ("reserved_base_on_demand_burst_spot", "reserved base + on-demand burst + spot share"))  # fmt: skip


def policy_rows(plan: Mapping[str, Any], *, restart_s: float | None, engine_start: Mapping[str, Any],
                pricing_name: str, demand_source: str) -> list[dict[str, Any]]:  # fmt: skip
    """What-if rows of one capacity plan (analysis.capacity.CapacityPlan.to_dict()): each purchasing
    policy against static peak provisioning, with the plan's SLO-miss minutes (and spot interruptions)."""
    m = plan["monthly_usd"]
    static = m.get("static_peak")
    lag = plan.get("scale_up_lag_s")
    miss = plan.get("slo_miss_minutes_per_month")
    inputs = [{**engine_start, "what": f"engine start {engine_start.get('value_s')} s (scale-up lag {lag:.0f} s with provisioning)"},
              {"run_id": "capacity plan", "what": f"mu {plan['mu_rps']:.3g} req/s per replica, {plan['replicas_peak']} replicas at "
                                                  f"peak {plan['peak_rps']:g} req/s"}]  # fmt: skip
    base_assume = [f"demand: {demand_source}", "reactive autoscaler, demand constant per bin, billing from provisioning start "
                   "(docs/decision.md capacity plan)"]  # fmt: skip
    out = []
    for key, name in POLICIES:
        v = m.get(key)
        if v is None or static is None:
            need = "spot price, reserved price and interruption rate" if key.endswith("spot") else "reserved price"
            out.append(not_evaluated(name, f"pricing={pricing_name} has no {need} for this GPU: decide with a book that has "
                                           "them (e.g. pricing=aws_on_demand on GPU runs) or set pricing.gpus.<gpu>.spot=..., "
                                           "pricing.gpus.<gpu>.reserved_1y=..., pricing.spot_interruptions_per_hour=..."))  # fmt: skip
            continue
        lat = f"SLO-miss {miss:.0f} min/month during scale-ups" if miss is not None else ""
        assume = list(base_assume)
        det: dict[str, Any] = {"usd_per_month": v, "usd_per_month_static_peak": static, "slo_miss_minutes_per_month": miss}
        if key.endswith("spot"):
            f = plan.get("spot_interruptions_per_month")
            lost = f * restart_s / 60.0 if f is not None and restart_s is not None else None
            det |= {"spot_interruptions_per_month": f, "spot_restart_s": restart_s, "replica_minutes_lost_per_month": lost,
                    "spot_effective_usd_per_hour": plan.get("spot_effective_usd_per_hour")}  # fmt: skip
            if lost is not None:
                lat += f"; {f:.1f} spot interruptions/month x {restart_s:.0f} s restart = {lost:.0f} replica-min lost"
            assume.append("each interruption loses one replica for the restart time (engine start); spare replicas may "
                          "absorb it, so the lost minutes are an upper bound on SLO misses")  # fmt: skip
        if demand_source == "peak":
            assume.append("only a peak was given: the profile is flat, so autoscaling cannot save anything (capacity=example "
                          "for a 24-hour profile)")  # fmt: skip
        out.append(row(name, evaluated=True, measured_inputs=inputs, assumptions=assume, usd_per_month_saved=static - v,
                       latency_cost=lat, headline=f"${static:,.0f} -> ${v:,.0f} per month", details=det,
                       variant=str(plan.get("variant_label") or "")))  # fmt: skip
    return out
