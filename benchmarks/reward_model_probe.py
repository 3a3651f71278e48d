"""How accurate can Figure 6's reward model get? Held-out accuracy by epoch, beside the best
predictor that sees only the chain's length.

Samples of the design's SFT start (seed 0, loaded from ``docs/results/starts``) on its 4-5-step RL
questions, labelled by the rule (answer correct); the first 1,024 are held out (distinct questions
from the rest when ``--per-question`` is 1 or divides 1,024). The classifier is
``hf.reward_model_from_policy`` (the start's trunk, a fresh head), trained with ``ModelReward.fit``.
``--process`` trains on every step's prefix, labelled correct while every step so far is (the
whole completion keeps its outcome label). Session 11's runs are tabled in docs/results.md.

    python benchmarks/reward_model_probe.py [--labels 4096] [--per-question 1] [--epochs 2] [--lr 1e-4] [--process]
"""

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

from unified_rl.apps.design import Design, build_data, chain_length, labelled_samples, start  # noqa: E402
from unified_rl.apps.figure6 import rm_accuracy  # noqa: E402
from unified_rl.apps.tasks import char_tokenizer, extract_answer, step_checks  # noqa: E402
from unified_rl.hf import reward_model_from_policy  # noqa: E402
from unified_rl.rewards import ModelReward, OutcomeReward  # noqa: E402

STARTS = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "starts")


def prefixes(samples):
    """Each step's prefix, labelled correct while every step so far is; the whole completion keeps its label."""
    out = []
    for p, c, y in samples:
        ok = True
        for last, good in step_checks(p, c):
            ok = ok and good
            out.append((p, c[: last + 1], float(ok)))
        out[-1] = (p, c, y)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, default=4096)
    ap.add_argument("--per-question", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--process", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    d = Design()
    data = build_data(d)
    base, _ = start(d, 0, data, STARTS, progress=False)
    sampling = dataclasses.replace(d, group_size=a.per_question, questions_per_step=d.questions_per_step * d.group_size // a.per_question)
    pool = labelled_samples(base, data["rl"], sampling, a.labels + 1024, seed=7)
    held, train = pool[:1024], pool[1024:]
    by_len: dict[int, list[bool]] = {}
    for p, _, y in train:
        by_len.setdefault(chain_length(p), []).append(y > 0.5)
    majority = {k: np.mean(v) > 0.5 for k, v in by_len.items()}
    length_only = np.mean([majority.get(chain_length(p), False) == (y > 0.5) for p, _, y in held])
    examples = prefixes(train) if a.process else train
    print(f"{machine()}\n{len(train)} labels from {len({p for p, _, _ in train})} questions ({len(examples)} examples); held-out: 1024, "
          f"{100 * np.mean([y > 0.5 for _, _, y in held]):.1f}% correct; length-only predictor {100 * length_only:.1f}%", flush=True)
    torch.manual_seed(0)
    rm = ModelReward(reward_model_from_policy(base), char_tokenizer(), labeler=OutcomeReward(extract_answer), lr=a.lr, seed=0)
    t = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        loss = rm.fit(examples, epochs=1)
        print(f"epoch {epoch}: loss {loss:.3f}, train accuracy {100 * rm_accuracy(rm, train[:1024]):.1f}%, "
              f"held-out accuracy {100 * rm_accuracy(rm, held):.1f}% ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
