"""The engine's sampled-token path in two versions of the code, side by side in one run: one GRPO
step (``engine.backward`` on ``engine_step.py``'s batch, the chunked head, no terms over the vocabulary) timed in fresh processes
that import ``unified_rl`` from the current tree and from the tree of ``--before REV`` (``git
archive``), alternated each round so load drifts hit both alike. Each worker also writes its
gradient: the two must be bitwise equal, or the path changed what it computes.

    python benchmarks/sampled_path.py --before REV [--rounds 5] [--steps 4] [--vocab 32000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def worker(tree: str, vocab: int, steps: int, grads_out: str) -> None:
    """Time ``steps`` GRPO engine steps with ``unified_rl`` imported from ``tree``; print the seconds."""
    sys.path.insert(0, tree)
    sys.path.insert(1, HERE)
    import time

    from safetensors.torch import save_file

    import unified_rl as url
    from engine_step import setup  # engine_step.py's batch and GRPO coefficient, built with this tree's unified_rl

    assert os.path.dirname(os.path.dirname(os.path.abspath(url.__file__))) == os.path.abspath(tree), url.__file__
    model, prepared, coef = setup(vocab)
    url.engine.backward(model, prepared, coef)  # warm-up
    times = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        url.engine.backward(model, prepared, coef)
        times.append(time.perf_counter() - t0)
    save_file({n: p.grad.contiguous() for n, p in model.named_parameters()}, grads_out)
    print(json.dumps(times))


def run(tree: str, vocab: int, steps: int, grads_out: str) -> list[float]:
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run([sys.executable, __file__, "--worker", tree, "--vocab", str(vocab), "--steps", str(steps), "--grads", grads_out],
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if done.returncode:
        raise SystemExit(f"worker for {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", help="the git revision to compare with (its unified_rl/ tree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--worker"), ap.add_argument("--grads")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.vocab, args.steps, args.grads)
    if not args.before:
        ap.error("--before REV is required")
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    from safetensors.torch import load_file

    from _machine import machine

    with tempfile.TemporaryDirectory() as tmp:
        before = os.path.join(tmp, "before")
        os.makedirs(before)
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.before, "unified_rl"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
        trees = {"before": before, "after": ROOT}
        medians = {k: [] for k in trees}
        for i in range(args.rounds):
            for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
                medians[name].append(statistics.median(run(trees[name], args.vocab, args.steps, os.path.join(tmp, f"{name}.safetensors"))))
        a, b = load_file(os.path.join(tmp, "before.safetensors")), load_file(os.path.join(tmp, "after.safetensors"))
        same = a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine()}")
    from engine_step import BATCH, COMPLETION, HIDDEN, PROMPT

    print(f"GRPO engine step, Llama hidden {HIDDEN}, 2 layers, vocab {args.vocab}, {BATCH} x ({PROMPT} + {COMPLETION}) tokens, fp32; "
          f"{args.rounds} alternated rounds of {args.steps} steps (median per round)\n")
    print("| code | s/step, median of rounds | rounds (min-max) |\n|---|---:|---|")
    for name, rev in (("before", args.before), ("after", f"{head} (working tree)")):
        xs = medians[name]
        print(f"| {name}: {rev} | {statistics.median(xs):.3f} | {min(xs):.3f}-{max(xs):.3f} |")
    print(f"\nafter / before: {statistics.median(medians['after']) / statistics.median(medians['before']):.3f}; "
          f"gradients bitwise equal: {same}")


if __name__ == "__main__":
    main()
