"""What is sent: workload items (prompts with their token counts), generated deterministically.

Pure: takes a tokenizer object (anything with ``encode(text) -> list[int]`` counting the tokens
the server will see, and ``decode(ids) -> str``), the workload config and a seed; returns
:class:`WorkloadItem` objects. Prompts are built and counted *before* the load starts, so no
tokenizer runs in the load generator's hot path. :func:`build_items` is the one entry point:

- ``synthetic``: random-vocabulary prompts; prompt and output lengths drawn per item from
  ``fixed | uniform | normal | lognormal`` (``workload.prompt_dist`` / ``output_dist``).
- ``sharegpt``: first human turn of conversations from a ShareGPT file (already loaded by
  :func:`loadgen.dataset.load_sharegpt`), the reply's token count as max_tokens.
- ``shared_prefix``: ``num_groups`` long common prefixes, each item one of them + a short distinct suffix.
- ``paraphrase``: ``num_clusters`` clusters of differently worded questions with the same meaning.
- ``fitted``: drawn from a trace's fitted shape; built by :mod:`loadgen.fitted` from the trace,
  not here (the settings are checked here).

Same config + same tokenizer (+ same dataset) = the same items, always.
The paraphrase templates are data (loadgen/data/paraphrase.json); the request wire format lives
in :mod:`loadgen.openai_api`.
Side effects: reads the packaged paraphrase data once at import (dataset files are read by
:mod:`loadgen.dataset`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from loadgen.dataset import ChatPair, DatasetError

WORKLOAD_KINDS = ("synthetic", "sharegpt", "shared_prefix", "paraphrase", "sessions", "fitted")
LENGTH_DISTS = ("fixed", "uniform", "normal", "lognormal")
# Between a shared prefix and its suffix, so the suffix cannot merge with the prefix's last token.
PREFIX_SEPARATOR = "\n\n"


class WorkloadError(ValueError):
    """Workload settings that cannot produce items; one line naming the setting to change."""


class TokenCounter(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    @property
    def vocab_ids(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class WorkloadItem:
    prompt_idx: int
    prompt: str
    prompt_tokens_client: int  # what `encode(prompt)` counts, specials (BOS) included
    max_tokens: int
    group: int | None = None  # shared_prefix: which prefix group (0-based)
    cluster: int | None = None  # paraphrase: which meaning cluster (0-based)
    reference_output_tokens: int | None = None  # sharegpt: token count of the dataset's reply
    source_index: int | None = None  # sharegpt: 0-based index of the conversation in the file
    session: Any = None  # sessions: the SessionPlan (loadgen.sessions); the item is its first request

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_idx": self.prompt_idx,
            "prompt": self.prompt,
            "prompt_tokens_client": self.prompt_tokens_client,
            "max_tokens": self.max_tokens,
            "group": self.group,
            "cluster": self.cluster,
            "reference_output_tokens": self.reference_output_tokens,
            "source_index": self.source_index,
        }


# -- lengths ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthDist:
    """Per-item token lengths: `mean` is the fixed value or the distribution's mean.

    `spread`: half-width (uniform), standard deviation (normal), sigma of the underlying normal
    (lognormal, whose mu is chosen so the mean stays `mean`). Draws are rounded to whole
    tokens, then clipped to [lo, hi]; clipping moves the mean when the bounds cut the tails.
    `field` ("prompt" or "output") names the workload settings in messages.
    """

    field: str
    dist: str
    mean: int
    spread: float = 0.0
    lo: int = 1
    hi: int | None = None

    @classmethod
    def of(cls, w: Any, field: str) -> LengthDist:
        return cls(
            field=field,
            dist=getattr(w, f"{field}_dist"),
            mean=getattr(w, f"{field}_tokens"),
            spread=getattr(w, f"{field}_spread"),
            lo=getattr(w, f"{field}_min"),
            hi=getattr(w, f"{field}_max"),
        )

    def problems(self, bounds_only: bool = False) -> list[str]:
        """One line per bad setting; `bounds_only` checks just min/max (kinds that only filter or clip)."""
        f, out = self.field, []
        if self.lo < 1:
            out.append(f"workload.{f}_min must be >= 1, got {self.lo}")
        if self.hi is not None and self.hi < max(self.lo, 1):
            out.append(f"workload.{f}_max={self.hi} is below workload.{f}_min={self.lo}; raise {f}_max or set it to null")
        if bounds_only or out:
            return out
        if self.dist not in LENGTH_DISTS:
            return [f"workload.{f}_dist={self.dist!r}: use one of {', '.join(LENGTH_DISTS)}"]
        if self.mean < 1:
            out.append(f"workload.{f}_tokens must be >= 1, got {self.mean}")
        elif not self.lo <= self.mean <= (self.hi if self.hi is not None else self.mean):
            out.append(
                f"workload.{f}_tokens={self.mean} is outside workload.{f}_min..{f}_max = {self.lo}..{self.hi}; "
                f"move {f}_tokens (the mean) inside the bounds"
            )
        if self.spread < 0 or not math.isfinite(self.spread):
            out.append(f"workload.{f}_spread must be a finite number >= 0, got {self.spread}")
        return out

    def upper(self) -> int | None:
        """The largest length it can give; None = unbounded (normal/lognormal without `hi`)."""
        natural: float = {
            "fixed": self.mean,
            "uniform": math.floor(self.mean + self.spread),
        }.get(self.dist, math.inf)
        if self.hi is not None:
            natural = min(natural, self.hi)
        return None if natural == math.inf else int(natural)

    def sample(self, n: int, rng: random.Random) -> list[int]:
        """`n` lengths drawn from `rng` (the same rng state gives the same lengths)."""
        if p := self.problems():
            raise WorkloadError(p[0])
        if self.dist == "fixed":
            raw = [self.mean] * n
        elif self.dist == "uniform":
            a, b = math.ceil(self.mean - self.spread), math.floor(self.mean + self.spread)
            raw = [rng.randint(a, b) for _ in range(n)]
        elif self.dist == "normal":
            raw = [round(rng.gauss(self.mean, self.spread)) for _ in range(n)]
        else:  # lognormal with E[X] = mean: mu = ln(mean) - sigma^2 / 2
            mu = math.log(self.mean) - self.spread**2 / 2
            raw = [round(rng.lognormvariate(mu, self.spread)) for _ in range(n)]
        hi = self.hi if self.hi is not None else math.inf
        return [int(min(max(x, self.lo), hi)) for x in raw]


def length_rng(seed: int, field: str) -> random.Random:
    """The random stream for `field` ("prompt"/"output") lengths: its own, so changing the output
    lengths never moves the prompts (and the prompt text keeps its own stream, `Random(seed)`)."""
    return random.Random(f"{seed}:{field}_len")


def _clip(x: int, lo: int, hi: int | None) -> int:
    return max(lo, x if hi is None else min(x, hi))


# -- prompts ---------------------------------------------------------------------------------


def fixed_length_prompt(tok: TokenCounter, n_tokens: int, rng: random.Random, max_iter: int = 50) -> tuple[str, int]:
    """A prompt of random vocabulary whose encoded length is `n_tokens` (or the closest reached).

    Decoding random ids and encoding the text again can merge or split tokens, so the id list
    is grown or cut until the round trip gives exactly `n_tokens`. Returns (text, count).
    """
    if n_tokens < 1:
        raise ValueError(f"prompt length must be >= 1 token, got {n_tokens}")
    vocab = tok.vocab_ids
    overhead = len(tok.encode(""))  # special tokens the tokenizer adds (e.g. BOS)
    ids = [rng.choice(vocab) for _ in range(max(n_tokens - overhead, 0))]
    text = tok.decode(ids)
    count = len(tok.encode(text))
    best = (abs(count - n_tokens), text, count)
    for _ in range(max_iter):
        if count == n_tokens:
            return text, count
        if count > n_tokens and ids:
            ids = ids[: max(len(ids) - (count - n_tokens), 0)]
        else:
            ids = ids + [rng.choice(vocab) for _ in range(n_tokens - count)]
        text = tok.decode(ids)
        count = len(tok.encode(text))
        best = min(best, (abs(count - n_tokens), text, count), key=lambda b: b[0])
    return best[1], best[2]


def _random_prompts(tok: TokenCounter, lengths: Sequence[int], outputs: Sequence[int], seed: int) -> list[WorkloadItem]:
    rng = random.Random(seed)
    items = []
    for i, (n, m) in enumerate(zip(lengths, outputs, strict=True)):
        text, count = fixed_length_prompt(tok, n, rng)
        items.append(WorkloadItem(prompt_idx=i, prompt=text, prompt_tokens_client=count, max_tokens=m))
    return items


def synthetic_items(tok: TokenCounter, prompt_tokens: int, output_tokens: int, num_prompts: int, seed: int) -> list[WorkloadItem]:
    """`num_prompts` distinct prompts of `prompt_tokens` tokens, each asking for `output_tokens`.

    The same items as :func:`build_items` for a synthetic workload with fixed lengths.
    """
    if output_tokens < 1:
        raise ValueError(f"workload.output_tokens must be >= 1, got {output_tokens}")
    if num_prompts < 1:
        raise ValueError(f"workload.num_prompts must be >= 1, got {num_prompts}")
    return _random_prompts(tok, [prompt_tokens] * num_prompts, [output_tokens] * num_prompts, seed)


# -- paraphrase clusters -----------------------------------------------------------------------

def _load_paraphrase_data() -> tuple[dict[str, tuple[tuple[str, ...], tuple[str, ...]]], tuple[str, ...]]:
    """The built-in paraphrase topics and lead-ins from loadgen/data/paraphrase.json (package data)."""
    raw = json.loads(resources.files("loadgen").joinpath("data/paraphrase.json").read_text(encoding="utf-8"))
    topics = {name: (tuple(t["templates"]), tuple(t["entities"])) for name, t in raw["topics"].items()}
    return topics, tuple(raw["leadins"])


# Each topic: question templates that all mean the same for one entity `{x}`, and its entities.
# Lead-ins are synonymous prefixes combined with every template ("" = the bare question).
PARAPHRASE_TOPICS, PARAPHRASE_LEADINS = _load_paraphrase_data()
MAX_CLUSTERS = sum(len(ents) for _, ents in PARAPHRASE_TOPICS.values())
MAX_PARAPHRASES = min(len(t) for t, _ in PARAPHRASE_TOPICS.values()) * len(PARAPHRASE_LEADINS)


def paraphrase_clusters(num_clusters: int, per_cluster: int, seed: int) -> list[tuple[str, list[str]]]:
    """`num_clusters` (label, questions) pairs, each with `per_cluster` distinct wordings. Pure.

    Clusters are (topic, entity) pairs in a seeded order; each cluster's wordings are its
    templates without lead-in first (most different), then with one, each set in a seeded order.
    """
    if not 1 <= num_clusters <= MAX_CLUSTERS:
        raise WorkloadError(f"workload.num_clusters must be 1..{MAX_CLUSTERS} (built-in topics), got {num_clusters}")
    if not 1 <= per_cluster <= MAX_PARAPHRASES:
        raise WorkloadError(f"workload.paraphrases_per_cluster must be 1..{MAX_PARAPHRASES}, got {per_cluster}")
    rng = random.Random(seed)
    pairs = [(topic, x) for topic, (_, ents) in PARAPHRASE_TOPICS.items() for x in ents]
    rng.shuffle(pairs)
    out = []
    for topic, x in pairs[:num_clusters]:
        templates = list(PARAPHRASE_TOPICS[topic][0])
        bare = [t.format(x=x) for t in templates]
        led = [lead + q for lead in PARAPHRASE_LEADINS if lead for q in bare]
        rng.shuffle(bare)
        rng.shuffle(led)
        out.append((f"{topic}:{x}", (bare + led)[:per_cluster]))
    return out


def _paraphrase_bound() -> int:
    """Upper bound on a paraphrase prompt's tokens: its UTF-8 bytes + 2 specials (no token is under a byte)."""
    longest_x = max(len(x.encode()) for _, ents in PARAPHRASE_TOPICS.values() for x in ents)
    longest_t = max(len(t.encode()) for ts, _ in PARAPHRASE_TOPICS.values() for t in ts)
    return max(len(s.encode()) for s in PARAPHRASE_LEADINS) + longest_t + longest_x + 2


