"""Fetch the wheels the GPU validation installs on the GPU machine into .wheels/gpu, and check them.

The GPU machine (benchmarks/gpu_validation.py, docs/gpu-validation.md) has Python 3.12 on
manylinux x86_64 with torch, transformers, pandas, ... (MACHINE_PACKAGES) but no package registry,
so everything else travels with the working tree in the ignored folder .wheels/gpu, inside the
64 MiB the tree and the carried paths may take together.

  python scripts/fetch_gpu_wheels.py            download exactly scripts/gpu_wheels.txt, check it
  python scripts/fetch_gpu_wheels.py --check    only check the folder (nothing downloaded)
  python scripts/fetch_gpu_wheels.py --resolve  derive gpu_wheels.txt again, then download

How the list is derived (--resolve): pip resolves scripts/gpu_requirements.in for CPython 3.12 on
manylinux x86_64 (``pip install --dry-run --ignore-installed --report``, binary wheels only), and
the packages of MACHINE_PACKAGES are taken out of that closure. Their own dependencies that our
packages also need (pydantic, anyio, click, ...) stay in the list: they are small, and pip
installs them on the machine only where its copy is missing or does not satisfy.
Downloading uses ``pip download --no-deps --only-binary=:all:`` of the pinned list, so the folder
holds exactly the list; antlr4-python3-runtime (hydra-core's parser) is published as an sdist only
and is built into a pure-Python wheel here with ``pip wheel``.

Side effects: network (the package index), writes and prunes .wheels/gpu, and with --resolve
rewrites scripts/gpu_wheels.txt. The checks (used by the dry run too) only read.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS_LIST = ROOT / "scripts" / "gpu_wheels.txt"
REQUIREMENTS = ROOT / "scripts" / "gpu_requirements.in"
WHEEL_DIR = ROOT / ".wheels" / "gpu"
CARRY_LIMIT_BYTES = 64 * 2**20  # tracked tree + carried paths, together
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
# Already on the GPU machine (the device README); never shipped.
MACHINE_PACKAGES = ("torch", "transformers", "nvidia-ml-py", "pandas", "pyarrow", "matplotlib", "jinja2", "psutil",
                    "prometheus-client", "rich", "uvloop", "tokenizers", "numpy")  # fmt: skip
# Published as sdists only: built into py3-none-any wheels by `pip wheel` (the version the resolver needs:
# hydra-core 1.3 pins antlr4-python3-runtime==4.9.*).
SDIST_ONLY = {"antlr4-python3-runtime": "4.9.3"}
# What the validation needs importable after the install (distribution names).
REQUIRED = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "locust", "gevent", "geventhttpclient", "greenlet",
            "flask", "pyzmq", "msgpack", "pytest", "pluggy", "iniconfig", "fastapi", "starlette", "uvicorn",
            "pydantic", "pydantic-core", "openai")  # fmt: skip
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_platform_args() -> list[str]:
    out = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp312"]
    for p in PLATFORMS:
        out += ["--platform", p]
    return out


# -- reading the lists ------------------------------------------------------------------------------
def read_pins(path: Path = WHEELS_LIST) -> tuple[list[tuple[str, str]], list[str]]:
    """(pins as (name, version), problems) of a `name==version` list; '#' comments and blanks skipped."""
    pins, problems, seen = [], [], set()
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN.match(line)
        if not m:
            problems.append(f"{path.name}:{n}: not `name==version`: {raw.strip()!r}")
            continue
        key = normalize(m.group(1))
        if key in seen:
            problems.append(f"{path.name}:{n}: {m.group(1)} is pinned twice")
        seen.add(key)
        pins.append((m.group(1), m.group(2)))
    if not pins and not problems:
        problems.append(f"{path.name}: no pins")
    return pins, problems


def read_requirements(path: Path = REQUIREMENTS) -> list[str]:
    return [s for raw in Path(path).read_text().splitlines() if (s := raw.split("#", 1)[0].strip())]


def _req_name_spec(req: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", req)
    if not m:
        raise ValueError(f"not a requirement: {req!r}")
    return normalize(m.group(1)), m.group(3).strip()


def _version_key(v: str) -> tuple:
    try:
        from packaging.version import Version

        return (Version(v),)
    except Exception:  # noqa: BLE001 - no packaging: numeric parts are enough for the specs used here
        return tuple(int(m.group()) if (m := re.match(r"\d+", p)) else 0 for p in v.split("."))


def satisfies(version: str, spec: str) -> bool:
    """Whether `version` meets a simple comma-separated spec (==, !=, >=, <=, >, <; '' = anything)."""
    ops = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}  # fmt: skip
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.match(r"^(==|!=|>=|<=|>|<)\s*(\S+)$", part)
        if not m:
            raise ValueError(f"unsupported version spec {part!r}")
        op, want = m.groups()
        if want.endswith(".*"):  # ==1.4.* : a prefix match
            hit = version == want[:-2] or version.startswith(want[:-1])
            if hit != (op == "=="):
                return False
            continue
        if not ops[op](_version_key(version), _version_key(want)):
            return False
    return True


def pyproject_pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{normalized name: spec} of pyproject.toml's [project] dependencies."""
    import tomllib

    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    return dict(_req_name_spec(d) for d in deps)


