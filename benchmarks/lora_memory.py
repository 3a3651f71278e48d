"""Peak memory of one GRPO training step: full fine-tuning with and without a reference copy, and
LoRA (whose reference is the same model with its adapters off).

Each variant runs in a fresh process: a Qwen2-shaped model built from a config (nothing is
downloaded), a real ``Trainer`` (AdamW, the reference pass when beta > 0) and two ``train_step``s on
the same fixed batch. Reported: parameters held and trained, and the peak memory growth from before
the model was built (CUDA's allocator peak on a GPU, the kernel's peak RSS on CPU).

    python benchmarks/lora_memory.py [--hidden 512] [--layers 8] [--vocab 32000] [--completion 96] [--device cpu|cuda]
"""

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

VARIANTS = {  # name -> (lora_r, beta, gradient checkpointing)
    "full fine-tuning + reference copy": (None, 0.04, False),
    "full fine-tuning, no reference (beta 0)": (None, 0.0, False),
    "LoRA r=16 (reference = adapters off)": (16, 0.04, False),
    "LoRA r=16 + gradient checkpointing": (16, 0.04, True),
}


def one(name: str, hidden: int, layers: int, vocab: int, device: str, completion: int) -> dict:
    from unified_rl import methods
    from unified_rl.apps.peak_memory import peak, reset_peak
    from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
    from unified_rl.config import TrainConfig
    from unified_rl.data.collate import to_rollout
    from unified_rl.hf import build_qwen2, qwen2_config
    from unified_rl.loop import Trainer
    from unified_rl.protocols import DataSource
    from unified_rl.rewards import FromCallable

    lora_r, beta, checkpointing = VARIANTS[name]
    g = torch.Generator().manual_seed(0)
    groups, size, prompt = 2, 8, 32
    prompts = [torch.randint(3, vocab, (prompt,), generator=g).tolist() for _ in range(groups) for _ in range(size)]
    completions = [torch.randint(3, vocab, (completion,), generator=g).tolist() for _ in range(groups * size)]
    rewards = torch.randint(0, 2, (groups * size,), generator=g).float()

    class Fixed(DataSource):
        def sample(self, policy, n):
            r = to_rollout(prompts, completions, pad_id=0, group_ids=[i // size for i in range(groups * size)], device=torch.device(device))
            return r.replace(rewards=rewards.to(device))

    base = reset_peak(device)
    model = build_qwen2(qwen2_config(vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                                     num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False)).to(device)
    cfg = TrainConfig(steps=2, questions_per_step=groups, lora_r=lora_r, checkpoint_every=0,
                      gradient_checkpointing=checkpointing)
    trainer = Trainer(model, char_tokenizer(), methods.grpo(beta=beta, group_size=size), ArithmeticTask().train_rows(8), cfg, data_source=Fixed(),
                      reward=FromCallable(lambda prompts, completions, **_: [0.0] * len(completions)))  # never called: the batch is scored
    for _ in range(2):
        trainer.train_step()
    held = sum(p.numel() for p in trainer.policy.parameters())
    if trainer.reference is not None and not trainer.reference.shares_policy:
        held += sum(p.numel() for p in trainer.reference.copy.parameters())
    return {"variant": name, "params_held_M": held / 1e6, "params_trained_M": sum(p.numel() for p in trainer.params) / 1e6,
            "peak_growth_MiB": (peak(device) - base) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--completion", type=int, default=96, help="completion tokens per sample (activations grow with it)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.hidden, a.layers, a.vocab, a.device, a.completion)))
        return
    print(f"machine: {machine()}")
    print(f"model: Qwen2-shaped, hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}; GRPO, 2 groups x 8 samples, "
          f"prompt 32 + completion {a.completion} tokens, 2 steps, fp32, {a.device}\n")
    rows = []
    for name in VARIANTS:
        argv = [sys.executable, __file__, "--one", name, "--hidden", str(a.hidden), "--layers", str(a.layers), "--vocab", str(a.vocab),
                "--device", a.device, "--completion", str(a.completion)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    full = rows[0]["peak_growth_MiB"]
    print("| variant | parameters held (M) | parameters trained (M) | peak memory growth (MiB) | vs full + reference |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['params_held_M']:.1f} | {r['params_trained_M']:.2f} | {r['peak_growth_MiB']:.0f} | "
              f"{r['peak_growth_MiB'] / full:.2f}x |")


if __name__ == "__main__":
    main()