# -- settings checks (shared by preflight and build_items) ----------------------------------------


def config_problems(w: Any) -> list[str]:
    """One line per bad workload setting, each naming the fix. Pure; reads no file."""
    if w.kind not in WORKLOAD_KINDS:
        return [f"workload.kind={w.kind!r}: use one of {', '.join(WORKLOAD_KINDS)}"]
    out: list[str] = []
    if w.kind == "sessions":
        from loadgen import sessions

        out += sessions.config_problems(w)
    prompt, output = LengthDist.of(w, "prompt"), LengthDist.of(w, "output")
    out += prompt.problems(bounds_only=w.kind != "synthetic")
    out += output.problems(bounds_only=w.kind in ("sharegpt", "fitted"))
    if w.kind in ("synthetic", "sharegpt", "shared_prefix", "fitted") and w.num_prompts < 1:
        out.append(f"workload.num_prompts must be >= 1, got {w.num_prompts}")
    if w.kind == "sharegpt" and not w.dataset_path:
        out.append(
            "workload.kind=sharegpt needs workload.dataset_path: set it to a ShareGPT JSON file, "
            "e.g. workload.dataset_path=tests/data/sharegpt_sample.json"
        )
    if w.kind == "shared_prefix":
        for name in ("num_groups", "prefix_tokens", "suffix_tokens"):
            if getattr(w, name) < 1:
                out.append(f"workload.{name} must be >= 1, got {getattr(w, name)}")
        if 1 <= w.num_prompts < w.num_groups:
            out.append(
                f"workload.num_groups={w.num_groups} is more than workload.num_prompts={w.num_prompts}: "
                "some groups would be empty; lower num_groups or raise num_prompts"
            )
    if w.kind == "paraphrase":
        if not 1 <= w.num_clusters <= MAX_CLUSTERS:
            out.append(f"workload.num_clusters must be 1..{MAX_CLUSTERS} (built-in topics), got {w.num_clusters}")
        if not 1 <= w.paraphrases_per_cluster <= MAX_PARAPHRASES:
            out.append(
                f"workload.paraphrases_per_cluster must be 1..{MAX_PARAPHRASES}, got {w.paraphrases_per_cluster}"
            )
    return out


