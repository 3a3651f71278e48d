"""Every registered method's first update, with and without LoRA, as a digest per (method, LoRA):
two Trainers built with the same seed in this process (the global RNG moved between them) must
agree, and the digests are printed as JSON so that a second process can be compared with this one
(run by tests/test_reproducible.py)."""

import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from helpers import ROWS, TOK, has_seven, registered, seven_steps, small_model, teacher_for  # noqa: E402

from unified_rl.config import TrainConfig  # noqa: E402
from unified_rl.loop import Trainer  # noqa: E402
from unified_rl.names import METHODS  # noqa: E402
from unified_rl.rewards import FromCallable, ProcessReward  # noqa: E402


def first_update(name: str, lora) -> tuple[str, bool]:
    """The digest of the trained parameters after one step, and whether the step moved them."""
    cfg = TrainConfig(steps=1, questions_per_step=4, max_new_tokens=40, lora_r=lora, checkpoint_every=0, seed=5)
    reward = None if name == "sft" else ProcessReward(TOK, seven_steps) if name == "grpo_process" else FromCallable(has_seven)
    method = registered(name, max_new_tokens=40, group_size=4)
    trainer = Trainer(small_model(seed=1), TOK, method, ROWS, cfg, reward=reward, **teacher_for(method))
    m = trainer.train_step()
    h = hashlib.sha256()
    for p in trainer.params:
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16], m["grad_norm"] > 0


def digests() -> dict:
    """{"method/full|lora": digest}; raises if the two Trainers of one process disagree."""
    out, moved = {}, []
    for lora in (None, 2):
        for name in METHODS:
            first = first_update(name, lora)
            torch.rand(11)  # the global RNG moves between the runs
            second = first_update(name, lora)
            assert first == second, (name, lora)
            out[f"{name}/{'lora' if lora else 'full'}"] = first[0]
            moved.append(first[1])
    assert sum(moved) >= 0.75 * len(moved), moved  # real updates compared (a step may draw no reward spread)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(digests()))
