"""How accurate can Figure 6's reward model get? Held-out accuracy by epoch, beside two reference
predictors: the best one that sees only the chain's length, and the SFT start's own check.

Samples of the design's SFT start (seed 0, loaded from ``docs/results/starts``) on its 4-5-step RL
questions, labelled by the rule (answer correct); the first 1,024 are held out, and training
samples of their questions are dropped (the RL split has 12,982 questions: larger pools revisit them).

* Default: the classifier of ``figure6``, ``hf.reward_model_from_policy`` (the start's trunk, a fresh
  head, one logit per sequence), trained with ``ModelReward.fit``. ``--process`` trains it on every
  step's prefix, labelled correct while every step so far is (the whole completion keeps its label).
* ``--token-level``: a token classifier from the same trunk, labelled at *every* completion character
  by a local rule (is this character what a correct step would write here, given the steps written
  before it?); a sample's score is its lowest token score. Its accuracy is broken down by chain
  length and label, so what it catches beyond the chain's length is visible. ``--hard N`` adds N
  of the rule's worked solutions of training questions, two in three with an error of the kinds the
  start makes (``hard_example``).
* **The start's own check** predicts "correct" when every completion token is the start's greedy
  choice given the tokens before it (what the start would have written itself). Combined with the
  length rule, it is an estimate of what a classifier that only reads out the start's knowledge can
  reach. Its runs are tabled in docs/results.md.

    python benchmarks/reward_model_probe.py [--labels 4096] [--per-question 1] [--epochs 2] [--lr 1e-4] [--process | --token-level [--head-lr 1e-2] [--hard N] [--lm-pretrain N [--lm-from worked|correct]]]
"""

import argparse
import collections
import copy
import dataclasses
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

from unified_rl.apps.experiments.design import Design, build_data, chain_length, labelled_samples, start  # noqa: E402
from unified_rl.apps.experiments.figure6 import rm_accuracy  # noqa: E402
from unified_rl.apps.tasks import char_tokenizer, extract_answer, parse_problem, step_checks  # noqa: E402
from unified_rl.apps.tasks.arithmetic import _OPS, _STEP  # noqa: E402  (the task's own operations and step pattern)
from unified_rl.data.collate import to_rollout  # noqa: E402
from unified_rl.hf import reward_model_from_policy  # noqa: E402
from unified_rl.rewards import ModelReward, OutcomeReward, VerifierReward  # noqa: E402

STARTS = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "starts")


def hard_example(prompt: str, rng: random.Random) -> tuple[str, str, float]:
    """The rule's worked solution of ``prompt``, or (2 in 3) one with an error the start makes: a
    step's result off by a little (carried on), a skipped operation, or one step too few. Labelled
    by the rule."""
    pr, kind = parse_problem(prompt), rng.choice(["none", "result", "result", "result", "skip", "short"])
    ops, wrong, prev, steps = list(pr.ops), rng.randrange(len(pr.ops)), pr.start, []
    if kind == "skip":
        ops.pop(wrong)
    elif kind == "short":
        ops.pop()
    for j, (op, b) in enumerate(ops):
        value = _OPS[op](prev, b)
        if kind == "result" and j == wrong:
            value = max(0, value + rng.choice([-10, -2, -1, 1, 2, 10, rng.choice([-1, 1]) * rng.randint(3, 9)])) if value else value + rng.randint(1, 9)
        steps.append(f"{prev}{op}{b}={value};")
        prev = value
    return prompt, "".join(steps) + f"#{prev}", float(prev == pr.answer)


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


def local_char_labels(prompt: str, completion: str) -> list[bool]:
    """For every completion character: does it agree with the correct step *given the steps written
    before it* (its left operand is the last written result), and is the answer the last written
    result after as many steps as operations? An error marks the rest of its step (and the answer).
    Results are read unsigned, as the task's values stay in 0-99: a step after a negative result (which
    only follows an error) is marked wrong too."""
    pr, (body, hash_, answer) = parse_problem(prompt), completion.partition("#")
    out, prev, parts = [], pr.start, body.split(";")
    for j, part in enumerate(parts):
        final = j == len(parts) - 1
        if final and part == "":
            break
        want = (f"{prev}{pr.ops[j][0]}{pr.ops[j][1]}={_OPS[pr.ops[j][0]](prev, pr.ops[j][1])};" if j < len(pr.ops) else "#")
        ok = True
        for k, ch in enumerate(part + ("" if final else ";")):
            ok = ok and k < len(want) and want[k] == ch
            out.append(ok)
        m = _STEP.match(part)
        prev = int(m[4]) if m else prev
    if hash_:
        want = "#" + str(prev) if len([x for x in parts if x]) == len(pr.ops) else ""
        ok = True
        for k, ch in enumerate("#" + answer):
            ok = ok and k < len(want) and want[k] == ch
            out.append(ok)
        out[-1] = out[-1] and len("#" + answer) == len(want)
    return out or [False]


