"""Peak memory of one distillation backward (generalized JSD to a teacher, beta 0.5) at a large
vocabulary: this project's engine (the head chunk by chunk, C formed per chunk), a naive
implementation (the full logits of student and teacher, log-softmax, the JSD, autograd), and TRL's
``GKDTrainer.generalized_jsd_loss`` on the same full logits (how TRL's GKD trainer calls it). The
gradients of the three are compared too (relative difference to TRL's).

Each variant runs in a fresh process on the same batch: Qwen2-shaped student and teacher built from
a config (nothing is downloaded). Reported: the peak memory growth over the models and the batch
(CUDA's allocator peak on a GPU, the kernel's peak RSS on CPU), and the seconds of the backward.

    python benchmarks/vocabulary_memory.py [--vocab 32000 152000] [--rows 4] [--completion 256] [--hidden 256] [--device cpu|cuda]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

VARIANTS = ("unified_rl engine (chunked)", "naive full logits", "TRL GKD loss (full logits)")


def _batch(vocab: int, rows: int, completion: int, device: str):
    import unified_rl as url
    from unified_rl.data.collate import to_rollout

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (32,), generator=g).tolist() for _ in range(rows)]
    completions = [torch.randint(3, vocab, (completion,), generator=g).tolist() for _ in range(rows)]
    r = to_rollout(prompts, completions, pad_id=0, device=torch.device(device))
    coef = url.coefficients.chain(None, aggregation=url.coefficients.token_mean(), vocabulary=(url.coefficients.jsd(0.5),))
    return r, coef


def one(variant: str, vocab: int, rows: int, completion: int, hidden: int, device: str) -> dict:
    import unified_rl as url
    from unified_rl.apps.peak_memory import peak, reset_peak
    from unified_rl.hf import build_qwen2, qwen2_config

    def model(seed: int):
        torch.manual_seed(seed)
        cfg = qwen2_config(vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, tie_word_embeddings=False)
        return build_qwen2(cfg).to(device)

    student, teacher = model(0), model(1).requires_grad_(False).eval()
    with torch.no_grad():  # a peaked teacher: random initialisations are all near-uniform, and the JSD of two of them
        teacher.lm_head.weight.mul_(30.0)  # cancels to fp32 rounding (gradients would then agree only to a few percent)
    r, coef = _batch(vocab, rows, completion, device)
    r = coef.prepare(r)
    base = reset_peak(device)
    t0 = time.perf_counter()
    if variant == VARIANTS[0]:
        url.engine.backward(student, r, coef, models={"teacher": teacher})
    else:
        from trl.experimental.gkd.gkd_trainer import GKDTrainer

        kw = dict(input_ids=r.input_ids, attention_mask=r.attention_mask.long())
        logits = student(**kw).logits[:, :-1]
        with torch.no_grad():
            t_logits = teacher(**kw).logits[:, :-1]
        labels = torch.where(r.completion_mask, r.input_ids, -100)[:, 1:]
        if variant == VARIANTS[1]:
            mask = labels != -100
            logp, logt = torch.log_softmax(logits[mask], -1), torch.log_softmax(t_logits[mask], -1)
            m = torch.logaddexp(logp + torch.log(torch.tensor(0.5)), logt + torch.log(torch.tensor(0.5)))
            jsd = 0.5 * (logt.exp() * (logt - m)).sum(-1) + 0.5 * (logp.exp() * (logp - m)).sum(-1)
            loss = jsd.mean()
        else:
            loss = GKDTrainer.generalized_jsd_loss(logits, t_logits, labels=labels, beta=0.5)
        loss.backward()
    seconds = time.perf_counter() - t0
    grad = torch.cat([p.grad.reshape(-1) for p in student.parameters() if p.grad is not None]).double().cpu()
    return {"variant": variant, "vocab": vocab, "peak_growth_MiB": (peak(device) - base) / 2**20, "seconds": seconds,
            "grad": grad[:: max(1, grad.numel() // 200_000)].tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[32000, 152000])
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--completion", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        out = one(a.one, a.vocab[0], a.rows, a.completion, a.hidden, a.device)
        print(json.dumps(out))
        return
    print(f"machine: {machine()}")
    print(f"models: Qwen2-shaped student and teacher, hidden {a.hidden}, 2 layers; {a.rows} rows x (32 prompt + {a.completion} "
          f"completion) tokens; generalized JSD beta 0.5, token mean, fp32, {a.device}\n")
    print("| vocabulary | variant | peak memory growth (MiB) | vs engine | backward (s) | gradient vs TRL (relative) |")
    print("|---:|---|---:|---:|---:|---:|")
    for vocab in a.vocab:
        rows = []
        for name in VARIANTS:
            argv = [sys.executable, __file__, "--one", name, "--vocab", str(vocab), "--rows", str(a.rows), "--completion", str(a.completion),
                    "--hidden", str(a.hidden), "--device", a.device]
            out = subprocess.run(argv, check=True, capture_output=True, text=True, env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"}).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        trl = torch.tensor(rows[2]["grad"], dtype=torch.float64)
        for r in rows:
            diff = float((torch.tensor(r["grad"], dtype=torch.float64) - trl).norm() / trl.norm())
            print(f"| {vocab} | {r['variant']} | {r['peak_growth_MiB']:.0f} | {r['peak_growth_MiB'] / rows[0]['peak_growth_MiB']:.1f}x | "
                  f"{r['seconds']:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
