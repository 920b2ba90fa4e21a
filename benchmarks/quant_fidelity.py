"""Benchmark: how close the tiny model's 4-bit checkpoints are to the model they quantize, without
an engine and on any CPU.

Each checkpoint is read the way vLLM's CPU build reads it: vLLM's own Python repacking
(`_convert_awq_to_standard_format` for AWQ, then `unpack_quantized_values_into_int32` for the
4-bit codes; GPTQ sym=True is vLLM's `uint4b8` type, zero point 8) gives the integer codes and
zero points the CPU kernel (`cpu_gemm_wna16`) multiplies with; the weight they stand for is
(code - zero) * scale. Only the C++ GEMM itself is left out, which is what needs AVX-512.

Then the quality gate's own measure, offline with transformers in float32: the base model greedily
continues the first N generic prompts of the gate's set (32 tokens, as `quality.gen_tokens`);
each variant's weights are put in its place and it is teacher forced on the base's prompt +
continuation; per variant: the weight error against the base (relative RMS, largest error in
quantization steps), top-1 agreement, the rank each variant gives the base's tokens (median, 90th
percentile, share at rank 1), the mean log-likelihood ratio and the perplexity ratio.
`--checkpoint NAME=DIR` adds any other checkpoint folder (e.g. one built by an older recipe).

Run:  .venvs/vllm-cpu/bin/python benchmarks/quant_fidelity.py [--prompts 24]
Side effects: none (reads models/; torch uses all cores for a few seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def vllm_view(method: str, tensors: dict) -> dict:
    """{linear prefix: weight [out, in]} as vLLM's CPU build reads the packed tensors."""
    import torch
    from vllm.model_executor import parameter
    from vllm.model_executor.layers.quantization.auto_awq import _convert_awq_to_standard_format
    from vllm.model_executor.layers.quantization.utils.quant_utils import unpack_quantized_values_into_int32
    from vllm.scalar_type import scalar_types

    # vLLM's parameters ask the tensor-parallel group for their rank; outside a server there is
    # none: this process is rank 0 of 1.
    parameter.get_tensor_model_parallel_rank = lambda: 0
    parameter.get_tensor_model_parallel_world_size = lambda: 1
    out = {}
    for name in tensors:
        if not name.endswith(".qweight"):
            continue
        prefix = name[: -len(".qweight")]
        scales = tensors[prefix + ".scales"].double()  # [g, out]
        if method == "awq":
            layer = torch.nn.Module()
            layer.qweight = torch.nn.Parameter(tensors[name].clone(), requires_grad=False)
            layer.qzeros = torch.nn.Parameter(tensors[prefix + ".qzeros"].clone(), requires_grad=False)
            _convert_awq_to_standard_format(layer, "qweight", "qzeros", 4)
            codes = unpack_quantized_values_into_int32(layer.qweight.data, scalar_types.uint4, 0)  # [in, out]
            zeros = unpack_quantized_values_into_int32(layer.qzeros.data, scalar_types.uint4, 0).T  # [g, out]
        else:  # gptq, sym: uint4b8 (bias 8), qzeros unused by the symmetric kernel
            codes = unpack_quantized_values_into_int32(tensors[name], scalar_types.uint4b8, 0)
            zeros = torch.full_like(scales, scalar_types.uint4b8.bias)
        g = torch.arange(codes.shape[0]) // (codes.shape[0] // scales.shape[0])
        out[prefix] = ((codes.double() - zeros[g]) * scales[g]).T.float()
    return out


