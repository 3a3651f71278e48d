"""Per-rank memory of training state under FSDP2 and DDP: measured on a small model, computed for real ones.

    python benchmarks/distributed_memory.py          # launches torchrun itself (2 ranks, gloo on CPU)

Measured: the bytes each rank really holds after one optimizer step -- its parameters, gradients,
AdamW states and the reference model (FSDP2: the local shards; DDP: full replicas) -- counted from
the tensors, beside the formula's prediction for the same model. Computed: the formula for
Qwen2.5-0.5B/1.5B/7B-sized models at 1, 2, 4, 8 ranks (fp32 weights and AdamW, as the Trainer keeps
them; activations, the KV cache and the gathered weights during sampling come on top).
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

BYTES = {"parameters": 4, "gradients": 4, "AdamW states": 8, "reference": 4}  # per parameter, fp32
MODELS = {"0.5B (Qwen2.5-0.5B)": 494_032_768, "1.5B (Qwen2.5-1.5B)": 1_543_714_304, "7B (Qwen2.5-7B)": 7_615_616_512}


def predicted(n_params: int, ranks: int, sharded: bool) -> dict:
    """Bytes per rank of each part: FSDP2 divides every part by the ranks, DDP none."""
    return {k: b * n_params / (ranks if sharded else 1) for k, b in BYTES.items()}


def _local(t) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def worker() -> None:
    """One rank: a Qwen2-shaped model (3.08M parameters), one GRPO-like step, bytes counted."""
    import copy

    import torch
    import torch.distributed as dist

    import unified_rl as url
    from unified_rl.hf import build_qwen2, qwen2_config

    url.hf.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    for kind in ("fsdp", "ddp"):
        torch.manual_seed(0)
        model = build_qwen2(qwen2_config(vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2))
        n_params = sum(p.numel() for p in model.parameters())
        reference = copy.deepcopy(model).requires_grad_(False)
        wrapped = url.hf.fsdp(model) if kind == "fsdp" else url.hf.ddp(model)
        if kind == "fsdp":
            url.hf.shard(reference)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        ids = torch.randint(0, 512, (4, 32))
        mask = torch.ones_like(ids, dtype=torch.bool)
        completion = mask.clone()
        completion[:, :8] = False  # an 8-token prompt
        wrapped(ids, mask, completion).sum().backward()
        opt.step()
        measured = {"parameters": sum(_local(p) for p in model.parameters()),
                    "gradients": sum(_local(p.grad) for p in model.parameters() if p.grad is not None),
                    "AdamW states": sum(_local(v) for s in opt.state.values() for k, v in s.items() if k != "step"),
                    "reference": sum(_local(p) for p in reference.parameters())}
        if rank == 0:
            print(f"\n{kind.upper()}, {world} ranks, {n_params / 1e6:.2f}M parameters: bytes on rank 0")
            print(f"{'part':<14} {'measured MiB':>13} {'formula MiB':>12}")
            for part, want in predicted(n_params, world, kind == "fsdp").items():
                print(f"{part:<14} {measured[part] / 2**20:>13.2f} {want / 2**20:>12.2f}")
        del wrapped
        dist.barrier()
    dist.destroy_process_group()


def table() -> None:
    print("\nper-rank GiB (parameters + gradients + AdamW + reference, fp32) by the formula")
    ranks = (1, 2, 4, 8)
    print(f"{'model':<22} {'wrapper':<6} " + " ".join(f"{f'{n} rank(s)':>10}" for n in ranks))
    for name, n_params in MODELS.items():
        for kind in ("fsdp", "ddp"):
            cells = [sum(predicted(n_params, n, kind == "fsdp").values()) / 2**30 for n in ranks]
            print(f"{name:<22} {kind:<6} " + " ".join(f"{c:>10.1f}" for c in cells))


def main() -> None:
    if "RANK" in os.environ:
        return worker()
    print(f"machine: {machine()}")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    print(done.stdout)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    table()


if __name__ == "__main__":
    main()
