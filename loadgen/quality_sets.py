"""The quality gate's prompt sets: generated here, deterministically, and stored in the repository.

- generic (loadgen/data/quality/generic.jsonl): 240 everyday prompts (explain, summarise, list,
  rewrite, answer ...) over 40 topics, for agreement with the baseline (no answers).
- tasks (loadgen/data/quality/tasks.jsonl): 200 prompts with a known answer, scored exactly by
  analysis.quality.task_correct: 2-3 digit arithmetic, ordering numbers or words, extracting a
  field from a short record (each prompt ends in "Answer:" and asks for the answer alone), then
  two few-shot completions a small trained model can do: a country's capital and a one-digit sum.
  (SmolLM2-135M answers the first three kinds with its end-of-text token at once, i.e. 0 %: an
  instruction as a bare completion prompt is beyond it; docs/quality.md has the figures.)

`python -m loadgen.quality_sets` rewrites both files; tests check that the stored files are what
this module generates. A user's own JSONL replaces either (`quality.generic_path` /
`quality.task_path`): one object per line with "prompt" (required), "answer" (tasks), "id".

Side effects: `load_set` reads a file; `main` writes the two files. The generators are pure.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from loadgen.jsonl import JsonlError, iter_jsonl

DATA = Path(__file__).resolve().parent / "data" / "quality"
GENERIC_PATH = DATA / "generic.jsonl"
TASK_PATH = DATA / "tasks.jsonl"

TOPICS = [
    "photosynthesis", "the water cycle", "compound interest", "vaccines", "plate tectonics", "the French Revolution",
    "black holes", "machine learning", "the immune system", "supply and demand", "climate change", "the internet",
    "DNA replication", "volcanoes", "the Roman Empire", "electric cars", "coffee roasting", "sleep", "bees",
    "the stock market", "renewable energy", "the printing press", "antibiotics", "earthquakes", "jazz music",
    "the Moon landing", "recycling", "password security", "inflation", "the human heart", "rainforests",
    "quantum computing", "the Silk Road", "chess openings", "bread baking", "ocean tides", "solar panels",
    "the Olympic Games", "public libraries", "bicycles",
]  # fmt: skip
TEMPLATES = [
    "Explain {t} to a ten-year-old in three sentences.",
    "Write a short paragraph about {t}.",
    "List three surprising facts about {t}.",
    "What are the main arguments for and against {t}?",
    "Summarise the history of {t} in a few lines.",
    "Give a one-sentence definition of {t}, then an example.",
]
WORDS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "olive", "peach", "pear", "plum", "kiwi", "fig"]
NAMES = ["Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luca"]
# The capital task: 40 countries whose capital is not in doubt (the two shots, France and Japan, excluded).
CAPITALS = [
    ("Germany", "Berlin"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Russia", "Moscow"), ("China", "Beijing"),
    ("Egypt", "Cairo"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("Ireland", "Dublin"), ("Hungary", "Budapest"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Canada", "Ottawa"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Indonesia", "Jakarta"), ("India", "New Delhi"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Cuba", "Havana"), ("Chile", "Santiago"), ("Colombia", "Bogota"),
    ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Czech Republic", "Prague"), ("Turkey", "Ankara"),
    ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("England", "London"), ("Philippines", "Manila"),
    ("Ukraine", "Kyiv"),
]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Quito", "Dublin", "Cairo", "Perth", "Riga"]


def _id(kind: str, text: str) -> str:
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def generic_prompts() -> list[dict[str, Any]]:
    """Every template over every topic (240 prompts), template-major."""
    out = []
    for tpl in TEMPLATES:
        for t in TOPICS:
            p = tpl.format(t=t)
            out.append({"id": _id("generic", p), "kind": "generic", "prompt": p})
    return out


def task_prompts(n_per_kind: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    """n_per_kind arithmetic, ordering, extraction, capital and addition tasks with their answers (seeded;
    the capitals are the first n_per_kind of CAPITALS)."""
    g = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n_per_kind):
        a, b = g.randint(10, 999), g.randint(10, 999)
        op = g.choice(["+", "-"])
        ans = a + b if op == "+" else a - b
        p = f"Compute {a} {op} {b}. Reply with the number only.\nAnswer:"
        out.append({"id": _id("arithmetic", p), "kind": "arithmetic", "prompt": p, "answer": str(ans)})
    for i in range(n_per_kind):
        if i % 2 == 0:
            xs = g.sample(range(1, 100), 5)
            p = f"Sort these numbers from smallest to largest: {', '.join(map(str, xs))}. Reply with the sorted list only.\nAnswer:"
            ans = ", ".join(map(str, sorted(xs)))
        else:
            ws = g.sample(WORDS, 4)
            p = f"Sort these words alphabetically: {', '.join(ws)}. Reply with the sorted list only.\nAnswer:"
            ans = ", ".join(sorted(ws))
        out.append({"id": _id("ordering", p), "kind": "ordering", "prompt": p, "answer": ans})
    for i in range(n_per_kind):
        name, city, age = g.choice(NAMES), g.choice(CITIES), g.randint(18, 90)
        rec = f"name: {name}; city: {city}; age: {age}"
        field = ["name", "city", "age"][i % 3]
        ans = {"name": name, "city": city, "age": str(age)}[field]
        p = f"Record: {rec}\nWhat is the {field} in the record? Reply with the value only.\nAnswer:"
        out.append({"id": _id("extraction", p), "kind": "extraction", "prompt": p, "answer": ans})
    # Few-shot completions (drawn after the kinds above, so those stay as they were).
    for country, city in CAPITALS[:n_per_kind]:
        p = f"Country: France\nCapital: Paris\n\nCountry: Japan\nCapital: Tokyo\n\nCountry: {country}\nCapital:"
        out.append({"id": _id("capital", p), "kind": "capital", "prompt": p, "answer": city})
    for a, b in g.sample([(a, b) for a in range(1, 10) for b in range(1, 10)], n_per_kind):  # 40 of the 81 sums
        p = f"2 + 3 = 5\n4 + 1 = 5\n{a} + {b} ="
        out.append({"id": _id("addition", p), "kind": "addition", "prompt": p, "answer": str(a + b)})
    return out


class QualitySetError(ValueError):
    pass


def load_set(path: str | Path, *, need_answers: bool) -> list[dict[str, Any]]:
    """A JSONL prompt set (one line error naming the fix for a bad file)."""
    p = Path(path)
    if not p.is_file():
        raise QualitySetError(f"quality prompt set {p}: no such file (python -m loadgen.quality_sets writes the built-in ones)")
    out = []
    try:
        for n, obj in iter_jsonl(p, objects=False):
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"]:
                raise QualitySetError(f"{p}:{n}: needs a non-empty string \"prompt\"")
            if need_answers and not isinstance(obj.get("answer"), str):
                raise QualitySetError(f"{p}:{n}: a task set needs a string \"answer\" on every line")
            obj.setdefault("id", _id("user", obj["prompt"]))
            out.append(obj)
    except JsonlError as e:
        raise QualitySetError(f"{p}:{e.line}: not JSON ({e.msg}); one object per line with \"prompt\"") from None
    if not out:
        raise QualitySetError(f"quality prompt set {p} is empty")
    return out


def render(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    GENERIC_PATH.write_text(render(generic_prompts()))
    TASK_PATH.write_text(render(task_prompts()))
    print(f"wrote {GENERIC_PATH} ({len(generic_prompts())}) and {TASK_PATH} ({len(task_prompts())})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
