"""Run by test_resume.py in fresh processes: train N steps (optionally resuming), save the policy."""

import sys

import torch
from safetensors.torch import save_file

from unified_rl.config import TrainConfig
from helpers import registered
from unified_rl.loop import Trainer
from unified_rl.rewards import FromCallable
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
from unified_rl.hf import tiny_llama


def has_seven(prompts, completions, **_):
    return [float("7" in c[:6]) for c in completions]


def main(out: str, method: str, stop_at: int, resume: bool) -> None:
    torch.set_num_threads(1)
    tok = char_tokenizer()
    model = tiny_llama(len(tok), hidden=32, layers=2, heads=2, intermediate=64, seed=0)
    cfg = TrainConfig(steps=3, iterations=2, questions_per_step=4, lr=1e-3, max_new_tokens=8,
                      checkpoint_every=2, out_dir=out, seed=0)
    trainer = Trainer(model, tok, registered(method, group_size=4), ArithmeticTask().train_rows(64), cfg, reward=FromCallable(has_seven))
    if resume:
        trainer.resume(f"{out}/checkpoint")
    while trainer.step_count < stop_at:
        trainer.train_step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/final-{stop_at}.safetensors")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "resume")