class TokenLevel:
    """A token classifier from the start's trunk, trained on ``local_char_labels``; score = min over tokens."""

    def __init__(self, base, lr: float, head_lr: float, steps: int):
        cfg = base.config.__class__.from_dict(base.config.to_dict())
        cfg.num_labels, cfg.use_cache = 1, False
        self.model = AutoModelForTokenClassification.from_config(cfg)
        self.model.base_model.load_state_dict(base.base_model.state_dict())
        head = [p for n, p in self.model.named_parameters() if n.startswith("score")]
        trunk = [p for n, p in self.model.named_parameters() if not n.startswith("score")]
        self.opt = torch.optim.AdamW([{"params": trunk, "lr": lr}, {"params": head, "lr": head_lr}])
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps))
        self.tok = char_tokenizer()

    def _batch(self, samples):
        prompts = [self.tok(p).input_ids for p, _, _ in samples]
        comps = [self.tok(c, add_special_tokens=False).input_ids for _, c, _ in samples]
        if any(len(ids) != len(c) for ids, (_, c, _) in zip(comps, samples)):
            raise ValueError("TokenLevel: needs a tokenizer with one token per character")
        where, labels = [], []
        for i, ((p, c, _), prompt) in enumerate(zip(samples, prompts)):
            lab = local_char_labels(p, c) if c else [False]
            where += [(i, len(prompt) + k) for k in range(len(lab))]
            labels += lab
        r = to_rollout(prompts, comps, pad_id=self.tok.pad_token_id)
        logits = self.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits[..., 0]
        w = torch.tensor(where)
        return logits[w[:, 0], w[:, 1]], w[:, 0], torch.tensor(labels, dtype=torch.float32)

    def fit(self, samples, rng: random.Random, batch: int = 64) -> float:
        self.model.train()
        order, losses = list(range(len(samples))), []
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            logits, _, labels = self._batch([samples[j] for j in order[i: i + batch]])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses))

    @torch.no_grad()
    def predict(self, samples) -> np.ndarray:
        """Per sample: is its lowest token score above 0.5?"""
        self.model.eval()
        out = []
        for i in range(0, len(samples), 256):
            logits, row, _ = self._batch(samples[i: i + 256])
            out += [bool(logits[row == k].min() > 0) for k in range(len(samples[i: i + 256]))]
        return np.array(out)


