"""Workload kinds: length distributions, ShareGPT files, shared prefixes, paraphrase clusters."""

from __future__ import annotations

import dataclasses
import random
import statistics

import pytest

from loadgen.dataset import DatasetError, load_sharegpt, parse_sharegpt
from loadgen.schema import WorkloadConfig
from loadgen.workload import (
    MAX_CLUSTERS,
    MAX_PARAPHRASES,
    LengthDist,
    WorkloadError,
    WorkloadItem,
    build_items,
    config_problems,
    context_problem,
    length_rng,
    paraphrase_clusters,
    synthetic_items,
    token_bounds,
)
from tests.conftest import ROOT

SAMPLE = ROOT / "tests" / "data" / "sharegpt_sample.json"
USABLE = [0, 1, 2, 4, 5, 7, 8, 9, 10, 11]  # conversations 3 (no reply) and 6 (gpt first) are skipped


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from loadgen.tokenizer import load_token_counter

    return load_token_counter(str(tiny_tokenizer_dir))


def W(**kw) -> WorkloadConfig:
    return WorkloadConfig(**kw)


# -- lengths ----------------------------------------------------------------------------------


def test_fixed_lengths_are_exact_and_match_synthetic_items(tok):
    items = build_items(W(prompt_tokens=40, output_tokens=8, num_prompts=5, seed=3), tok)
    assert [i.prompt_tokens_client for i in items] == [40] * 5
    assert [len(tok.encode(i.prompt)) for i in items] == [40] * 5
    assert [i.max_tokens for i in items] == [8] * 5
    # the same prompts as before distributions existed (results stay comparable)
    assert items == synthetic_items(tok, prompt_tokens=40, output_tokens=8, num_prompts=5, seed=3)


# n = 4000 draws; each tolerance is 4 standard errors of the sample mean (SE = sd / sqrt(n)):
# uniform 50..150: sd = sqrt((101^2 - 1) / 12) = 29.2, SE 0.46 -> 2
# normal sd 40: SE 0.63 -> 2.6 (clipping at 1 is 5 sd away: negligible)
# lognormal mean 200, sigma 0.5: sd = 200 * sqrt(e^0.25 - 1) = 106.6, SE 1.69 -> 7
@pytest.mark.parametrize(
    "dist,mean,spread,tol",
    [("fixed", 200, 0.0, 0), ("uniform", 100, 50.0, 2.0), ("normal", 200, 40.0, 2.6), ("lognormal", 200, 0.5, 7.0)],
)
def test_distributions_are_seeded_with_the_right_mean(dist, mean, spread, tol):
    d = LengthDist("prompt", dist, mean, spread)
    xs = d.sample(4000, random.Random(1))
    assert xs == d.sample(4000, random.Random(1))
    assert all(isinstance(x, int) and x >= 1 for x in xs)
    assert abs(statistics.fmean(xs) - mean) <= tol
    if dist != "fixed":
        assert xs != d.sample(4000, random.Random(2))


def test_uniform_covers_its_interval_and_lognormal_is_skewed():
    xs = LengthDist("prompt", "uniform", 100, 50.0).sample(4000, random.Random(0))
    assert (min(xs), max(xs)) == (50, 150)
    # lognormal median = mean * exp(-sigma^2 / 2) = 176.5; its SE here is ~1.8, tolerance 4 SE
    ys = LengthDist("prompt", "lognormal", 200, 0.5).sample(4000, random.Random(0))
    assert abs(statistics.median(ys) - 176.5) <= 7


def test_draws_are_clipped_to_min_and_max():
    # lognormal mean 100, sigma 1: about 13 % of draws fall below 20 and 5 % above 300
    xs = LengthDist("output", "lognormal", 100, 1.0, lo=20, hi=300).sample(4000, random.Random(0))
    assert (min(xs), max(xs)) == (20, 300)
    assert LengthDist("output", "normal", 100, 1.0, lo=20, hi=300).upper() == 300
    assert LengthDist("output", "normal", 100, 1.0).upper() is None
    assert LengthDist("output", "uniform", 100, 10.5).upper() == 110


