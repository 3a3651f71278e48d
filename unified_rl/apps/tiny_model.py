"""A tiny Qwen2-shaped chat model folder, built here from a config (nothing is downloaded): the
stand-in for a local instruct model in tests, the recipe's CI run and docs/train_your_own.md.

    python -m unified_rl.apps.tiny_model runs/tiny-qwen2    # config.json, model.safetensors, tokenizer + chat template

Its weights are random, so it answers nothing correctly; every code path a real Qwen2.5-Instruct
folder takes (chat template, grouped-query attention, tied embeddings, safetensors) is the same.
"""

import argparse
from typing import Optional

from ..hf import build_qwen2, qwen2_config, save_model
from .tasks import chat_tokenizer


def write_tiny_qwen2(folder: str, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> str:
    """Write the tiny model and its ChatML character tokenizer to ``folder``; returns the folder."""
    tok = chat_tokenizer()
    config = qwen2_config(len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, bos_token_id=None)
    return save_model(build_qwen2(config, seed=seed), tok, folder)


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m unified_rl.apps.tiny_model FOLDER [--hidden 64] [--layers 2]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args(argv)
    print(f"wrote {write_tiny_qwen2(a.folder, hidden=a.hidden, layers=a.layers)}")


if __name__ == "__main__":
    main()