def token_bounds(w: Any) -> tuple[int | None, int | None]:
    """(most prompt tokens, most output tokens) any item of `w` can have; None = not known before building."""
    output = LengthDist.of(w, "output")
    if w.kind in ("sharegpt", "fitted"):
        return w.prompt_max, w.output_max  # prompts (trace rows) outside the bounds are skipped
    if w.kind == "shared_prefix":
        prompt: int | None = w.prefix_tokens + len(PREFIX_SEPARATOR.encode()) + w.suffix_tokens
    elif w.kind == "paraphrase":
        prompt = _paraphrase_bound()
    elif w.kind == "sessions":  # the first turn's (later turns grow: a session ends at the context limit)
        user = LengthDist.of(w, "prompt").upper()
        prompt = None if user is None or w.steady_state else w.system_prompt_tokens + user
    else:
        prompt = LengthDist.of(w, "prompt").upper()
    return prompt, output.upper()


LENGTH_FIX = {
    "synthetic": "workload.prompt_max/output_max (or prompt_tokens/output_tokens)",
    "sharegpt": "workload.prompt_max/output_max",
    "shared_prefix": "workload.prefix_tokens/suffix_tokens/output_max",
    "paraphrase": "workload.output_max (or output_tokens)",
    "sessions": "workload.turns/prompt_max/output_max/system_prompt_tokens (a session ends at the limit; its first "
                "request must fit)",
    "fitted": "workload.prompt_max/output_max (trace rows outside them are left out of the fit)",
}


