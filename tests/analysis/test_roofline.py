"""Decode roofline on a hand-computed Llama-3.1-8B shape, and MBU."""

from __future__ import annotations

import pytest

from analysis.roofline import (
    bytes_per_weight,
    decode_batch_from_records,
    decode_bound,
    kv_bytes_per_token,
    model_shape,
    point_roofline,
    weight_bytes,
)

LLAMA_31_8B = {  # config.json fields of meta-llama/Llama-3.1-8B
    "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
# by hand: embeddings + lm_head 2·128256·4096 = 1,050,673,152; final norm 4,096;
# per layer q,o 2·4096·4096 + k,v 2·4096·1024 + MLP 3·4096·14336 = 218,103,808, ·32 = 6,979,321,856; norms 32·2·4096 = 262,144
PARAMS = 1_050_673_152 + 4_096 + 6_979_321_856 + 262_144


def test_shape_and_parameter_count():
    s = model_shape(LLAMA_31_8B)
    assert (s.layers, s.kv_heads, s.head_dim) == (32, 8, 128)
    assert s.params == PARAMS == 8_030_261_248
    assert s.block_linear_params == 6_979_321_856


def test_weight_and_kv_bytes():
    s = model_shape(LLAMA_31_8B)
    assert weight_bytes(s) == 2 * PARAMS  # 16.06 GB in BF16
    assert weight_bytes(s, "fp8") == 6_979_321_856 + 2 * (PARAMS - 6_979_321_856)  # embeddings stay BF16
    assert bytes_per_weight(s, "awq", 4, 128) == pytest.approx((4 + 20 / 128) / 8)
    assert kv_bytes_per_token(s) == 2 * 32 * 8 * 128 * 2 == 131_072  # 128 KiB per token
    assert kv_bytes_per_token(s, "fp8") == 65_536


def test_h100_bounds_match_the_reference_worked_examples():
    s = model_shape(LLAMA_31_8B)
    b1 = decode_bound(s, 3350)
    assert b1["tok_per_s_per_user_bound"] == pytest.approx(3350e9 / 16_060_522_496)  # ≈ 208.6, "≤ 209"
    b64 = decode_bound(s, 3350, batch=64, context_tokens=4096)
    assert b64["bytes_per_step"] == 16_060_522_496 + 64 * 4096 * 131_072
    assert b64["step_s_min"] == pytest.approx(0.015051, rel=1e-4)  # "step ≥ 15 ms"
    assert b64["tok_per_s_bound"] == pytest.approx(4252, rel=1e-3)  # "≤ 4.25K tok/s aggregate"
    assert decode_bound(s, 3350, devices=2)["tok_per_s_bound"] == pytest.approx(2 * b1["tok_per_s_bound"])


def test_mbu_of_a_point_and_missing_bandwidth():
    s = model_shape(LLAMA_31_8B)
    r = point_roofline(s, 3350, output_tok_per_s=100.0, batch=1.0, context_tokens=0, batch_method="given", bandwidth_source="spec")
    assert r["mbu"] == pytest.approx(100 * 16_060_522_496 / 3350e9)  # ≈ 0.479
    cpu = point_roofline(s, None, output_tok_per_s=5.0, batch=1.0, context_tokens=0, batch_method="x", bandwidth_source="measured")
    assert cpu["mbu"] is None and cpu["why_missing"] == "no memory bandwidth (spec or measured)"


def test_quantized_checkpoint_config_and_tiny_model():
    tiny = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "intermediate_size": 704, "vocab_size": 4096, "torch_dtype": "float32",
            "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 64}}  # fmt: skip
    s = model_shape(tiny)
    linear = 2 * (4 * 256 * 256 + 3 * 256 * 704)
    assert s.block_linear_params == linear and s.params == 2 * 4096 * 256 + 256 + linear + 2 * 2 * 256
    assert weight_bytes(s) == pytest.approx(linear * (4 + 20 / 64) / 8 + (s.params - linear) * 4)
    assert decode_batch_from_records(30.0, 60.0) == 0.5


def test_the_weights_dtype_is_read_from_transformers_5_configs_too():
    from analysis.roofline import model_shape

    base = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
            "vocab_size": 100}  # fmt: skip
    assert model_shape({**base, "dtype": "float32"}).dtype_bytes == 4.0  # transformers >= 5
    assert model_shape({**base, "torch_dtype": "float32"}).dtype_bytes == 4.0  # older
    assert model_shape(base).dtype_bytes == 2.0