def check_pins(pins: list[tuple[str, str]], requirements: list[str], pyproject: dict[str, str]) -> list[str]:
    """Problems of the pinned list against the requirements and pyproject.toml ([] = consistent). Pure."""
    out = []
    have = {normalize(n): v for n, v in pins}
    for name in MACHINE_PACKAGES:
        if normalize(name) in have:
            out.append(f"gpu_wheels.txt pins {name}, which the GPU machine already has (MACHINE_PACKAGES): drop it")
    for req in requirements:
        name, spec = _req_name_spec(req)
        if name not in have:
            out.append(f"gpu_wheels.txt has no pin for the requirement {req!r} (python scripts/fetch_gpu_wheels.py --resolve)")
        elif not satisfies(have[name], spec):
            out.append(f"gpu_wheels.txt pins {name}=={have[name]}, which does not meet the requirement {req!r}")
    for name in ("locust", "hydra-core"):  # the lab's own pins must be what the GPU run installs
        if name in have and name in pyproject and not satisfies(have[name], pyproject[name]):
            out.append(f"gpu_wheels.txt pins {name}=={have[name]} but pyproject.toml wants {name}{pyproject[name]}")
        if name in pyproject:
            req = next((r for r in requirements if _req_name_spec(r)[0] == name), None)
            if req is None or _req_name_spec(req)[1].replace(" ", "") != pyproject[name].replace(" ", ""):
                out.append(f"gpu_requirements.in must require {name}{pyproject[name]} as pyproject.toml does (has {req!r})")
    for name in REQUIRED:
        if normalize(name) not in have:
            out.append(f"gpu_wheels.txt lacks {name}, which the validation needs")
    return out


# -- the wheel folder ---------------------------------------------------------------------------------
def wheel_name_version(filename: str) -> tuple[str, str]:
    parts = filename[: -len(".whl")].split("-")
    return normalize(parts[0]), parts[1]


def wheel_tags_ok(filename: str) -> bool:
    """Whether a wheel installs on CPython 3.12, manylinux x86_64 (pure, cp312 or abi3 <= cp312)."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        return False
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    pys = py.split(".")
    plat_ok = plat == "any" or any(re.fullmatch(r"manylinux(1|2010|2014|_2_\d+)_x86_64", p) for p in plat.split("."))
    if abi == "none":
        return plat_ok and any(p in ("py3", "py2", "cp312", "py312") or p.startswith("py3") for p in pys)
    if abi == "abi3":
        return plat_ok and any(re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= 12 for p in pys)
    return plat_ok and abi == "cp312" and "cp312" in pys


def check_wheel_dir(pins: list[tuple[str, str]], wheel_dir: Path = WHEEL_DIR) -> tuple[list[str], int]:
    """(problems, total bytes) of the wheel folder against the pins: one installable wheel per pin, nothing else."""
    files = sorted(p for p in Path(wheel_dir).iterdir() if p.is_file())
    problems, total = [], sum(p.stat().st_size for p in files)
    want = {(normalize(n), v) for n, v in pins}
    found: dict[tuple[str, str], list[str]] = {}
    for p in files:
        if not p.name.endswith(".whl"):
            problems.append(f"{wheel_dir.name}/{p.name} is not a wheel")
            continue
        key = wheel_name_version(p.name)
        found.setdefault(key, []).append(p.name)
        if key not in want:
            problems.append(f"{p.name} is not in gpu_wheels.txt (stale: python scripts/fetch_gpu_wheels.py prunes it)")
        elif not wheel_tags_ok(p.name):
            problems.append(f"{p.name} does not install on CPython {PYTHON_VERSION} manylinux x86_64")
    for key in sorted(want):
        n = len(found.get(key, []))
        if n != 1:
            problems.append(f"{key[0]}=={key[1]}: {n} wheels in {wheel_dir} (want exactly 1)")
    return problems, total


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what travels to the device without being carried: tracked files plus untracked
    files git does not ignore (`git ls-files -co --exclude-standard`)."""
    r = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
                       capture_output=True, check=True)  # fmt: skip
    total = 0
    for rel in filter(None, r.stdout.decode().split("\0")):
        p = root / rel
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def verify(wheel_dir: Path = WHEEL_DIR, wheels_list: Path = WHEELS_LIST) -> dict:
    """Every check of the list and (when present) the folder; {'problems': [...], ...sizes}."""
    pins, problems = read_pins(wheels_list)
    problems += check_pins(pins, read_requirements(), pyproject_pins())
    out = {"pins": len(pins), "wheel_dir": str(wheel_dir), "wheel_dir_present": wheel_dir.is_dir(),
           "tree_bytes": tree_bytes(), "wheel_bytes": None, "carry_limit_bytes": CARRY_LIMIT_BYTES}  # fmt: skip
    if wheel_dir.is_dir():
        dir_problems, out["wheel_bytes"] = check_wheel_dir(pins, wheel_dir)
        problems += dir_problems
        out["total_bytes"] = out["tree_bytes"] + out["wheel_bytes"]
        if out["total_bytes"] > CARRY_LIMIT_BYTES:
            problems.append(f"tree + wheels = {out['total_bytes'] / 2**20:.1f} MiB > {CARRY_LIMIT_BYTES / 2**20:.0f} MiB")
    out["problems"] = problems
    return out