def lm_pretrained(base, pairs: list[tuple[str, str]], n: int, lr: float = 3e-4, batch: int = 64):
    """A copy of ``base`` trained further as a language model on ``n`` of the (prompt, solution)
    ``pairs`` (cycling), loss on the solution tokens, lr decaying linearly to 0: a trunk that knows
    more arithmetic than the start, for the reward model."""
    model, tok = copy.deepcopy(base), char_tokenizer()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = -(-n // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)
    model.train()
    for k in range(steps):
        rows = [pairs[(k * batch + i) % len(pairs)] for i in range(batch)]
        r = to_rollout([tok(p).input_ids for p, _ in rows], [tok(c, add_special_tokens=False).input_ids for _, c in rows], pad_id=tok.pad_token_id)
        labels = torch.where(r.completion_mask, r.input_ids, -100)  # the loss on the solution tokens only
        loss = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def own_check(base, samples) -> np.ndarray:
    """Per sample: is every completion token the start's greedy choice given the tokens before it?
    (``VerifierReward``'s acceptance: its lowest token margin is above 0.)"""
    return (VerifierReward(base, char_tokenizer(), batch_size=256).score_pairs([(p, c) for p, c, _ in samples]) > 0.5).numpy()


def first_errors(held) -> str:
    """Where the wrong samples' first error lies: in a step's result (after its '='), or elsewhere
    (an operand, a skipped operation, the count of steps, the answer)."""
    kinds = collections.Counter()
    for p, c, y in held:
        labels = local_char_labels(p, c)
        if y > 0.5 or all(labels):
            continue
        at = labels.index(False)
        before = c[:at].rsplit(";", 1)[-1]  # the step's text before its first wrong character
        kinds[chain_length(p), "a step's result" if "=" in before and "#" not in before else "elsewhere"] += 1
    return ", ".join(f"{n}-step: {kind} {k}" for (n, kind), k in sorted(kinds.items()))


def breakdown(pred: np.ndarray, held) -> str:
    """Accuracy by (chain length, rule label)."""
    groups = collections.defaultdict(list)
    for ok, (p, _, y) in zip(pred == np.array([y > 0.5 for _, _, y in held]), held):
        groups[chain_length(p), "correct" if y > 0.5 else "wrong"].append(ok)
    return ", ".join(f"{n}-step {lab} {100 * np.mean(v):.1f}% of {len(v)}" for (n, lab), v in sorted(groups.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, default=4096)
    ap.add_argument("--per-question", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2, help="0: only the reference predictors (and --lm-pretrain's trunk check)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--head-lr", type=float, default=1e-2, help="--token-level: the fresh head's lr")
    ap.add_argument("--lm-pretrain", type=int, default=0, help="--token-level: first train the trunk as a language model on this many "
                    "solutions (lm_pretrained)")
    ap.add_argument("--lm-from", choices=("worked", "correct"), default="worked",
                    help="--lm-pretrain's solutions: the rule's worked solutions of the training questions, or the training samples "
                    "the rule labels correct (no more supervision than the labels)")
    ap.add_argument("--hard", type=int, default=0, help="add this many hard examples (hard_example) of the training questions")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--process", action="store_true")
    kind.add_argument("--token-level", action="store_true")
    a = ap.parse_args()
    for name in ("labels", "per_question", "epochs", "lm_pretrain", "hard"):
        if getattr(a, name) < (1 if name in ("labels", "per_question") else 0):
            ap.error(f"--{name.replace('_', '-')} must be {'positive' if name in ('labels', 'per_question') else '0 or more'}, got {getattr(a, name)}")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    d = Design()
    data = build_data(d)
    base, _ = start(d, 0, data, STARTS)
    sampling = dataclasses.replace(d, group_size=a.per_question, questions_per_step=d.questions_per_step * d.group_size // a.per_question)
    pool = labelled_samples(base, data["rl"], sampling, a.labels + 1024, seed=7)
    held = pool[:1024]
    seen = {p for p, _, _ in held}
    train = [s for s in pool[1024:] if s[0] not in seen]  # the RL split has ~13k questions: larger pools revisit them
    truth = np.array([y > 0.5 for _, _, y in held])
    by_len: dict[int, list[bool]] = {}
    for p, _, y in train:
        by_len.setdefault(chain_length(p), []).append(y > 0.5)
    majority = {k: np.mean(v) > 0.5 for k, v in by_len.items()}
    length_rule = np.array([majority.get(chain_length(p), False) for p, _, _ in held])
    own = own_check(base, held)
    if a.hard:  # after the reference predictors, which see the start's samples only
        rng, questions = random.Random(1), sorted({p for p, _, _ in train})
        train = train + [hard_example(rng.choice(questions), rng) for _ in range(a.hard)]
        random.Random(2).shuffle(train)
    print(f"{machine()}\n{len(train)} labels ({a.hard} hard examples) from {len({p for p, _, _ in train})} questions; held-out: 1024, {100 * truth.mean():.1f}% correct\n"
          f"length-only predictor {100 * np.mean(length_rule == truth):.1f}%; the start's own check {100 * np.mean(own == truth):.1f}%; "
          f"both (correct when the length's majority is and the start would have written it) {100 * np.mean((length_rule & own) == truth):.1f}%\n"
          f"  both, by length and label: {breakdown(length_rule & own, held)}\n"
          f"  held-out wrong samples, where the first error is: {first_errors(held)}", flush=True)
    torch.manual_seed(0)
    t = time.perf_counter()
    if a.token_level:
        trunk = base
        if a.lm_pretrain:
            pairs = ([(p, parse_problem(p).solution) for p in sorted({p for p, _, _ in train})] if a.lm_from == "worked"
                     else [(p, c) for p, c, y in train if y > 0.5])
            trunk = lm_pretrained(base, pairs, a.lm_pretrain)
            mine = own_check(trunk, held)
            print(f"trunk trained on {a.lm_pretrain} of {len(pairs)} {a.lm_from} solutions ({time.perf_counter() - t:.0f} s): its own check {100 * np.mean(mine == truth):.1f}%, "
                  f"with the length rule {100 * np.mean((length_rule & mine) == truth):.1f}%; {breakdown(length_rule & mine, held)}", flush=True)
        if not a.epochs:
            return
        rm, rng = TokenLevel(trunk, a.lr, a.head_lr, a.epochs * -(-len(train) // 64)), random.Random(0)
        for epoch in range(1, a.epochs + 1):
            loss = rm.fit(train, rng)
            pred = rm.predict(held)
            print(f"epoch {epoch}: loss {loss:.3f}, train accuracy {100 * np.mean(rm.predict(train[:1024]) == np.array([y > 0.5 for *_, y in train[:1024]])):.1f}%, "
                  f"held-out accuracy {100 * np.mean(pred == truth):.1f}% ({time.perf_counter() - t:.0f} s)\n  by length and label: {breakdown(pred, held)}", flush=True)
        return
    examples = prefixes(train) if a.process else train
    rm = ModelReward(reward_model_from_policy(base), char_tokenizer(), labeler=OutcomeReward(extract_answer), lr=a.lr, seed=0)
    for epoch in range(1, a.epochs + 1):
        loss = rm.fit(examples, epochs=1)
        print(f"epoch {epoch}: loss {loss:.3f}, train accuracy {100 * rm_accuracy(rm, train[:1024]):.1f}%, "
              f"held-out accuracy {100 * rm_accuracy(rm, held):.1f}% ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
