"""Memory-bandwidth roofline of decode and the bandwidth utilisation (MBU) a point achieved. Pure: no I/O.

Model shape from a Hugging Face config.json (already parsed into a dict by the caller):
  L layers, d hidden, H heads, H_kv KV heads, d_h = head_dim (or d / H), I intermediate, V vocab.
  params (when the config does not say) = V·d (embeddings) + [V·d unless tied] (lm_head) + d (final norm)
      + L · (d·H·d_h + 2·d·H_kv·d_h + H·d_h·d   (q, k, v, o)  + 3·d·I  (gate, up, down)  + 2·d (norms))
Bytes read per decode step (one token for each of B running sequences):
  weight_bytes = linear params of the L blocks · bytes/weight(quant) + the rest · bytes(dtype)
      bytes/weight: dtype (bf16/fp16 2, fp32 4) unquantized; fp8/int8 1; int4/awq/gptq bits/8 plus
      one 16-bit scale per group (+ a 4-bit zero for awq/gptq) per group_size weights
  kv_bytes_per_token = 2 · L · H_kv · d_h · bytes(kv dtype)      (K and V)
  bytes_per_step = weight_bytes + B · C · kv_bytes_per_token       (C = mean context per sequence)
Bound and utilisation (BW = memory bandwidth in bytes/s, spec for a GPU, measured for a CPU host):
  step_s ≥ bytes_per_step / BW;  decode bound = B / step_s tok/s (per user: 1 / step_s)
  MBU = achieved output tok/s ÷ bound at the same B = (bytes_per_step · steps/s) / BW
Weight-only: embeddings and lm_head stay in the model dtype (as vLLM and the AWQ/GPTQ formats keep them).
The bound ignores compute, communication and prefill, so MBU is "the share of physics", not a target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DTYPE_BYTES = {"float32": 4.0, "float": 4.0, "bfloat16": 2.0, "float16": 2.0, "half": 2.0, "fp8": 1.0}
KV_DTYPE_BYTES = {"auto": None, "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0, "float16": 2.0, "bfloat16": 2.0}


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    dtype_bytes: float
    params: int  # total parameters
    block_linear_params: int  # q, k, v, o, gate, up, down of all layers (what weight-only quantization packs)
    quant_method: str | None = None  # from config.json quantization_config
    quant_bits: int | None = None
    quant_group_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_shape(config: dict[str, Any]) -> ModelShape:
    """The shape of a decoder-only transformer from its config.json (Llama/Mistral/Qwen field names)."""
    c = config.get("text_config", config)  # multimodal configs nest the language model
    d = int(c["hidden_size"])
    layers = int(c["num_hidden_layers"])
    heads = int(c["num_attention_heads"])
    kv = int(c.get("num_key_value_heads") or heads)
    hd = int(c.get("head_dim") or d // heads)
    inter = int(c.get("intermediate_size") or 4 * d)
    vocab = int(c["vocab_size"])
    tied = bool(c.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    block_linear = layers * (d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * inter)
    params = vocab * d * (1 if tied else 2) + d + block_linear + layers * 2 * d
    q = config.get("quantization_config") or {}
    # transformers >= 5 writes "dtype", older versions "torch_dtype"
    dtype = str(c.get("dtype") or c.get("torch_dtype") or config.get("dtype") or config.get("torch_dtype") or "bfloat16")
    return ModelShape(
        layers=layers, hidden=d, heads=heads, kv_heads=kv, head_dim=hd, intermediate=inter, vocab=vocab,
        tied_embeddings=tied, dtype_bytes=DTYPE_BYTES.get(dtype, 2.0), params=params, block_linear_params=block_linear,
        quant_method=q.get("quant_method"), quant_bits=q.get("bits"), quant_group_size=q.get("group_size"),
    )  # fmt: skip


def bytes_per_weight(shape: ModelShape, method: str | None = None, bits: int | None = None, group_size: int | None = None) -> float:
    """Bytes per packed linear weight for a quantization method (module doc); None = the checkpoint's own."""
    method = method or shape.quant_method
    if method in (None, "none"):
        return shape.dtype_bytes
    if method in ("fp8", "int8", "w8a8", "compressed-tensors") and (bits or shape.quant_bits or 8) == 8:
        return 1.0
    b = float(bits or shape.quant_bits or 4)
    g = group_size or shape.quant_group_size or 128
    g = g if g and g > 0 else 128  # group_size -1 (one group per row) ~ negligible overhead; keep the 128 estimate
    zero_bits = 4.0 if method in ("awq", "gptq", "int4") else 0.0
    return (b + (16.0 + zero_bits) / g) / 8.0