# -- downloading and resolving --------------------------------------------------------------------------
def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("[fetch_gpu_wheels] $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_sdist_wheels(pins: list[tuple[str, str]], dest: Path) -> None:
    for name, version in pins:
        if normalize(name) in SDIST_ONLY and not any(wheel_name_version(p.name) == (normalize(name), version)
                                                     for p in dest.glob("*.whl")):  # fmt: skip
            _pip("wheel", "--no-deps", "-q", "-w", str(dest), f"{name}=={version}")


def download(pins: list[tuple[str, str]], dest: Path = WHEEL_DIR) -> None:
    """Exactly the pinned wheels into `dest` (already present ones are kept; others are pruned)."""
    dest.mkdir(parents=True, exist_ok=True)
    want = {(normalize(n), v) for n, v in pins}
    for p in dest.iterdir():
        if p.is_file() and (not p.name.endswith(".whl") or wheel_name_version(p.name) not in want):
            print(f"[fetch_gpu_wheels] pruning {p.name}")
            p.unlink()
    build_sdist_wheels(pins, dest)
    have = {wheel_name_version(p.name) for p in dest.glob("*.whl")}
    missing = [f"{n}=={v}" for n, v in pins if (normalize(n), v) not in have]
    if missing:
        _pip("download", "--no-deps", "-q", *pip_platform_args(), "-d", str(dest), *missing)


def resolve(requirements: Path = REQUIREMENTS) -> list[tuple[str, str]]:
    """The closure of the requirements for CPython 3.12 manylinux x86_64, minus MACHINE_PACKAGES."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, version in SDIST_ONLY.items():  # the resolver only takes wheels: build these first
            _pip("wheel", "--no-deps", "-q", "-w", str(t / "links"), f"{name}=={version}")
        _pip("install", "--dry-run", "--ignore-installed", "-q", "--report", str(t / "report.json"),
             "--target", str(t / "target"), "--find-links", str(t / "links"), *pip_platform_args(),
             "-r", str(requirements))  # fmt: skip
        report = json.loads((t / "report.json").read_text())
    machine = {normalize(n) for n in MACHINE_PACKAGES}
    pins = sorted(((i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"]
                   if normalize(i["metadata"]["name"]) not in machine), key=lambda p: normalize(p[0]))  # fmt: skip
    return pins


def write_pins(pins: list[tuple[str, str]], path: Path = WHEELS_LIST) -> None:
    head = ("# Wheels for the GPU validation (benchmarks/gpu_validation.py): CPython 3.12, manylinux x86_64.\n"
            "# Generated by `python scripts/fetch_gpu_wheels.py --resolve` from scripts/gpu_requirements.in:\n"
            "# its closure minus the packages the GPU machine has (MACHINE_PACKAGES in that script).\n"
            "# `python scripts/fetch_gpu_wheels.py` downloads exactly these into .wheels/gpu (--no-deps).\n")  # fmt: skip
    path.write_text(head + "".join(f"{n}=={v}\n" for n, v in pins))


def report_sizes(v: dict, wheel_dir: Path = WHEEL_DIR) -> None:
    if v["wheel_dir_present"]:
        for p in sorted(wheel_dir.glob("*.whl"), key=lambda p: -p.stat().st_size):
            print(f"  {p.stat().st_size / 2**20:7.2f} MiB  {p.name}")
        print(f"[fetch_gpu_wheels] {v['pins']} wheels, {v['wheel_bytes'] / 2**20:.1f} MiB; tree {v['tree_bytes'] / 2**20:.1f} "
              f"MiB; together {v['total_bytes'] / 2**20:.1f} of {CARRY_LIMIT_BYTES / 2**20:.0f} MiB")  # fmt: skip
    for p in v["problems"]:
        print(f"[fetch_gpu_wheels] PROBLEM: {p}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the list and the folder")
    ap.add_argument("--resolve", action="store_true", help="derive scripts/gpu_wheels.txt again first")
    ap.add_argument("--dest", type=Path, default=WHEEL_DIR)
    args = ap.parse_args(argv)
    if args.resolve:
        pins = resolve()
        write_pins(pins)
        print(f"[fetch_gpu_wheels] wrote {WHEELS_LIST.relative_to(ROOT)} ({len(pins)} pins)")
    if not args.check:
        pins, problems = read_pins()
        if problems:
            print("\n".join(problems))
            return 1
        download(pins, args.dest)
    v = verify(args.dest)
    report_sizes(v, args.dest)
    return 1 if v["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
