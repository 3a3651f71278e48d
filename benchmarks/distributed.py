"""torchrun scaling, side by side in one run: the same GRPO job on 1 rank and on N ranks.

    python benchmarks/distributed.py                # throughput: tokens/s per rank, scaling efficiency
    python benchmarks/distributed.py --curve        # + the earlier demo's GRPO phase on 1 and N ranks: accuracy curves

Every run is the README's command, ``unified-rl train`` in one process and
``torchrun --standalone --nproc_per_node=N -m unified_rl.apps.cli train`` with the same global batch
(``questions_per_step``), from the benchmarks' shipped SFT start (apps.demo.BENCHMARK_START). Scaling efficiency = (N-rank tokens/s)
/ (N x 1-rank tokens/s): 1.0 means N ranks do N times the work per second. On CPUs each rank gets
``--threads`` threads (default 1: a rank is a core, so N ranks use N cores); on GPUs each rank
takes one GPU and the collectives run on NCCL -- the script is unchanged.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402


def write_start(folder: str) -> str:
    """The benchmarks' shipped SFT start as a transformers folder (what ``--model`` reads)."""
    from safetensors.torch import load_file

    from unified_rl.apps.demo import BENCHMARK_START as START
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.hf import save_model, tiny_llama

    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=0)
    model.load_state_dict(load_file(START), strict=True)
    return save_model(model, tok, folder)


def train(nproc: int, start: str, out: str, args, extra: list) -> tuple[list, float]:
    """One ``unified-rl train`` run (torchrun when nproc > 1); its metrics lines and wall seconds."""
    flags = ["train", "--method", "grpo", "--model", start, "--out", out, "--no-progress", "--questions-per-step", str(args.questions),
             "--group-size", str(args.group_size), "--max-new-tokens", "40", *extra]
    cli = ["-m", "unified_rl.apps.cli", *flags]
    cmd = [sys.executable, *cli] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cli]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else dict(os.environ)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f], time.perf_counter() - t0


def throughput(lines: list, skip: int) -> float:
    """Mean per-rank tokens/s over the steps after ``skip`` warm-up steps (metrics are rank means)."""
    steps = [m for m in lines if "tokens_per_s" in m][skip:]
    return sum(m["tokens_per_s"] for m in steps) / len(steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nproc", type=int, default=2, help="ranks to compare with 1 (default 2)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--questions", type=int, default=16, help="global questions per step")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank (0: leave torch's choice)")
    p.add_argument("--curve", action="store_true", help="also the earlier demo's GRPO phase (100 steps) on 1 and N ranks: held-out accuracy")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = p.parse_args()
    root = args.out or tempfile.mkdtemp(prefix="url-dist-")
    start = write_start(os.path.join(root, "start"))
    print(f"machine: {machine()}; {args.threads or 'default'} thread(s) per rank")
    print(f"GRPO, {args.questions} questions x {args.group_size} samples per step (global), {args.steps} steps, first 2 not timed\n")
    rows = {}
    for n in (1, args.nproc):
        lines, wall = train(n, start, os.path.join(root, f"speed-{n}"), args, ["--steps", str(args.steps), "--eval-every", "0"])
        rows[n] = throughput(lines, 2), wall
    print(f"{'ranks':>5} {'tokens/s per rank':>18} {'tokens/s total':>15} {'efficiency':>11} {'wall s':>7}")
    for n, (per_rank, wall) in rows.items():
        eff = per_rank / rows[1][0]
        print(f"{n:>5} {per_rank:>18.0f} {per_rank * n:>15.0f} {eff:>11.2f} {wall:>7.1f}")
    if not args.curve:
        return
    print("\nthe earlier demo's GRPO phase (100 steps, lr 3e-5, eval on 256 held-out problems every 25 steps)")
    curves = {}
    for n in (1, args.nproc):
        lines, wall = train(n, start, os.path.join(root, f"curve-{n}"), args, CURVE_FLAGS)
        curves[f"{n} rank(s)"] = curve_of(lines)
        print(f"  {n} rank(s): {wall:.0f} s")
    print_curves(curves)
    plot_curves(curves, os.path.join(root, "curve.png"), "the same GRPO run on 1 and N ranks")
    print(f"\nruns and curve.png in {root}")


# The earlier demo's GRPO phase, as benchmarks compare it (with their own --questions-per-step, --group-size)
CURVE_FLAGS = ["--steps", "100", "--lr", "3e-5", "--warmup-steps", "10", "--eval-every", "25", "--eval-size", "256"]


def curve_of(lines: list) -> dict:
    """Held-out accuracy by step of a run's metrics, step 0 being the shipped start's (the same 256 problems)."""
    from unified_rl.apps.demo import BENCHMARK_START as START

    with open(START.replace(".safetensors", ".json")) as f:
        start_accuracy = json.load(f)["accuracy"]
    return {0: start_accuracy, **{m["step"]: m["eval/accuracy"] for m in lines if "eval/accuracy" in m}}


def print_curves(curves: dict) -> None:
    """Two accuracy curves side by side, the second's difference from the first, and the noise to read it by."""
    (a_name, a), (b_name, b) = curves.items()
    se = (0.5 * 0.5 / 256) ** 0.5 * 100
    print(f"{'step':>5} {a_name:>10} {b_name:>10} {'diff':>6}   (one binomial s.e. at n=256 is at most {se:.1f} points; "
          f"of a difference {se * 2 ** 0.5:.1f})")
    for step in sorted(a):
        y = b.get(step)
        print(f"{step:>5} {a[step]:>10.1%} {y:>10.1%} {100 * (y - a[step]):>+6.1f}" if y is not None else f"{step:>5} {a[step]:>10.1%}")


def plot_curves(curves: dict, path: str, title: str) -> None:
    """Held-out accuracy over GRPO steps, one line per curve (labelled by its key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(sorted(c), [100 * c[s] for s in sorted(c)], marker="o", label=name)
    ax.set(xlabel="GRPO step", ylabel="held-out greedy accuracy (%)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
