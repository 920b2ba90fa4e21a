"""The same decision before and after a restructuring: tests/data/decision_before_after/ holds a
stored results folder (two v1 run.json files, one of them failed, and one v2) and the decision.json
that `python -m analysis.decide <folder> capacity.peak_rps=10 n_boot=200` wrote for it. Deciding
the same records must give the same decision, number for number. First stored before the results
contract moved (issue 20, commit 92fb23a); stored again by the "how sure" change (time-block
intervals, the cost at capacity, `intervals` and `headline`), which changes the decision on purpose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from analysis import decide

DATA = Path(__file__).resolve().parent.parent / "data" / "decision_before_after"
OVERRIDES = ["capacity.peak_rps=10", "n_boot=200"]


def comparable(d: dict, folder: Path) -> dict:
    """The decision without what depends on when and where it was made."""
    out = json.loads(json.dumps(d))
    out.pop("created_at_utc")
    out["results"] = "exp"
    out["overrides"] = [o for o in out["overrides"] if not o.startswith("output=")]
    out["config"]["output"] = None
    for r in out["runs"]:
        r["path"] = str(Path("exp") / Path(r["path"]).relative_to(folder))
    return out


def test_stored_records_decide_as_before(tmp_path):
    folder = tmp_path / "exp"
    shutil.copytree(DATA / "exp", folder)
    before = json.loads((DATA / "decision.json").read_text())  # stored without created_at_utc
    d, path = decide.decide(folder, [*OVERRIDES, f"output={tmp_path / 'decision.json'}"])
    after = comparable(json.loads(path.read_text()), folder)
    raw = [json.loads(p.read_text()).get("schema_version", 1) for p in sorted(folder.glob("*/run.json"))]
    assert raw == [1, 2, 1] and [r["skipped"] is None for r in after["runs"]] == [True, True, False]  # v1 and v2 load
    assert after == before