def context_problem(items: Sequence[WorkloadItem], limit: int | None, kind: str = "synthetic") -> str | None:
    """One line if some item's prompt + max_tokens exceeds the context `limit`, else None. Pure."""
    if not limit or not items:
        return None
    worst = max(items, key=lambda it: it.prompt_tokens_client + it.max_tokens)
    if worst.prompt_tokens_client + worst.max_tokens <= limit:
        return None
    n = sum(it.prompt_tokens_client + it.max_tokens > limit for it in items)
    return (
        f"{n} workload item(s) need more than the context limit of {limit} tokens (item {worst.prompt_idx}: "
        f"{worst.prompt_tokens_client}+{worst.max_tokens}); lower {LENGTH_FIX.get(kind, 'the workload lengths')} "
        "or raise engine.max_model_len"
    )


# -- the entry point -------------------------------------------------------------------------


def build_items(w: Any, tok: TokenCounter, dataset: Sequence[ChatPair] | None = None) -> list[WorkloadItem]:
    """The items of workload config `w`, counted with `tok`. Pure given the loaded `dataset`.

    `dataset` is required for kind=sharegpt (from :func:`loadgen.dataset.load_sharegpt`).
    Raises WorkloadError (bad settings) or DatasetError (a dataset that cannot give the items).
    """
    if p := config_problems(w):
        raise WorkloadError(p[0])
    outputs = LengthDist.of(w, "output")
    out_rng = length_rng(w.seed, "output")
    if w.kind == "synthetic":
        lengths = LengthDist.of(w, "prompt").sample(w.num_prompts, length_rng(w.seed, "prompt"))
        return _random_prompts(tok, lengths, outputs.sample(w.num_prompts, out_rng), w.seed)
    if w.kind == "fitted":
        raise WorkloadError("workload.kind=fitted is drawn from its trace: loadgen.fitted.fitted_items, not build_items")
    if w.kind == "sharegpt":
        if dataset is None:
            raise WorkloadError("workload.kind=sharegpt: build_items needs the loaded dataset (loadgen.dataset.load_sharegpt)")
        return _sharegpt_items(tok, w, dataset)
    if w.kind == "shared_prefix":
        return _shared_prefix_items(tok, w, outputs.sample(w.num_prompts, out_rng))
    if w.kind == "sessions":  # one item per planned session: its first request (counted), the plan with it
        from loadgen.sessions import build_sessions

        items = []
        for plan in build_sessions(w, tok):
            text = plan.first_request_text()
            items.append(WorkloadItem(plan.session_idx, text, len(tok.encode(text)), plan.turns[0].max_tokens,
                                      session=plan))  # fmt: skip
        return items
    clusters = paraphrase_clusters(w.num_clusters, w.paraphrases_per_cluster, w.seed)
    n = w.num_clusters * w.paraphrases_per_cluster
    max_tokens = outputs.sample(n, out_rng)
    # Round robin: the first pass asks every cluster once, later passes re-ask in other words.
    items = []
    for i in range(n):
        c, k = i % w.num_clusters, i // w.num_clusters
        q = clusters[c][1][k]
        items.append(WorkloadItem(i, q, len(tok.encode(q)), max_tokens[i], cluster=c))
    return items