def test_synthetic_items_follow_the_sampled_lengths(tok):
    w = W(prompt_tokens=30, prompt_dist="uniform", prompt_spread=10, output_tokens=16, output_dist="normal",
          output_spread=4, output_min=8, output_max=20, num_prompts=12, seed=5)  # fmt: skip
    items = build_items(w, tok)
    want = LengthDist.of(w, "prompt").sample(12, length_rng(5, "prompt"))
    assert len(set(want)) > 3
    assert [i.prompt_tokens_client for i in items] == [len(tok.encode(i.prompt)) for i in items] == want
    assert [i.max_tokens for i in items] == LengthDist.of(w, "output").sample(12, length_rng(5, "output"))
    assert all(8 <= i.max_tokens <= 20 for i in items)
    assert items == build_items(w, tok)
    # output lengths have their own random stream: changing them leaves the prompts as they were
    fixed_out = build_items(dataclasses.replace(w, output_dist="fixed"), tok)
    assert [i.prompt for i in fixed_out] == [i.prompt for i in items]
    assert {i.max_tokens for i in fixed_out} == {16}


# -- ShareGPT ---------------------------------------------------------------------------------


def test_sharegpt_sample_pairs_first_human_turn_with_its_reply():
    pairs = load_sharegpt(SAMPLE)
    assert [p.conversation for p in pairs] == USABLE
    assert pairs[1].prompt == "Give me three tips for writing clear emails."
    assert pairs[1].reference.startswith("Put the request in the first line")
    assert pairs[3].prompt == "Why is the sky blue?"  # a system turn before the human one is fine


def test_sharegpt_items_use_the_reply_length_as_max_tokens(tok):
    w = W(kind="sharegpt", dataset_path=str(SAMPLE), num_prompts=10, seed=0)
    pairs = load_sharegpt(SAMPLE)
    items = build_items(w, tok, pairs)
    assert sorted(i.source_index for i in items) == USABLE  # all 10, each once
    assert [i.prompt_idx for i in items] == list(range(10))
    by_conv = {p.conversation: p for p in pairs}
    for i in items:
        p = by_conv[i.source_index]
        assert i.prompt == p.prompt and i.prompt_tokens_client == len(tok.encode(p.prompt))
        assert i.reference_output_tokens == len(tok.encode(p.reference)) - 1  # BOS is not output
        assert i.max_tokens == i.reference_output_tokens
    assert items == build_items(w, tok, pairs)
    assert [i.source_index for i in build_items(dataclasses.replace(w, seed=1), tok, pairs)] != [
        i.source_index for i in items
    ]
    clipped = build_items(dataclasses.replace(w, output_min=20, output_max=100), tok, pairs)
    assert [i.max_tokens for i in clipped] == [min(max(i.reference_output_tokens, 20), 100) for i in items]
    assert {20, 100} < {i.max_tokens for i in clipped}  # both bounds hit, and values between


def test_sharegpt_prompt_bounds_skip_and_too_few_is_one_line(tok):
    pairs = load_sharegpt(SAMPLE)
    lengths = sorted(len(tok.encode(p.prompt)) for p in pairs)
    w = W(kind="sharegpt", dataset_path=str(SAMPLE), num_prompts=5, prompt_max=lengths[4])
    assert all(i.prompt_tokens_client <= lengths[4] for i in build_items(w, tok, pairs))
    with pytest.raises(DatasetError) as e:
        build_items(dataclasses.replace(w, num_prompts=11, prompt_max=None), tok, pairs)
    assert str(e.value).startswith(f"{SAMPLE}: only 10 of its 10 usable conversations")
    assert "lower workload.num_prompts to 10" in str(e.value)


