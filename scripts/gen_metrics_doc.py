"""Writes docs/metrics.md and docs/monitoring.md from the metric catalog (analysis/catalog.py) and
their templates (docs/_metrics_intro.md, docs/_monitoring_intro.md).

Run after changing any of them:
  .venv/bin/python scripts/gen_metrics_doc.py           # rewrite both docs
  .venv/bin/python scripts/gen_metrics_doc.py --check   # exit 1 when either doc is stale
Side effects: writes docs/metrics.md and docs/monitoring.md (not with --check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.catalog import render_markdown, render_series_markdown  # noqa: E402

INTRO = ROOT / "docs" / "_metrics_intro.md"
DOC = ROOT / "docs" / "metrics.md"
MONITORING_INTRO = ROOT / "docs" / "_monitoring_intro.md"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"
COMMAND = "python scripts/gen_metrics_doc.py"


def rendered() -> str:
    return render_markdown(INTRO.read_text())


def rendered_monitoring() -> str:
    return render_series_markdown(MONITORING_INTRO.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a doc differs")
    docs = {DOC: rendered(), MONITORING_DOC: rendered_monitoring()}
    if ap.parse_args().check:
        stale = [p for p, text in docs.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"{p.relative_to(ROOT)} is stale: run `{COMMAND}`", file=sys.stderr)
        return 1 if stale else 0
    for p, text in docs.items():
        p.write_text(text)
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
