"""Facts about this machine that preflight and the adapters need, and provenance for run.json.

Side effects: reads the filesystem, runs short `python -c` probes in candidate engine venvs,
calls git, and initialises NVML briefly (if present) to count GPUs. Nothing is started that
outlives a call.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from engines.base import EngineAdapter, HostFacts

ROOT = Path(__file__).resolve().parent.parent
# Recorded for the engine's interpreter next to the engine itself.
ENGINE_SIDE_PACKAGES = ("torch", "transformers", "tokenizers", "triton", "flashinfer-python", "xgrammar")
LAB_PACKAGES = ("hydra-core", "omegaconf", "locust", "gevent", "geventhttpclient", "pandas", "pyarrow",
                "numpy", "matplotlib", "psutil", "prometheus-client", "nvidia-ml-py", "tokenizers")  # fmt: skip

_PROBE = (
    "import importlib.metadata as m, json, sys\n"
    "out = {}\n"
    "for d in sys.argv[1:]:\n"
    "    try: out[d] = m.version(d)\n"
    "    except m.PackageNotFoundError: pass\n"
    "print(json.dumps(out))\n"
)


def candidate_pythons(adapter: EngineAdapter, engine_python: str | None, gpu_count: int) -> list[str]:
    """Interpreters to look in for the engine, best first. Pure.

    engine.python wins when set. Otherwise `.venvs/<name>-cpu` for a CPU plan and `.venvs/<name>`
    for a GPU plan are preferred, then the other one, then the lab's own interpreter.
    """
    if engine_python:
        return [engine_python]
    cpu = str(ROOT / ".venvs" / f"{adapter.name}-cpu" / "bin" / "python")
    gpu = str(ROOT / ".venvs" / adapter.name / "bin" / "python")
    order = [cpu, gpu] if gpu_count == 0 else [gpu, cpu]
    return [*order, sys.executable]


def probe_dists(python: str, dists: tuple[str, ...], timeout_s: float = 60.0) -> dict[str, str]:
    """Versions of `dists` installed for `python` ({} if the interpreter is missing or fails)."""
    if not Path(python).exists():
        return {}
    try:
        r = subprocess.run([python, "-c", _PROBE, *dists], capture_output=True, text=True, timeout=timeout_s)
        return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else {}
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, IndexError):
        return {}


def gpu_info() -> dict[str, Any] | None:
    """Name, memory and UUID of each visible GPU plus driver and CUDA versions (None without NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library or no driver: no GPU facts
        return None
    try:
        def s(x: Any) -> str:
            return x.decode() if isinstance(x, bytes) else str(x)

        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append({
                "index": i,
                "name": s(pynvml.nvmlDeviceGetName(h)),
                "uuid": s(pynvml.nvmlDeviceGetUUID(h)),
                "memory_total_gib": pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**30,
            })  # fmt: skip
        return {
            "driver_version": s(pynvml.nvmlSystemGetDriverVersion()),
            "cuda_driver_version": f"{cuda // 1000}.{(cuda % 1000) // 10}",
            "gpus": gpus,
        }
    except Exception as e:  # noqa: BLE001 - record what went wrong instead of failing the run
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def visible_gpus() -> int:
    """GPUs NVML can see (0 without a driver or without nvidia-ml-py)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no library, no driver, no device: all mean "none"
        return 0


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on host:port (0 = pick later: never in use).

    A port or host that cannot be probed (out of range, unresolvable) counts as not in use:
    preflight reports the setting itself, with its fix, instead of a socket error here.
    """
    if not isinstance(port, int) or not 0 < port <= 65535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            return s.connect_ex((host, port)) == 0
        except (OSError, OverflowError, UnicodeError):
            return False


def host_facts(adapter: EngineAdapter, engine: Any, gpu_count: int, model_path: str) -> HostFacts:
    """Find the interpreter that has the engine and what it is (first candidate with a dist wins)."""
    candidates = candidate_pythons(adapter, engine.python, gpu_count)
    chosen, dist, version, found = candidates[0], None, None, {}
    for py in candidates if adapter.dists else []:
        found = probe_dists(py, adapter.dists + ENGINE_SIDE_PACKAGES)
        # Prefer the dist that matches the plan: GPU build on a GPU plan, CPU build otherwise.
        for d in adapter.dists:
            if d in found:
                chosen, dist, version = py, d, found[d]
                break
        if dist:
            break
    return HostFacts(
        engine_python=chosen,
        engine_dist=dist,
        engine_version=version,
        gpu_count_visible=visible_gpus() if gpu_count > 0 else 0,
        model_is_local=Path(model_path).expanduser().is_dir(),
        binaries={b: p for b in adapter.binaries if (p := shutil.which(b))},
        engine_packages={k: v for k, v in found.items() if k in ENGINE_SIDE_PACKAGES} if dist else {},
        port_in_use=port_in_use(engine.host, engine.port) if adapter.name != "endpoint" else False,
        cpu_flags=cpu_flags(),
    )


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """Commit sha and whether the work tree differs from it (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
            return r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": bool(status) if status is not None else None}


# x86 CPU features that decide which kernels a CPU engine build has (vLLM CPU: _C_AVX2 vs _C_AVX512).
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU_FEATURES this host's CPU has (from /proc/cpuinfo's first `flags` line); empty when
    unknown (not Linux, not x86), so checks that need them are skipped rather than guessed.

    SERVELAB_CPU_FLAGS (comma-separated, e.g. `avx2`) replaces what /proc/cpuinfo says, for
    preflight only: it forces the refusal path of an AVX2 CPU on an AVX-512 one (the tests do
    that), or lets a user try a kernel preflight would refuse. The engine still sees the real CPU."""
    forced = os.environ.get("SERVELAB_CPU_FLAGS") if cpuinfo is None else None
    if forced is not None:
        return frozenset(f.strip() for f in forced.split(",") if f.strip() in CPU_FEATURES)
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(f for f in line.split(":", 1)[1].split() if f in CPU_FEATURES)
    return frozenset()


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


MODEL_PROVENANCE = "servelab_provenance.json"  # written into a model folder by the script that built it


def model_provenance(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """Where a locally built model came from: its folder's servelab_provenance.json (package,
    version, file, sha256, licence, the command; scripts/build_smollm2.py writes it), with the
    folder's build stamp (servelab_recipe.json) beside it; None for a model without one (a hub
    id, the tiny random model) or an unreadable file."""
    if not path:
        return None
    folder = Path(path)
    try:
        prov = json.loads((folder / MODEL_PROVENANCE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(prov, dict):
        return None
    try:
        recipe = json.loads((folder / "servelab_recipe.json").read_text())
    except (OSError, ValueError):
        recipe = None
    return {**prov, "path": str(folder), "recipe": recipe}


def provenance() -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    pkgs = {}
    for p in LAB_PACKAGES:
        try:
            pkgs[p] = md.version(p)
        except md.PackageNotFoundError:
            pkgs[p] = None
    try:
        lab_version = md.version("servelab")
    except md.PackageNotFoundError:
        lab_version = None
    return {
        **git_state(),
        "lab_version": lab_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        # the kernel-deciding flags preflight used; "forced" when SERVELAB_CPU_FLAGS replaced them
        "cpu_flags": sorted(cpu_flags()),
        "cpu_flags_forced": "SERVELAB_CPU_FLAGS" in os.environ,
        "gpu": gpu_info(),
        "packages": pkgs,
    }