BAD_FILES = [
    ('[\n  {"conversations": []},\n  {"conversations": [}\n]\n', 3, "invalid JSON"),
    ('{"conversations": []}\n', 1, "expected a JSON list of conversations, found a JSON object"),
    ('[\n  {"conversations": []},\n\n  {"id": "x", "turns": []}\n]', 4, 'conversation 2 has no "conversations" list'),
    ('[{"conversations": [{"from": "human", "value": "q"}]},\n {"conversations": [{"from": "human", "value": 3}]}]',
     2, "conversation 2, turn 1"),
    ('[{"conversations": [{"from": "human", "value": "only a question"}]}]', None, "no conversation has a human turn"),
    (b'[\n{"conversations": [{"from": "human", "value": "caf\xe9"}]}]', 2, "not UTF-8 text"),
]  # fmt: skip


@pytest.mark.parametrize("content,line,problem", BAD_FILES)
def test_malformed_dataset_is_one_line_with_path_and_line(tmp_path, content, line, problem):
    f = tmp_path / "bad.json"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetError) as e:
        load_sharegpt(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: ") and "\n" not in msg and problem in msg, msg
    if line is not None:
        assert msg.startswith(f"{f}: line {line}"), msg


def test_missing_dataset_names_the_setting(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.json: no such file; set workload.dataset_path"):
        load_sharegpt(tmp_path / "nope.json")
    assert isinstance(DatasetError("x"), ValueError)


def test_parse_is_pure_and_names_its_source():
    (p,) = parse_sharegpt('[{"conversations": [{"from": "user", "value": "a"}, {"from": "assistant", "value": "b"}]}]', "mem")
    assert (p.conversation, p.prompt, p.reference) == (0, "a", "b")
    with pytest.raises(DatasetError, match=r"^mem: line 1, column 1: invalid JSON"):
        parse_sharegpt("", "mem")


# -- shared prefix ----------------------------------------------------------------------------


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_shared_prefix_groups_share_exactly_their_prefix_tokens(tok):
    w = W(kind="shared_prefix", num_groups=3, prefix_tokens=60, suffix_tokens=6, num_prompts=12, output_tokens=5)
    items = build_items(w, tok)
    assert [i.group for i in items] == [i % 3 for i in range(12)]
    assert len({i.prompt for i in items}) == 12
    assert all(i.prompt_tokens_client == len(tok.encode(i.prompt)) and i.max_tokens == 5 for i in items)
    enc = [tok.encode(i.prompt) for i in items]
    for g in range(3):
        members = [e for e, i in zip(enc, items, strict=True) if i.group == g]
        assert len({tuple(e[:60]) for e in members}) == 1  # identical first 60 tokens (BOS included)
    assert len({tuple(e[:60]) for e in enc}) == 3  # and a different prefix per group
    assert all(_common_prefix_len(enc[a], enc[b]) < 60 for a in range(3) for b in range(3) if a != b)
    assert items == build_items(w, tok)
    assert token_bounds(w)[0] >= max(i.prompt_tokens_client for i in items)


# -- paraphrase clusters ----------------------------------------------------------------------


def test_paraphrase_clusters_are_distinct_wordings_with_one_cluster_id(tok):
    w = W(kind="paraphrase", num_clusters=5, paraphrases_per_cluster=4, output_tokens=7, seed=2)
    items = build_items(w, tok)
    assert len(items) == 20 and [i.cluster for i in items] == [i % 5 for i in range(20)]
    assert len({i.prompt for i in items}) == 20
    clusters = paraphrase_clusters(5, 4, 2)
    for c, (_label, questions) in enumerate(clusters):
        assert [i.prompt for i in items if i.cluster == c] == questions
    assert all(i.prompt_tokens_client == len(tok.encode(i.prompt)) and i.max_tokens == 7 for i in items)
    assert items == build_items(w, tok)
    assert [i.prompt for i in build_items(dataclasses.replace(w, seed=3), tok)] != [i.prompt for i in items]


def test_paraphrase_cluster_shares_its_entity_and_bounds_hold(tok):
    everything = paraphrase_clusters(MAX_CLUSTERS, MAX_PARAPHRASES, 0)
    assert len(everything) == MAX_CLUSTERS and len({label for label, _ in everything}) == MAX_CLUSTERS
    for label, qs in everything:
        entity = label.split(":", 1)[1]
        assert len(set(qs)) == MAX_PARAPHRASES and all(entity in q for q in qs)
    bound = token_bounds(W(kind="paraphrase"))[0]
    assert max(len(tok.encode(q)) for _, qs in everything for q in qs) <= bound
    with pytest.raises(WorkloadError, match="workload.num_clusters must be"):
        paraphrase_clusters(MAX_CLUSTERS + 1, 1, 0)


# -- settings, bounds, items ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"kind": "chatlog"}, "workload.kind='chatlog': use one of synthetic, sharegpt, shared_prefix, paraphrase"),
        ({"prompt_dist": "zipf"}, "workload.prompt_dist='zipf': use one of fixed, uniform, normal, lognormal"),
        ({"output_tokens": 0}, "workload.output_tokens must be >= 1, got 0"),
        ({"prompt_spread": -1.0, "prompt_dist": "normal"}, "workload.prompt_spread must be a finite number >= 0"),
        ({"prompt_min": 0}, "workload.prompt_min must be >= 1, got 0"),
        ({"output_max": 10, "output_min": 20}, "workload.output_max=10 is below workload.output_min=20"),
        ({"prompt_max": 100}, "workload.prompt_tokens=128 is outside workload.prompt_min..prompt_max = 1..100"),
        ({"num_prompts": 0}, "workload.num_prompts must be >= 1, got 0"),
        ({"kind": "sharegpt"}, "workload.kind=sharegpt needs workload.dataset_path"),
        ({"kind": "shared_prefix", "prefix_tokens": 0}, "workload.prefix_tokens must be >= 1, got 0"),
        ({"kind": "shared_prefix", "num_groups": 8, "num_prompts": 4}, "some groups would be empty"),
        ({"kind": "paraphrase", "paraphrases_per_cluster": 0}, f"must be 1..{MAX_PARAPHRASES}, got 0"),
    ],
)
def test_bad_settings_give_one_line_each(tok, kw, needle):
    (p,) = config_problems(W(**kw))
    assert needle in p
    with pytest.raises(WorkloadError) as e:
        build_items(W(**kw), tok)
    assert str(e.value) == p


