"""Shared fixtures: Hydra composition, a tiny tokenizer, the timing server, process checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "support"


_COMPOSED: dict[tuple[tuple[str, ...], bool], object] = {}


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False):
    """The real conf/ tree composed with `overrides`, as Hydra's CLI would (no run dir).

    Composing takes ~0.4 s and the suite asks ~300 times, often the same: each distinct request is
    composed once per process and handed out as a deep copy (a test may change its copy freely)."""
    import copy

    key = (tuple(overrides or ()), return_hydra_config)
    if key not in _COMPOSED:
        from hydra import compose as hcompose
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from experiments.schema import register_configs

        register_configs()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            _COMPOSED[key] = hcompose(config_name="config", overrides=list(key[0]), return_hydra_config=return_hydra_config)
    return copy.deepcopy(_COMPOSED[key])


def launch_dir(variant_dir: Path, n: int = 1) -> Path:
    """The n-th launch folder of a variant's results folder (experiments.sweeps.resume layout)."""
    return Path(variant_dir) / f"launch-{n}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def free_port() -> int:
    from engines.process import free_port as fp

    return fp()


def wait_http(url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A folder with a small trained BPE tokenizer.json (BOS added), built in < 1 s."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    d = tmp_path_factory.mktemp("tok")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    tok.train_from_iterator([" ".join(words[(i * 7 + j) % 10] for j in range(12)) for i in range(300)], tr)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(d / "tokenizer.json"))
    return d


@pytest.fixture
def timing_server(tmp_path):
    """Start tests/support/timing_server.py; yields (base_url, log_path, start(**kw))."""
    procs: list[subprocess.Popen] = []

    def start(ttft_ms: float = 20, itl_ms: float = 5, fail_status: int = 0, api_key: str | None = None,
              keepalive_s: float = 5.0, max_streams: int = 0, count_prompt: bool = False,
              hostile: str | None = None) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"server_{port}.jsonl"
        procs.append(subprocess.Popen(
            [sys.executable, str(SUPPORT / "timing_server.py"), "--port", str(port), "--ttft-ms", str(ttft_ms),
             "--itl-ms", str(itl_ms), "--fail-status", str(fail_status), "--log", str(log),
             "--keepalive-s", str(keepalive_s), *(["--api-key", api_key] if api_key else []),
             *(["--max-streams", str(max_streams)] if max_streams else []), *(["--count-prompt"] if count_prompt else []),
             *(["--hostile", hostile] if hostile else [])]
        ))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health")
        return url, log

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def pytest_collection_modifyitems(config, items):
    """`beside` tests first (pyproject.toml markers): in scripts/test.sh's parallel pass the longest
    tests, a real engine's starts, then begin at once and overlap everything else instead of
    lengthening the pass's tail. A stable sort: every other test keeps its order."""
    items.sort(key=lambda it: it.get_closest_marker("beside") is None)
