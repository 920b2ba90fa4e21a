#!/usr/bin/env bash
# The README's test command: sets up (scripts/setup.sh), checks the import layers (lint-imports,
# pyproject.toml [tool.importlinter]; a broken contract fails the script before any test), then the
# default test run, in two passes:
#   1. every test that asserts no measured timing, on 3 pytest-xdist workers with work stealing:
#      they mostly wait on subprocesses (the lab, fake engines, Locust), so three at a time fit
#      2 cores (measured on 2 cores: 1425 tests in 472 s on 3 workers with --dist worksteal, 585 s
#      on 2 with the default distribution). The `beside` tests start a real engine but assert no
#      timing (the quant shoot-out with the quality gate, the transformers run): they are sorted
#      first (tests/conftest.py), so their engine starts overlap the rest of the pass instead of
#      running alone after it (measured: +44 s on this pass, -180 s on the next);
#   2. the `serial` tests (TTFT/ITL/clock bounds, or an outcome that depends on the generator
#      keeping up: the report-lab tests) and the other `engine` tests (a real engine whose
#      measured outcome is asserted), one at a time, alone on the machine.
# Both passes always run; the exit code is the first failing pass's. Arguments go to both passes
# (e.g. -x, -k NAME, --durations=20); SERVELAB_TEST_WORKERS sets pass 1's worker count.
# Everything at once, one at a time: .venv/bin/python -m pytest   (the same tests, the same markers)
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
.venv/bin/lint-imports || { echo "test.sh: an import contract is broken (lint-imports above)" >&2; exit 1; }
rc=0
.venv/bin/python -m pytest -n "${SERVELAB_TEST_WORKERS:-3}" --dist worksteal -m "not gpu and not slow and not serial and (not engine or beside)" "$@"
p1=$?
[ "$p1" -eq 5 ] && p1=0  # 5: nothing collected (e.g. -k names only serial tests)
rc=$p1
.venv/bin/python -m pytest -m "not gpu and not slow and (serial or engine) and not beside" "$@"
p2=$?
[ "$p2" -eq 5 ] && p2=0
[ "$rc" -eq 0 ] && rc=$p2
exit "$rc"
