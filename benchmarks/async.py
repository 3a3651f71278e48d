"""Asynchronous rollouts, side by side in one run: GRPO on the demo's task from the demo's shipped
SFT start, synchronous (sample, then train, both on every core) against a rollout worker K = 1 and
K = 2 versions ahead (one core to the worker, one to the learner). Reported: updates per second, the
seconds of a step each side spends waiting for the other, the behaviour ratio's spread, and the
validation accuracy against training wall-clock (weights snapshotted during the run, evaluated after
it, so evaluation costs no arm any time).

    python benchmarks/async.py                         # demo task, CPU, 60 steps per arm
    python benchmarks/async.py --steps 20 --every 10   # quicker
    python benchmarks/async.py --size gpu              # a Qwen2.5-0.5B-width random model, G = 16, 256 new tokens, CUDA

On a GPU the worker and the learner share the device; the speed-up comes from the learner's update
running while the worker generates (generation is most of a step there). With ``--size gpu`` the
weights are random: only the speed columns mean anything.
"""

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402


def setup(size: str):
    """(policy, rows, validation rows, settings) for ``size``: ``cpu`` (the demo's) or ``gpu``."""
    from unified_rl.apps.demo import DemoSettings, sft_start
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.hf import tiny_llama

    s = DemoSettings(flawed_teacher=False)
    model, _, data, shipped = sft_start(s, "runs/bench-async")
    if size == "cpu":
        return model, data["rl"], data["validation"][:256], dict(questions_per_step=s.questions_per_step, group_size=s.group_size,
                                                                 max_new_tokens=s.design().max_new_tokens, lr=s.lr, beta=s.beta)
    big = tiny_llama(len(char_tokenizer()), hidden=896, layers=24, heads=14, intermediate=4864, seed=0, max_positions=1024).cuda()
    return big, data["rl"], data["validation"][:64], dict(questions_per_step=16, group_size=16, max_new_tokens=256, lr=1e-6, beta=0.04)


def run_arm(k, base, rows, settings: dict, steps: int, every: int, threads: int, worker_threads: int, correction: str = "auto"):
    """Train one arm; returns its per-step metrics, training seconds (after the first step, which
    starts the worker and warms up), and snapshots (seconds, step, weights)."""
    import unified_rl as url
    from unified_rl.apps.tasks import char_tokenizer, task_reward
    from unified_rl.asynchronous import AsyncProducer

    torch.set_num_threads(threads)
    tok = char_tokenizer()
    method = url.methods.grpo(group_size=settings["group_size"], beta=settings["beta"])
    cfg = url.config.TrainConfig(steps=steps, questions_per_step=settings["questions_per_step"], lr=settings["lr"], seed=0,
                                 max_new_tokens=settings["max_new_tokens"], checkpoint_every=0, async_staleness=k,
                                 sampler_correction=correction)

    def producer(t):  # the worker on its own core(s)
        return AsyncProducer(t.source, t.policy, t.needs, t.plan, t.local_questions, staleness=k, threads=worker_threads,
                             precision=cfg.model.precision, full_weights=t.full_weights)

    trainer = url.loop.Trainer(copy.deepcopy(base), tok, method, rows, cfg, reward=task_reward(method, tok),
                               producer=producer if k is not None else None)
    snaps, seconds = [(0.0, 0, copy.deepcopy(base.state_dict()))], 0.0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        trainer.train_step()
        seconds += (time.perf_counter() - t0) if step > 1 else 0.0
        if step % every == 0:
            snaps.append((seconds, step, {n: v.detach().clone() for n, v in trainer.policy.state_dict().items()}))
    getattr(trainer.producer, "close", lambda: None)()
    return trainer.history, seconds, snaps


def accuracy(base, state, rows) -> float:
    from unified_rl.apps.experiments.design import Design, correct

    model = copy.deepcopy(base)
    model.load_state_dict(state)
    return float(correct(model, rows, Design()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=20, help="snapshot the weights for the validation curve every N steps")
    p.add_argument("--size", choices=["cpu", "gpu"], default="cpu")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    base, rows, validation, settings = setup(args.size)
    half, rest = max(1, cores // 2), max(1, cores - cores // 2)
    arms = [("synchronous", None, cores, 0, "auto"), (f"synchronous, {half} thread(s)", None, half, 0, "auto"),
            ("K = 1, decoupled PPO", 1, half, rest, "auto"), ("K = 2, decoupled PPO", 2, half, rest, "auto"),
            ("K = 1, no correction (TRL's)", 1, half, rest, "none")]
    print(f"# {machine()}\n# GRPO, {settings}, {args.steps} steps per arm, validation on {len(validation)} problems\n")
    results = []
    for name, k, threads, worker, correction in arms:
        history, seconds, snaps = run_arm(k, base, rows, settings, args.steps, args.every, threads, worker, correction)
        curve = [(t, s, accuracy(base, st, validation)) if args.size == "cpu" else (t, s, float("nan")) for t, s, st in snaps]
        results.append((name, threads, worker, history, seconds, curve))
    timed = args.steps - 1  # the first step of each arm starts the worker and warms up: not timed
    sync_rate = timed / results[0][4]
    print("| arm | learner / worker threads | updates/s | vs synchronous | learner idle s/step | worker idle s/step | weight sync ms/step "
          "| staleness mean | behaviour ratio min-max | ESS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, threads, worker, h, seconds, _ in results:
        med = lambda key: statistics.median(m[key] for m in h) if key in h[0] else float("nan")  # noqa: E731
        lo = min((m["async/ratio_min"] for m in h if "async/ratio_min" in m), default=float("nan"))
        hi = max((m["async/ratio_max"] for m in h if "async/ratio_max" in m), default=float("nan"))
        print(f"| {name} | {threads} / {worker or '-'} | {timed / seconds:.2f} | {timed / seconds / sync_rate:.2f}x "
              f"| {med('time/learner_idle'):.3f} | {med('time/worker_idle'):.3f} | {1000 * med('time/weight_sync'):.1f} "
              f"| {statistics.mean(m.get('async/staleness', 0.0) for m in h):.2f} | {lo:.3f}-{hi:.3f} | {med('async/ess'):.4f} |")
    print("\nvalidation accuracy (greedy) against training seconds (from the end of step 1):\n")
    print("| arm | " + " | ".join(f"step {s}" for _, s, _ in results[0][5]) + " |")
    print("|---|" + "---|" * len(results[0][5]))
    for name, _, _, _, _, curve in results:
        print(f"| {name} | " + " | ".join(f"{100 * a:.1f}% at {t:.0f} s" for t, _, a in curve) + " |")
    gen = statistics.median(m["time/generate"] for m in results[0][3])
    step = results[0][4] / timed
    print(f"\nsynchronous step: {step:.3f} s, of which generation {gen:.3f} s ({100 * gen / step:.0f}%). With generation a share g of a "
          f"step and both sides as fast as in the synchronous loop, overlap bounds the speed-up by 1 / max(g, 1 - g): "
          f"{1 / max(gen / step, 1 - gen / step):.2f}x here.")


if __name__ == "__main__":
    main()
