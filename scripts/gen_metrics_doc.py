"""Writes docs/metrics.md from the metric catalog (analysis/catalog.py) and docs/_metrics_intro.md.

Run after changing either:
  .venv/bin/python scripts/gen_metrics_doc.py           # rewrite docs/metrics.md
  .venv/bin/python scripts/gen_metrics_doc.py --check   # exit 1 when docs/metrics.md is stale
Side effects: writes docs/metrics.md (not with --check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.catalog import render_markdown  # noqa: E402

INTRO = ROOT / "docs" / "_metrics_intro.md"
DOC = ROOT / "docs" / "metrics.md"
COMMAND = "python scripts/gen_metrics_doc.py"


def rendered() -> str:
    return render_markdown(INTRO.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when docs/metrics.md differs")
    text = rendered()
    if ap.parse_args().check:
        if DOC.read_text() != text:
            print(f"{DOC.relative_to(ROOT)} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