def weight_bytes(shape: ModelShape, method: str | None = None, bits: int | None = None, group_size: int | None = None) -> float:
    rest = shape.params - shape.block_linear_params
    return shape.block_linear_params * bytes_per_weight(shape, method, bits, group_size) + rest * shape.dtype_bytes


def kv_bytes_per_token(shape: ModelShape, kv_cache_dtype: str = "auto") -> float:
    b = KV_DTYPE_BYTES.get(kv_cache_dtype) or shape.dtype_bytes
    return 2.0 * shape.layers * shape.kv_heads * shape.head_dim * b


def decode_bound(
    shape: ModelShape,
    bandwidth_gb_per_s: float,
    *,
    batch: float = 1.0,
    context_tokens: float = 0.0,
    quant_method: str | None = None,
    quant_bits: int | None = None,
    kv_cache_dtype: str = "auto",
    devices: int = 1,
) -> dict[str, Any]:
    """Memory-bound decode limits at `batch` running sequences of `context_tokens` each.

    `bandwidth_gb_per_s` is per device; `devices` > 1 (tensor parallel) streams the weights and
    KV in parallel, so the aggregate bandwidth is devices × BW (communication ignored).
    """
    wb = weight_bytes(shape, quant_method, quant_bits)
    kvb = kv_bytes_per_token(shape, kv_cache_dtype)
    step_bytes = wb + batch * context_tokens * kvb
    bw = bandwidth_gb_per_s * 1e9 * max(devices, 1)
    step_s = step_bytes / bw
    return {
        "weight_bytes": wb,
        "kv_bytes_per_token": kvb,
        "batch": batch,
        "context_tokens": context_tokens,
        "bytes_per_step": step_bytes,
        "bandwidth_gb_per_s": bandwidth_gb_per_s * max(devices, 1),
        "step_s_min": step_s,
        "tok_per_s_bound": batch / step_s,
        "tok_per_s_per_user_bound": 1.0 / step_s,
    }


def point_roofline(
    shape: ModelShape,
    bandwidth_gb_per_s: float | None,
    *,
    output_tok_per_s: float | None,
    batch: float | None,
    context_tokens: float,
    batch_method: str,
    bandwidth_source: str,
    quant_method: str | None = None,
    quant_bits: int | None = None,
    kv_cache_dtype: str = "auto",
    devices: int = 1,
) -> dict[str, Any]:
    """Bound and MBU of one point: `batch` = mean running sequences in decode (say how in `batch_method`),
    `context_tokens` = mean context per sequence while decoding (e.g. prompt + output / 2)."""
    if not bandwidth_gb_per_s or not batch or batch <= 0:
        why = "no memory bandwidth (spec or measured)" if not bandwidth_gb_per_s else "no running batch"
        return {"mbu": None, "why_missing": why, "bandwidth_source": bandwidth_source, "batch_method": batch_method}
    b = decode_bound(shape, bandwidth_gb_per_s, batch=batch, context_tokens=context_tokens, quant_method=quant_method,
                     quant_bits=quant_bits, kv_cache_dtype=kv_cache_dtype, devices=devices)  # fmt: skip
    mbu = output_tok_per_s / b["tok_per_s_bound"] if output_tok_per_s is not None else None
    return {**b, "achieved_tok_per_s": output_tok_per_s, "mbu": mbu, "bandwidth_source": bandwidth_source, "batch_method": batch_method}


def decode_batch_from_records(decode_s_total: float, window_s: float) -> float | None:
    """Little's law for the decode phase: mean running sequences = Σ per-request decode time / window."""
    return decode_s_total / window_s if window_s and window_s > 0 else None