def _sharegpt_items(tok: TokenCounter, w: Any, pairs: Sequence[ChatPair]) -> list[WorkloadItem]:
    """`num_prompts` conversations in a seeded order, skipping prompts outside prompt_min..prompt_max.

    max_tokens = the reply's token count (specials not counted), clipped to output_min..output_max.
    Only as many conversations are tokenized as needed, so a large file stays fast.
    """
    order = list(range(len(pairs)))
    random.Random(w.seed).shuffle(order)
    overhead = len(tok.encode(""))
    items: list[WorkloadItem] = []
    for k in order:
        pair = pairs[k]
        n = len(tok.encode(pair.prompt))
        if n < w.prompt_min or (w.prompt_max is not None and n > w.prompt_max):
            continue
        ref = max(len(tok.encode(pair.reference)) - overhead, 0)
        items.append(
            WorkloadItem(len(items), pair.prompt, n, _clip(ref, w.output_min, w.output_max),
                         reference_output_tokens=ref, source_index=pair.conversation)
        )  # fmt: skip
        if len(items) == w.num_prompts:
            return items
    source = Path(str(w.dataset_path)).expanduser()
    raise DatasetError(
        f"{source}: only {len(items)} of its {len(pairs)} usable conversations have prompts of "
        f"{w.prompt_min}..{w.prompt_max} tokens, {w.num_prompts} asked; lower workload.num_prompts to "
        f"{len(items)} or widen workload.prompt_min/prompt_max"
    )


def _shared_prefix_items(tok: TokenCounter, w: Any, max_tokens: Sequence[int], tries: int = 20) -> list[WorkloadItem]:
    """Item i belongs to group i % num_groups (round robin) and starts with its group's prefix.

    A group's prefix is `prefix_tokens` tokens of random vocabulary (specials included, as the
    server counts them) followed by PREFIX_SEPARATOR; the suffix is `suffix_tokens` more. Every
    item is checked to start with exactly its prefix's token ids and to differ from the other
    items; a candidate that fails is redrawn (seeded), at most `tries` times.
    """
    rng = random.Random(w.seed)
    overhead = len(tok.encode(""))
    prefixes: list[tuple[str, list[int]]] = []
    for _ in range(w.num_groups):
        for _ in range(tries):
            text, _n = fixed_length_prompt(tok, w.prefix_tokens, rng)
            ids = tok.encode(text)
            if tok.encode(text + PREFIX_SEPARATOR)[: len(ids)] == ids and all(text != t for t, _ in prefixes):
                prefixes.append((text, ids))
                break
        else:
            raise WorkloadError(
                f"workload.prefix_tokens={w.prefix_tokens}: could not build {w.num_groups} distinct prefixes that "
                "keep their tokens before a suffix; raise prefix_tokens or lower num_groups"
            )
    seen: set[str] = set()
    items = []
    for i in range(w.num_prompts):
        g = i % w.num_groups
        text, ids = prefixes[g]
        for _ in range(tries):
            suffix, _n = fixed_length_prompt(tok, w.suffix_tokens + overhead, rng)
            prompt = text + PREFIX_SEPARATOR + suffix
            enc = tok.encode(prompt)
            if enc[: len(ids)] == ids and prompt not in seen:
                break
        else:
            raise WorkloadError(
                f"workload.suffix_tokens={w.suffix_tokens}: could not build {w.num_prompts} distinct suffixes; "
                "raise suffix_tokens or lower num_prompts"
            )
        seen.add(prompt)
        items.append(WorkloadItem(i, prompt, len(enc), max_tokens[i], group=g))
    return items