def test_kinds_only_check_the_lengths_they_use():
    # sharegpt takes prompt lengths from the file: a prompt_tokens outside its bounds is irrelevant
    assert config_problems(W(kind="sharegpt", dataset_path="x.json", prompt_max=100)) == []
    assert config_problems(W(kind="paraphrase", prompt_dist="zipf")) == []


@pytest.mark.parametrize(
    "kw,bounds",
    [
        ({}, (128, 64)),
        ({"prompt_dist": "uniform", "prompt_spread": 32, "output_dist": "lognormal", "output_spread": 1.0}, (160, None)),
        ({"prompt_dist": "normal", "prompt_spread": 9, "prompt_max": 300, "output_max": 70}, (300, 64)),
        ({"kind": "sharegpt", "prompt_max": 1000, "output_max": 500}, (1000, 500)),
        ({"kind": "shared_prefix", "prefix_tokens": 100, "suffix_tokens": 10}, (112, 64)),
    ],
)
def test_token_bounds(kw, bounds):
    assert token_bounds(W(**kw)) == bounds


def test_context_problem_names_the_worst_item_and_the_fix():
    items = [WorkloadItem(0, "a", 100, 20), WorkloadItem(1, "b", 120, 10), WorkloadItem(2, "c", 90, 50)]
    assert context_problem(items, 140) is None and context_problem(items, None) is None
    assert context_problem(items, 125, "sharegpt") == (
        "2 workload item(s) need more than the context limit of 125 tokens (item 2: 90+50); "
        "lower workload.prompt_max/output_max or raise engine.max_model_len"
    )


def test_item_dict_carries_the_optional_fields():
    d = WorkloadItem(3, "p", 5, 7, group=1, reference_output_tokens=9, source_index=4).to_dict()
    assert d == {"prompt_idx": 3, "prompt": "p", "prompt_tokens_client": 5, "max_tokens": 7, "group": 1,
                 "cluster": None, "reference_output_tokens": 9, "source_index": 4}  # fmt: skip
