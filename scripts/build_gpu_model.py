"""Build a random-weight Llama of about 1B parameters in place (on the GPU), for the GPU validation.

No download and no hub. The shape is Llama-3.2-1B's (hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192, tied embeddings) with the tiny model's 4096-token tokenizer, which makes it
0.98 B parameters (981,534,720), 1.96 GB in bfloat16. The tokenizer files are copied from ``--tokenizer-from``
(default models/tiny-llama, built by scripts/build_tiny_model.py) when they are there, else
trained again with that script's seeded recipe (byte-identical files, ~6 s of CPU).
The weights are initialised directly on ``--device`` in ``--dtype`` (no CPU copy of the model
is built first) and saved with ``save_pretrained`` (safetensors). ``--config tiny`` is a
two-layer 64-wide model that builds on a CPU in about a second (the dry run uses it).

Side effects: writes the model folder ``--out`` (atomically, via ``<out>.tmp``); skips the build
when ``<out>/servelab_recipe.json`` matches this recipe (``--force`` rebuilds). Prints one
``[build_gpu_model] {json}`` line with the parameter count, bytes and the seconds of each phase.

Run it with an interpreter that has torch and transformers (>=5), e.g. on the GPU machine:
``python3 scripts/build_gpu_model.py --out models/random-llama-1b --device cuda``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# Shapes (the vocabulary comes from the tokenizer). "1b" = Llama-3.2-1B's layout.
CONFIGS: dict[str, dict[str, int]] = {
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 2048},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048},
}  # fmt: skip
RECIPE_VERSION = 1
SEED = 1234
VOCAB_SIZE = 4096  # the tiny model's tokenizer (scripts/build_tiny_model.py RECIPE["vocab_size"])


def param_count(shape: dict[str, int], vocab: int = VOCAB_SIZE, tied: bool = True) -> int:
    """Parameters of a Llama with this shape (the formula of analysis.roofline.model_shape). Pure."""
    d, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    heads, kv = shape["num_attention_heads"], shape["num_key_value_heads"]
    hd = d // heads
    block = layers * (d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * inter)
    return vocab * d * (1 if tied else 2) + d + block + layers * 2 * d


def recipe(config: str, dtype: str) -> dict[str, Any]:
    return {"recipe_version": RECIPE_VERSION, "seed": SEED, "config": config, "dtype": dtype, **CONFIGS[config]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tokenizer_into(dest: Path, source: Path | None) -> str:
    """Put the tokenizer files into `dest`: copied from `source` when it has all of them, else trained
    with scripts/build_tiny_model.py's recipe. Returns how ("copied from ..." or "trained")."""
    if source is not None and all((source / f).is_file() for f in TOKENIZER_FILES):
        for f in TOKENIZER_FILES:
            shutil.copyfile(source / f, dest / f)
        return f"copied from {source}"
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_tiny_model

    build_tiny_model.train_tokenizer(build_tiny_model.RECIPE).save_pretrained(dest)
    return "trained (scripts/build_tiny_model.py recipe)"


def build(out: Path, config: str, device: str, dtype: str, tokenizer_from: Path | None) -> dict[str, Any]:
    """Build the model into `out`; returns the facts printed on the [build_gpu_model] line."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    timings["import_s"] = time.monotonic() - t
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"[build_gpu_model] --device {device}: torch {torch.__version__} sees no CUDA device")
    rec = recipe(config, dtype)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    t = time.monotonic()
    how = tokenizer_into(tmp, tokenizer_from)
    vocab = len(AutoTokenizer.from_pretrained(tmp))
    timings["tokenizer_s"] = time.monotonic() - t

    t = time.monotonic()
    shape = CONFIGS[config]
    cfg = LlamaConfig(vocab_size=vocab, **shape, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                      tie_word_embeddings=True, dtype=dtype)  # fmt: skip
    torch.manual_seed(SEED)
    torch_dtype = getattr(torch, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):  # weights are allocated and initialised on the device itself
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 2
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    params = sum(p.numel() for p in model.parameters())
    timings["init_s"] = time.monotonic() - t

    t = time.monotonic()
    model.save_pretrained(tmp)
    del model
    rec["tokenizer_sha256"] = _sha256(tmp / "tokenizer.json")
    (tmp / "servelab_recipe.json").write_text(json.dumps(rec, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-built model never looks finished
    timings["save_s"] = time.monotonic() - t
    return {
        "out": str(out), "config": config, "device": device, "dtype": dtype, "params": params,
        "params_formula": param_count(shape, vocab), "vocab": vocab, "tokenizer": how,
        "tokenizer_sha256": rec["tokenizer_sha256"], "bytes": sum(p.stat().st_size for p in out.iterdir()),
        "torch": torch.__version__, **{k: round(v, 2) for k, v in timings.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="1b")
    ap.add_argument("--tiny", action="store_true", help="same as --config tiny")
    ap.add_argument("--device", default="cuda", help="where the weights are built: cuda, cuda:0, cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--tokenizer-from", type=Path, default=ROOT / "models" / "tiny-llama",
                    help="folder with the tiny model's tokenizer files (trained again when absent)")  # fmt: skip
    ap.add_argument("--force", action="store_true", help="rebuild even if the recipe matches")
    args = ap.parse_args(argv)
    config = "tiny" if args.tiny else args.config
    stamp = args.out / "servelab_recipe.json"
    if not args.force and stamp.is_file():
        old = json.loads(stamp.read_text())
        if {k: v for k, v in old.items() if k != "tokenizer_sha256"} == recipe(config, args.dtype):
            facts = {"out": str(args.out), "config": config, "up_to_date": True, "params_formula": param_count(CONFIGS[config]),
                     "bytes": sum(p.stat().st_size for p in args.out.iterdir())}  # fmt: skip
            print(f"[build_gpu_model] {json.dumps(facts)}")
            return 0
    facts = build(args.out, config, args.device, args.dtype, args.tokenizer_from)
    print(f"[build_gpu_model] {json.dumps(facts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
