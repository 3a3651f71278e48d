"""FSDP2: how to give the sampler whole weights each step, measured side by side on the same ranks.

    python benchmarks/fsdp_gather.py [--hidden 512 --layers 8]     # launches torchrun itself (2 ranks)

A. ``unified_rl.hf.gathered``: ``unshard()`` every FSDP module in place (one all-gather per layer),
   sample on the model itself, ``reshard()`` -- what the Trainer does.
B. A full state dict (``get_model_state_dict(full_state_dict=True)``, all-gathered to every rank),
   loaded into a plain replica that samples -- a second copy of the weights, as engines that sample
   from a separate model do.
C. Per-forward gathering (FSDP2's own hooks, ``reshard_after_forward=True``) is not measured: every
   decode step would all-gather every layer, and ranks whose samples stop at different lengths run
   different numbers of forwards, so their all-gathers would not pair up (a deadlock).

Printed: milliseconds per step of each way to get whole weights, beside one step's sampling
(16 prompts x 8 samples x 40 tokens) on them.
"""

import argparse
import copy
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402


def worker(hidden: int, layers: int, repeats: int) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    import unified_rl as url
    from unified_rl.hf import build_qwen2, qwen2_config

    url.hf.init_process_group()
    rank = dist.get_rank()
    torch.manual_seed(0)
    cfg = qwen2_config(vocab_size=512, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                       num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 256))
    model = build_qwen2(cfg).eval()
    replica = copy.deepcopy(model)
    root = url.hf.fsdp(model)
    n_params = sum(p.numel() for p in replica.parameters())
    sampler = url.hf.StaticCacheSampler(eos_id=None, pad_id=0)
    prompts = [torch.randint(1, 512, (12,)).tolist() for _ in range(16)]
    options = StateDictOptions(full_state_dict=True, cpu_offload=False)

    def timed(fn) -> float:
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        dist.barrier()
        return 1000 * (time.perf_counter() - t0) / repeats

    def gather_a():
        with url.hf.gathered(root):
            pass

    def gather_b():
        replica.load_state_dict(get_model_state_dict(model, options=options))

    def sample(m):
        with torch.no_grad():
            sampler.sample(m, prompts, group_size=8, max_new_tokens=40, temperature=1.0, generator=torch.Generator().manual_seed(rank))

    def sample_a():
        with url.hf.gathered(root):
            sample(model)

    a, b = timed(gather_a), timed(gather_b)
    s_a = timed(sample_a)
    s_b = timed(lambda: sample(replica))
    if rank == 0:
        print(f"Qwen2 shape, {n_params / 1e6:.1f}M parameters ({layers} layers, width {hidden}), 2 ranks, {repeats} repeats")
        print(f"{'way':<40} {'whole weights, ms':>18} {'+ sampling, ms':>15}")
        print(f"{'A. gathered (unshard in place)':<40} {a:>18.1f} {s_a:>15.1f}")
        print(f"{'B. full state dict into a replica':<40} {b:>18.1f} {s_b + b:>15.1f}")
        print(f"B / A for the weights: {b / a:.2f}x; B also holds a second full copy of the weights")
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if "RANK" in os.environ:
        return worker(args.hidden, args.layers, args.repeats)
    print(f"machine: {machine()}; 1 thread per rank")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, *sys.argv[1:]],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    print(done.stdout)
    if done.returncode:
        sys.exit(done.stderr[-3000:])


if __name__ == "__main__":
    main()
