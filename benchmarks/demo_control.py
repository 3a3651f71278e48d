"""The control behind the README's demo claim: from the demo's own SFT start, 100 more SFT steps
at the GRPO learning rate on 16 x 8 = 128 worked solutions per step. Prints held-out greedy
accuracy every 25 steps (on our machine, session 3: SFT start 62.1%; the demo's GRPO reached 69.9%; this control 78.5%).

    python benchmarks/demo_control.py
"""

import os

import torch

import unified_rl as url
from unified_rl.config import TrainConfig
from unified_rl.apps.demo import DemoSettings, sft_start
from unified_rl.apps.tasks import extract_answer
from unified_rl.loop import Trainer

torch.set_num_threads(min(2, os.cpu_count() or 1))
s = DemoSettings()
model, tok, train_rows, eval_rows, sft = sft_start(s, progress=False)
print(f"SFT start: {sft.evaluate():.1%}", flush=True)
cfg = TrainConfig(method="sft", steps=100, questions_per_step=s.questions_per_step * s.group_size, lr=s.grpo_lr, warmup_steps=s.grpo_warmup,
                  max_new_tokens=s.max_new_tokens, eval_size=s.eval_size, seed=1)
control = Trainer(model, tok, url.methods.sft(), train_rows, cfg, eval_rows=eval_rows, extract=extract_answer, phase="control")
for step in range(1, cfg.steps + 1):
    control.train_step()
    if step % 25 == 0:
        print(f"control step {step}: {control.evaluate():.1%}", flush=True)