def load_variant(kind: str, path: Path | None, base_state: dict) -> tuple[dict, dict]:
    """(state dict for the base architecture, weight error figures) of one variant."""
    import torch
    from safetensors.torch import load_file

    if kind in ("fp16", "bf16"):
        dt = torch.float16 if kind == "fp16" else torch.bfloat16
        return {k: v.to(dt).float() for k, v in base_state.items()}, {}
    cfg = json.loads((path / "config.json").read_text())
    method = cfg["quantization_config"]["quant_method"]
    tensors = load_file(str(path / "model.safetensors"))
    weights = vllm_view(method, tensors)
    state = dict(base_state)
    rel, steps = [], []
    for prefix, w in weights.items():
        ref = base_state[prefix + ".weight"].float()
        state[prefix + ".weight"] = w
        rel.append(float(((w - ref).pow(2).mean() / ref.pow(2).mean()).sqrt()))
        scales = tensors[prefix + ".scales"].float()  # [g, out]
        g = torch.arange(ref.shape[1]) // (ref.shape[1] // scales.shape[0])
        steps.append(float(((w - ref).abs() / scales[g].T).max()))
    return state, {"method": method, "weight_rel_rms": sum(rel) / len(rel), "max_err_steps": max(steps)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=ROOT / "models" / "tiny-llama")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object instead")
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(args.base))
    model = LlamaForCausalLM.from_pretrained(str(args.base), dtype=torch.float32).eval()
    base_state = {k: v.float() for k, v in load_file(str(args.base / "model.safetensors")).items()}
    lines = (ROOT / "loadgen" / "data" / "quality" / "generic.jsonl").read_text().splitlines()
    prompts = [json.loads(x)["prompt"] for x in lines[: args.prompts]]

    seqs = []  # (prompt ids, greedy continuation ids of the base)
    with torch.no_grad():
        for p in prompts:
            ids = tok(p)["input_ids"]
            x = torch.tensor([ids])
            for _ in range(args.gen_tokens):
                nxt = int(model(x).logits[0, -1].argmax())
                x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
            seqs.append((ids, x[0, len(ids) :].tolist()))

    def score(state: dict) -> tuple[list[float], list[int]]:
        model.load_state_dict(state, strict=False)
        lps, ranks = [], []
        with torch.no_grad():
            for ids, cont in seqs:
                x = torch.tensor([ids + cont])
                logp = torch.log_softmax(model(x).logits[0].double(), dim=-1)
                for j, t in enumerate(cont):
                    row = logp[len(ids) - 1 + j]
                    lps.append(float(row[t]))
                    ranks.append(int((row > row[t]).sum()) + 1)
        return lps, ranks

    base_lp, base_ranks = score(base_state)
    variants = [("fp16", "fp16", None), ("bf16", "bf16", None)]
    for m in ("awq", "gptq"):
        d = args.base.with_name(f"{args.base.name}-{m}")
        if d.is_dir():
            variants.append((m, m, d))
    for spec in args.checkpoint:
        name, _, d = spec.partition("=")
        variants.append((name, "checkpoint", Path(d)))

    n = len(base_lp)
    rows = {}
    for name, kind, path in variants:
        state, werr = load_variant(kind, path, base_state)
        lp, ranks = score(state)
        rs = sorted(ranks)
        llr = sum(a - b for a, b in zip(lp, base_lp, strict=True)) / n
        rows[name] = {**werr, "top1_agreement": sum(r == 1 for r in ranks) / n, "rank_p50": rs[n // 2],
                      "rank_p90": rs[int(n * 0.9)], "mean_llr": llr, "ppl_ratio": math.exp(-llr)}  # fmt: skip
    base_top1 = sum(r == 1 for r in base_ranks) / n
    if args.json:
        print(json.dumps({"n_tokens": n, "base_self_top1": base_top1, "variants": rows}))
        return 0
    print(f"quant fidelity: {args.base.name}, {len(seqs)} prompts x {args.gen_tokens} tokens = {n} teacher-forced "
          f"tokens; the base's own top-1 share {base_top1:.4f}")  # fmt: skip
    print(f"{'variant':<12} {'w rel rms':>9} {'max err':>8} {'top-1':>7} {'rank p50':>8} {'rank p90':>8} "
          f"{'mean llr':>9} {'ppl ratio':>9}")  # fmt: skip
    for name, r in rows.items():
        w = (
            f"{r['weight_rel_rms']:>9.4f} {r['max_err_steps']:>7.2f}s"
            if "method" in r
            else f"{'-':>9} {'-':>8}"
        )
        print(f"{name:<12} {w} {r['top1_agreement']:>7.4f} {r['rank_p50']:>8} {r['rank_p90']:>8} "
              f"{r['mean_llr']:>9.4f} {r['ppl_ratio']:>9.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
