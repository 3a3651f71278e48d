"""GRPO steps per second: unified_rl vs TRL's GRPOTrainer, side by side.

The same tiny model (saved once as safetensors, loaded by both), the same prompts in the same
order, G, maximum completion length, sampling (temperature 1, no top-k/top-p), beta, epsilon,
learning rate, one update per batch, the paper's per-sequence aggregation
(TRL ``loss_type="grpo"``) and activation checkpointing, off in both by default (TRL 1.16's
``GRPOConfig`` turns it on unless told; ``--gradient-checkpointing`` turns it on in both).
Runs alternate A B A B ... in one process; the first step of every run is warm-up and not
counted. Also prints unified_rl's per-phase breakdown, its update phase against one plain
forward+backward of the same model on the same tokens, and the matmul floor: the time a step's
matrix multiplies alone would take at this machine's GEMM rate.

    pip install -e ".[bench]"
    python benchmarks/grpo_vs_trl.py [--width 128] [--rounds 3] [--steps 6]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

import unified_rl as url  # noqa: E402
from unified_rl.config import TrainConfig  # noqa: E402
from unified_rl.loop import Trainer  # noqa: E402
from unified_rl.precision import autocast  # noqa: E402
from unified_rl.rewards import normalize_number  # noqa: E402
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer, extract_answer  # noqa: E402
from unified_rl.hf import load_model, load_tokenizer, tiny_llama  # noqa: E402


def correct(prompts, completions, answer, **_):
    return [float(extract_answer(c) == normalize_number(a)) for c, a in zip(completions, answer)]


def run_ours(path, rows, a, seed):
    model, tok = load_model(path), load_tokenizer(path)
    cfg = TrainConfig(steps=a.steps, questions_per_step=a.questions, lr=a.lr, max_new_tokens=a.max_new_tokens, seed=seed, precision=a.precision,
                      gradient_checkpointing=a.gradient_checkpointing)
    trainer = Trainer(model, tok, url.methods.grpo(beta=a.beta, epsilon=0.2, group_size=a.group), rows, cfg,
                      reward=url.rewards.FromCallable(correct))
    trainer.source.cursor.shuffle = False  # same prompt order as TRL's unshuffled dataset
    times, metrics = [], []
    for _ in range(a.steps):
        t = time.perf_counter()
        metrics.append(trainer.train_step())
        times.append(time.perf_counter() - t)
    return times[1:], metrics[1:], trainer


def run_trl(path, rows, a, seed):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.t, self.mean_length = [], 0.0, float("nan")

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):  # the end-of-run log: mean over the run's steps
            self.mean_length = float((logs or {}).get("completions/mean_length", self.mean_length))

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=a.questions * a.group, num_generations=a.group,
                         max_completion_length=a.max_new_tokens, beta=a.beta, epsilon=0.2, loss_type="grpo", scale_rewards="group",
                         learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, temperature=1.0, top_k=0, top_p=1.0,
                         use_cpu=True, report_to="none", logging_steps=10_000, save_strategy="no", max_steps=a.steps,
                         num_iterations=1, gradient_accumulation_steps=1, shuffle_dataset=False, seed=seed, disable_tqdm=True,
                         max_grad_norm=1.0, weight_decay=0.0, disable_dropout=True, bf16=a.precision == "bf16",
                         gradient_checkpointing=a.gradient_checkpointing)
        ds = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
        trainer = GRPOTrainer(model=load_model(path), reward_funcs=correct, args=cfg, train_dataset=ds,
                              processing_class=load_tokenizer(path), callbacks=[clock])
        trainer.train()
    return clock.times[1:], clock.mean_length


def update_vs_plain(trainer):
    """Seconds of the update phase (engine backward + optimizer) vs a plain HF forward+backward
    (cross-entropy on every token) of the same model on the same tokens; medians of 5."""
    r = trainer.source.sample(trainer.policy, trainer.cfg.optim.questions_per_step)
    r = trainer.reward(r, r.texts)
    r = trainer.coefficient.prepare(r.replace(ref_logprobs=trainer.reference.logprobs(r, trainer.plan)))
    model, opt = trainer.policy, trainer.optimizer

    def ours():
        opt.zero_grad(set_to_none=True)
        url.engine.backward(model, r, trainer.coefficient, trainer.plan)
        opt.step()

    def plain():
        opt.zero_grad(set_to_none=True)
        with autocast(model, trainer.cfg.model.precision, backward=True):
            loss = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long(), labels=r.input_ids).loss
        loss.backward()
        opt.step()

    t = {"ours": [], "plain": []}
    for f in (ours, plain):
        f()
    for _ in range(5):
        for name, f in (("ours", ours), ("plain", plain)):
            s = time.perf_counter()
            f()
            t[name].append(time.perf_counter() - s)
    return statistics.median(t["ours"]), statistics.median(t["plain"]), r.input_ids.numel()


class _Flops(TorchDispatchMode):
    """Sums the FLOPs of every op in torch's FLOP registry (``torch.utils.flop_counter``, the
    counts ``FlopCounterMode`` reports) without its module tracker, whose hooks fail under
    activation checkpointing's recomputation."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        count = flop_registry.get(func._overloadpacket)
        if count is None:  # a composite op (aten.linear in inference mode): count what it decomposes into
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def matmul_floor(trainer, width, dtype):
    """Matrix-multiply FLOPs per completion token of one more step (mm, addmm, bmm, forward and
    backward, recomputation included; the CPU attention kernel is not in torch's FLOP registry,
    about 2% of a step's FLOPs here), and this machine's GEMM rate on the largest shape a step
    multiplies, (2048 x width) @ (width x 3 width) in ``dtype`` (bf16 where the step autocasts),
    median of 20. FLOPs over rate is the time the matmuls alone would take at that rate: no step
    can be faster on this machine."""
    with _Flops() as counter:
        tokens = trainer.train_step()["tokens"]
    x, w = torch.randn(2048, width, dtype=dtype), torch.randn(width, 3 * width, dtype=dtype)
    times = []
    for _ in range(25):
        s = time.perf_counter()
        x @ w
        times.append(time.perf_counter() - s)
    return counter.total / tokens, 2 * 2048 * width * 3 * width / statistics.median(times[5:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="steps per run (the first is warm-up)")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="both libraries at this precision (bf16: autocast, TRL's default; fp32: TRL with bf16=False)")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="activation checkpointing in both (TRL 1.16's default; off here unless given)")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows = ArithmeticTask().train_rows(a.questions * a.steps * a.rounds + 64)
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "model")
        tok = char_tokenizer()
        model = tiny_llama(len(tok), hidden=a.width, heads=max(4, a.width // 32), intermediate=3 * a.width)
        model.save_pretrained(path)
        tok.save_pretrained(path)
        n_params = sum(p.numel() for p in model.parameters())
        ours, trl, phases, tokens, trl_lengths, round_ratios = [], [], [], [], [], []
        for k in range(a.rounds):
            t, m, trainer = run_ours(path, rows, a, seed=k)
            ours += t
            phases += m
            tokens += [x["tokens"] for x in m]
            t2, length = run_trl(path, rows, a, seed=k)
            trl += t2
            trl_lengths.append(length)
            round_ratios.append(statistics.median(t2) / statistics.median(t))
        flops_per_token, rate = matmul_floor(trainer, a.width, torch.bfloat16 if a.precision == "bf16" else torch.float32)
        upd, plain, n_tok = update_vs_plain(trainer)
    mo, mt = statistics.median(ours), statistics.median(trl)
    print(f"machine: {machine()}")
    print(f"model: Llama {n_params / 1e6:.2f}M parameters (width {a.width}); {a.questions} questions x G={a.group}, "
          f"max {a.max_new_tokens} new tokens, beta={a.beta}, lr={a.lr}, mu=1, {a.precision} in both, activation checkpointing "
          f"{'on' if a.gradient_checkpointing else 'off'} in both; {a.rounds} rounds x {a.steps - 1} timed steps each\n")
    print("| library | median s/step (range) | steps/s | ratio (TRL time / ours) |")
    print("|---|---|---|---|")
    print(f"| unified_rl | {mo:.3f} ({min(ours):.3f}-{max(ours):.3f}) | {1 / mo:.2f} | {mt / mo:.2f}x "
          f"(rounds {min(round_ratios):.2f}-{max(round_ratios):.2f}x) |")
    print(f"| TRL {__import__('trl').__version__} GRPOTrainer | {mt:.3f} ({min(trl):.3f}-{max(trl):.3f}) | {1 / mt:.2f} | 1.00x |")
    med_tok = statistics.median(tokens)
    trl_tok = statistics.mean(trl_lengths) * a.questions * a.group
    print(f"\nunified_rl: {med_tok / mo:.0f} completion tokens/s (median {med_tok:.0f} completion tokens per step)")
    print(f"TRL: {trl_tok / mt:.0f} completion tokens/s (mean {trl_tok:.0f} completion tokens per step, from its logged mean length)")
    print("\nunified_rl step breakdown (median seconds):")
    print("| generate | reward | reference / old log-probs | update (engine + AdamW) |")
    print("|---|---|---|---|")
    print("| " + " | ".join(f"{statistics.median(m[k] for m in phases):.3f}" for k in ("time/generate", "time/reward", "time/logprobs", "time/update")) + " |")
    print(f"\nupdate phase vs plain forward+backward (+AdamW) on the same {n_tok} padded tokens: "
          f"{upd:.3f} s vs {plain:.3f} s = {upd / plain:.2f}x")
    flops = flops_per_token * med_tok
    floor = flops / rate
    print(f"\nmatmul floor: {flops / 1e9:.1f} GFLOP of matrix multiplies in a median unified_rl step ({flops_per_token / 1e6:.0f} MFLOP "
          f"per completion token) at this machine's {a.precision} GEMM rate of "
          f"{rate / 1e9:.0f} GFLOP/s = {floor:.3f} s; the step takes {mo / floor:.2f}x that, and the ratio to TRL could be "
          f"at most {mt / floor:.2f}x if nothing but the matmuls took time")


if __name__ == "__main__":
    main()
