"""The run report's example replies: the quality run's greedy replies (quality.parquet), escaped."""

from __future__ import annotations

import pandas as pd

from analysis import report_data as rd


def test_replies_are_read_from_the_quality_rows_one_task_per_kind(tmp_path):
    assert rd.replies_of(tmp_path) == []  # no quality run
    rows = [{"set": "generic", "prompt_key": f"generic-{i}", "prompt": f"p{i}", "gen_text": "<b>x</b>" * 100,
             "answer": None, "error": None} for i in range(5)]  # fmt: skip
    rows += [{"set": "tasks", "prompt_key": f"{k}-{i}", "prompt": f"{k} {i}", "gen_text": " Berlin", "answer": "Berlin",
              "error": None} for k in ("capital", "addition") for i in range(3)]  # fmt: skip
    rows[1]["error"] = "generate: boom"
    pd.DataFrame(rows).to_parquet(tmp_path / "quality.parquet")
    got = rd.replies_of(tmp_path)
    generic = [r for r in got if r["set"] == "generic"]
    assert [r["prompt"] for r in generic] == ["p0", "p2", "p3"]  # the failed prompt is skipped
    assert generic[0]["answer"] is None and generic[0]["reply"].endswith("…") and len(generic[0]["reply"]) == rd.PROMPT_CHARS + 1
    assert [(r["prompt"], r["answer"]) for r in got if r["set"] == "tasks"] == [("capital 0", "Berlin"), ("addition 0", "Berlin")]


def test_the_report_escapes_the_replies(tmp_path):
    from analysis.report import _env

    html = _env().get_template("_provenance.html.j2").render(provenance=[{
        "run_id": "r", "label": "l", "replies": [{"set": "generic", "prompt": "<script>p</script>", "reply": "<img src=x>",
                                                  "answer": None}], "packages": {}, "engine_packages": {}}], fmt=lambda *a: "")  # fmt: skip
    assert "&lt;img src=x&gt;" in html and "<img src=x>" not in html and "&lt;script&gt;" in html
