"""Discovery against fake engine venvs (tiny scripts that answer the version probe): which
interpreter is picked, what is reported missing, machine facts, provenance and git state."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engines.endpoint import EndpointAdapter
from engines.schema import EngineConfig, GpuConfig, ModelConfig, QuantConfig
from engines.tgi import TgiAdapter
from engines.vllm import VllmAdapter
from experiments import discover

PYTHON = sys.executable  # the real interpreter, for the fakes' shebang (tests patch sys.executable)


def fake_python(path: Path, dists: dict[str, str], exit_code: int = 0, noise: str = "") -> str:
    """An executable that answers discover's probe (`python -c PROBE dist...`) with `dists` it "has"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{PYTHON}\n"
        "import json, sys\n"
        f"have = {dists!r}\n"
        f"print({noise!r}) if {noise!r} else None\n"
        "print(json.dumps({d: have[d] for d in sys.argv[3:] if d in have}))\n"
        f"sys.exit({exit_code})\n"
    )
    path.chmod(0o755)
    return str(path)


def engine(**kw) -> EngineConfig:
    return EngineConfig(**kw)


def vllm(gpu_count: int = 0) -> VllmAdapter:
    return VllmAdapter(engine(), ModelConfig(), QuantConfig(), GpuConfig(name="g", count=gpu_count))


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A lab root with no engine venvs and a lab interpreter that has no engine."""
    monkeypatch.setattr(discover, "ROOT", tmp_path)
    monkeypatch.setattr(discover.sys, "executable", fake_python(tmp_path / "lab" / "python", {}))
    return tmp_path


def venv(root: Path, name: str, dists: dict[str, str]) -> str:
    return fake_python(root / ".venvs" / name / "bin" / "python", dists)


# -- which interpreter ----------------------------------------------------------------------------


def test_candidates_prefer_the_build_that_matches_the_plan(lab):
    cpu, gpu = (str(lab / ".venvs" / n / "bin" / "python") for n in ("vllm-cpu", "vllm"))
    lab_python = str(lab / "lab" / "python")
    assert discover.candidate_pythons(vllm(), None, 0) == [cpu, gpu, lab_python]
    assert discover.candidate_pythons(vllm(), None, 1) == [gpu, cpu, lab_python]
    assert discover.candidate_pythons(vllm(), "/opt/py", 1) == ["/opt/py"]  # engine.python wins


def test_cpu_plan_picks_the_cpu_venv_and_records_its_packages(lab):
    cpu = venv(lab, "vllm-cpu", {"vllm-cpu": "0.32.0", "torch": "2.8.0+cpu", "numpy": "2.0"})
    venv(lab, "vllm", {"vllm": "0.11.0", "torch": "2.8.0"})
    f = discover.host_facts(vllm(0), engine(), 0, str(lab))
    assert (f.engine_python, f.engine_dist, f.engine_version) == (cpu, "vllm-cpu", "0.32.0")
    assert dict(f.engine_packages) == {"torch": "2.8.0+cpu"}  # engine-side packages only
    assert f.model_is_local and f.gpu_count_visible == 0 and not f.port_in_use


def test_gpu_plan_picks_the_gpu_venv(lab):
    venv(lab, "vllm-cpu", {"vllm-cpu": "0.32.0"})
    gpu = venv(lab, "vllm", {"vllm": "0.11.0"})
    f = discover.host_facts(vllm(1), engine(), 1, str(lab / "missing"))
    assert (f.engine_python, f.engine_dist) == (gpu, "vllm")
    assert not f.model_is_local


def test_the_next_candidate_is_used_when_the_first_lacks_the_engine(lab):
    venv(lab, "vllm-cpu", {"torch": "2.8.0"})  # a venv without the engine
    gpu = venv(lab, "vllm", {"vllm": "0.11.0"})
    f = discover.host_facts(vllm(0), engine(), 0, str(lab))
    assert (f.engine_python, f.engine_dist) == (gpu, "vllm")


def test_a_gpu_plan_that_finds_only_the_cpu_build_is_told_so(lab):
    venv(lab, "vllm-cpu", {"vllm-cpu": "0.32.0"})
    f = discover.host_facts(vllm(1), engine(), 1, str(lab))
    assert f.engine_dist == "vllm-cpu"
    assert any("only the CPU build (vllm-cpu) was found" in p for p in vllm(1).problems(f))


def test_the_lab_interpreter_is_the_last_resort(lab, monkeypatch):
    monkeypatch.setattr(discover.sys, "executable", fake_python(lab / "lab2" / "python", {"vllm": "0.9.0"}))
    f = discover.host_facts(vllm(0), engine(), 0, str(lab))
    assert (f.engine_python, f.engine_version) == (str(lab / "lab2" / "python"), "0.9.0")


def test_nothing_installed_is_reported_missing_with_the_setup_command(lab):
    f = discover.host_facts(vllm(0), engine(), 0, str(lab))
    assert (f.engine_dist, f.engine_version, dict(f.engine_packages)) == (None, None, {})
    assert f.engine_python == str(lab / ".venvs" / "vllm-cpu" / "bin" / "python")  # the first candidate
    (p,) = vllm(0).problems(f)
    assert "the vLLM CPU build is not installed; run `bash scripts/setup.sh`" in p


def test_an_explicit_engine_python_is_the_only_one_probed(lab):
    venv(lab, "vllm-cpu", {"vllm-cpu": "0.32.0"})
    mine = fake_python(lab / "mine" / "python", {"vllm": "0.10.0"})
    f = discover.host_facts(vllm(0), engine(python=mine), 0, str(lab))
    assert (f.engine_python, f.engine_version) == (mine, "0.10.0")


# -- the probe ------------------------------------------------------------------------------------


def test_probe_reads_the_last_line_and_survives_broken_interpreters(tmp_path):
    assert discover.probe_dists(str(tmp_path / "nope"), ("vllm",)) == {}
    assert discover.probe_dists(fake_python(tmp_path / "a", {"vllm": "1"}, noise="warning: x"), ("vllm",)) == {"vllm": "1"}
    assert discover.probe_dists(fake_python(tmp_path / "b", {"vllm": "1"}, exit_code=1), ("vllm",)) == {}
    bad = tmp_path / "c"
    bad.write_text("#!/bin/sh\necho 'not json'\n")
    bad.chmod(0o755)
    assert discover.probe_dists(str(bad), ("vllm",)) == {}


def test_probe_with_a_real_interpreter():
    import pytest as p

    assert discover.probe_dists(PYTHON, ("pytest", "no-such-dist-servelab")) == {"pytest": p.__version__}


# -- other machine facts --------------------------------------------------------------------------


def test_binaries_are_found_on_path(lab, monkeypatch):
    bin_dir = lab / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    tgi = TgiAdapter(engine(), ModelConfig(), QuantConfig(), GpuConfig(name="g", count=1))
    f = discover.host_facts(tgi, engine(), 0, str(lab))
    assert dict(f.binaries) == {"docker": str(bin_dir / "docker")}  # text-generation-launcher: missing


def test_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert discover.port_in_use("127.0.0.1", port)
    assert not discover.port_in_use("127.0.0.1", port)  # closed again
    assert not discover.port_in_use("127.0.0.1", 0)  # 0 = a free port picked at launch
    # out of range: not a socket error here; preflight reports the setting with its fix
    assert not discover.port_in_use("127.0.0.1", 99999) and not discover.port_in_use("127.0.0.1", -1)


def test_an_endpoint_is_never_probed_for_a_busy_port(lab):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        e = engine(name="endpoint", port=s.getsockname()[1], base_url="http://127.0.0.1:1")
        a = EndpointAdapter(e, ModelConfig(), QuantConfig(), GpuConfig())
        assert not discover.host_facts(a, e, 0, "m").port_in_use
        assert discover.host_facts(vllm(0), e, 0, "m").port_in_use


# -- provenance and git -----------------------------------------------------------------------------


def test_provenance_has_every_field():
    p = discover.provenance()
    assert {"git_sha", "git_dirty", "lab_version", "python", "platform", "cpu_model", "cpu_count", "gpu",
            "packages"} <= set(p)  # fmt: skip
    assert p["python"] == sys.version.split()[0] and p["cpu_count"] >= 1
    assert set(p["packages"]) == set(discover.LAB_PACKAGES) and p["packages"]["pandas"]
    json.dumps(p)  # run.json-serialisable


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)  # fmt: skip


def test_git_state(tmp_path):
    assert discover.git_state(tmp_path) == {"git_sha": None, "git_dirty": None}  # not a checkout
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "commit", "-qm", "c")
    s = discover.git_state(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", s["git_sha"]) and s["git_dirty"] is False
    (tmp_path / "untracked.txt").write_text("x")
    assert discover.git_state(tmp_path)["git_dirty"] is False  # untracked files do not count
    (tmp_path / "a.txt").write_text("2")
    assert discover.git_state(tmp_path) == {"git_sha": s["git_sha"], "git_dirty": True}


def test_cpu_flags_keep_the_kernel_relevant_features_of_the_first_cpu():
    from experiments.discover import cpu_flags

    info = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert cpu_flags(info) == {"avx2", "avx512f", "avx512_bf16", "amx_tile"}
    assert cpu_flags("processor\t: 0\n") == frozenset()  # no flags line (not x86): unknown, not "none"


def test_servelab_cpu_flags_replaces_what_preflight_sees(monkeypatch):
    """SERVELAB_CPU_FLAGS forces the flags (the refusal tests force an AVX2 CPU on an AVX-512 one);
    unknown names are dropped, and provenance says the flags were forced."""
    from experiments.discover import cpu_flags

    monkeypatch.setenv("SERVELAB_CPU_FLAGS", "avx2, sse4_2,")
    assert cpu_flags() == {"avx2"}
    p = discover.provenance()
    assert p["cpu_flags"] == ["avx2"] and p["cpu_flags_forced"] is True
    info = "flags\t\t: avx2 avx512f\n"
    assert cpu_flags(info) == {"avx2", "avx512f"}  # given text is parsed as given
    monkeypatch.delenv("SERVELAB_CPU_FLAGS")
    assert discover.provenance()["cpu_flags_forced"] is False
