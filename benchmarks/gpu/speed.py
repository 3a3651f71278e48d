"""Speed and memory on the device: the loss head's peak memory vs full logits, the update's MFU, the
samplers side by side, and a GRPO step of this project vs TRL's GRPOTrainer (alternated, one process)."""

import gc
import importlib.util
import os
import statistics
import tempfile
import time
import warnings

import torch

import unified_rl as url
from unified_rl.config import TrainConfig
from unified_rl.loop import Trainer

from common import Sizes, parity_reward, peak_gib, prompt_rows, qwen, reset_peak, sync, timed, word_tokenizer

DATASHEET_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16


def _grpo_batch(device: str, batch: int, prompt: int, completion: int, vocab: int, group: int = 8) -> url.Rollout:
    g = torch.Generator().manual_seed(0)
    seq = prompt + completion
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    attn = torch.ones(batch, seq, dtype=torch.bool)
    comp = torch.zeros_like(attn)
    comp[:, prompt:] = True
    zeros = torch.zeros(batch, seq)
    r = url.Rollout(ids, attn, comp, group_ids=torch.arange(batch) // group, rewards=torch.randint(0, 2, (batch,), generator=g).float(),
                    old_logprobs=zeros, ref_logprobs=zeros)
    return url.methods.grpo(beta=0.04, group_size=group).coefficient.prepare(r).to(device)


def matmul_tflops(device: str) -> float:
    """Measured dense bf16 matmul rate (8192^3, mean of 10 after 3 warm-ups): the MFU's ceiling."""
    if device != "cuda":
        return float("nan")
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    t = timed(lambda: [a @ b for _ in range(10)], device)
    return 10 * 2 * 8192**3 / t / 1e12


def head_memory(device: str, s: Sizes) -> dict:
    """Peak memory of one GRPO backward at vocab 152k over ``head_tokens`` completion tokens: the
    engine's chunked head vs full logits (model(...).logits, fp32 log_softmax, gather), and a
    trunk-only pass, so the head's own share shows. bf16 weights."""
    model = qwen(s, device, torch.bfloat16)
    rows = max(2, s.head_tokens // 2048)
    r = _grpo_batch(device, rows, 1, s.head_tokens // rows - 1, s.vocab_big, group=2)
    coef = url.methods.grpo(beta=0.04, group_size=2).coefficient
    out = {}

    def engine():
        url.engine.backward(model, r, coef, url.ExecutionPlan(max_tokens=s.head_tokens + rows))

    def naive():
        logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, r.input_ids[:, 1:, None]).squeeze(-1)
        (-(logp * r.completion_mask[:, 1:]).sum() / r.num_completion_tokens).backward()

    def trunk():
        model.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).last_hidden_state.float().pow(2).mean().backward()

    for name, fn in (("trunk only", trunk), ("engine (chunked head)", engine), ("full logits", naive)):
        model.zero_grad(set_to_none=True)
        fn()  # warm-up: gradients allocated
        reset_peak(device)
        base = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else float("nan")
        t = timed(fn, device)
        out[name] = {"peak_gib": peak_gib(device) - base, "seconds": t}
    trunk_peak = out["trunk only"]["peak_gib"]
    for name in ("engine (chunked head)", "full logits"):
        out[name]["head_gib"] = out[name]["peak_gib"] - trunk_peak
    ratio = out["engine (chunked head)"]["head_gib"] / out["full logits"]["head_gib"] if device == "cuda" else float("nan")
    del model
    return {"rows": out, "head_ratio": ratio, "tokens": r.num_completion_tokens, "vocab": s.vocab_big}


def mfu(device: str, s: Sizes, profile_to: str = "") -> dict:
    """One GRPO update (engine.backward + AdamW) on the 0.5B-shaped model vs a plain transformers
    forward+backward (cross-entropy) + AdamW of the same tokens, with fp32 weights under bf16
    autocast and with bf16 weights. MFU = 6 N tokens / time / peak, N all parameters (the tied head
    is a real matmul), attention's own FLOPs not counted. ``profile_to``: write torch.profiler's
    kernel table of one update of each kind there."""
    peak = matmul_tflops(device)
    r = _grpo_batch(device, s.update_batch, s.update_prompt, s.update_completion, s.vocab_big)
    coef = url.methods.grpo(beta=0.04, group_size=8).coefficient
    tokens = r.input_ids.numel()
    rows = {}
    for weights, precision in (("fp32", "bf16"), ("bf16", "fp32")):
        model = qwen(s, device, torch.float32 if weights == "fp32" else torch.bfloat16)
        n = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
        plan = url.ExecutionPlan(max_tokens=16384, precision=precision)

        def ours():
            opt.zero_grad(set_to_none=True)
            url.engine.backward(model, r, coef, plan)
            opt.step()

        def plain():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=r.input_ids, labels=r.input_ids).loss
            loss.backward()
            opt.step()

        t = {"ours": [], "plain": []}
        ours(), plain()
        for _ in range(s.repeats):
            for name, fn in (("ours", ours), ("plain", plain)):
                t[name].append(timed(fn, device))
        if profile_to:
            _profile(profile_to, f"{weights} weights", {"engine": ours, "plain": plain}, device)
        sec = statistics.median(t["ours"])
        flops = 6 * n * tokens
        rows[f"{weights} weights" + (", bf16 autocast" if precision == "bf16" else "")] = {
            "seconds": sec, "plain_seconds": statistics.median(t["plain"]), "tokens_per_s": tokens / sec,
            "mfu_datasheet": flops / sec / (DATASHEET_BF16_TFLOPS * 1e12), "mfu_measured": flops / sec / (peak * 1e12),
            "plain_mfu_measured": flops / statistics.median(t["plain"]) / (peak * 1e12)}
        del model, opt
        gc.collect()
    return {"params_m": n / 1e6, "tokens": tokens, "measured_peak_tflops": peak, "rows": rows}


def _profile(path: str, label: str, fns: dict, device: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with open(path, "a") as f:
        for name, fn in fns.items():
            with profile(activities=acts) as prof:
                fn()
                sync(device)
            key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
            f.write(f"\n### {label}: {name}\n{prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70)}\n")


def samplers(device: str, s: Sizes) -> dict:
    """Sampled completion tokens per second: transformers' generate vs the static-cache decoder
    (vs vLLM where it is installed), same bf16 model, prompts, G and length, temperature 1."""
    from unified_rl.hf import HFSampler, StaticCacheSampler
    from unified_rl.hf.static_decoder import supports_fast_decode

    tok = word_tokenizer(s.vocab_big)
    model = qwen(s, device, torch.bfloat16).eval()
    prompts = [tok.encode(r["prompt"]) for r in prompt_rows(s.sampler_prompts, s.vocab_big)]
    chosen = {"hf (transformers generate)": HFSampler(tok.eos_token_id, tok.pad_token_id),
              "static (lean decoder)": StaticCacheSampler(tok.eos_token_id, tok.pad_token_id)}
    rows = {}
    for name, sampler in chosen.items():
        sampler.sample(model, prompts, s.sampler_group, s.sampler_new, 1.0, torch.Generator().manual_seed(0))
        rates, secs = [], []
        for k in range(s.repeats):
            sync(device)
            t0 = time.perf_counter()
            gen = sampler.sample(model, prompts, s.sampler_group, s.sampler_new, 1.0, torch.Generator().manual_seed(k + 1))
            sync(device)
            dt = time.perf_counter() - t0
            secs.append(dt)
            rates.append(sum(len(c) for c in gen.completion_ids) / dt)
        rows[name] = {"tokens_per_s": statistics.median(rates), "seconds": statistics.median(secs)}
    vllm = importlib.util.find_spec("vllm") is not None
    fast = supports_fast_decode(model)
    del model
    return {"rows": rows, "fast_decode": fast, "vllm_installed": vllm,
            "what": f"{s.sampler_prompts} prompts x G = {s.sampler_group}, {s.sampler_new} new tokens, bf16 weights"}


def _ours(path: str, rows: list, s: Sizes, device: str, seed: int, precision: str):
    from unified_rl.hf import load_model

    model = load_model(path).to(device)
    cfg = TrainConfig(steps=s.grpo_steps, questions_per_step=s.grpo_questions, lr=1e-6, max_new_tokens=s.grpo_new, seed=seed, precision=precision, checkpoint_every=0, max_tokens=16384)
    trainer = Trainer(model, word_tokenizer(s.vocab_big), url.methods.grpo(beta=0.04, epsilon=0.2, group_size=s.grpo_group), rows, cfg,
                      reward=url.rewards.FromCallable(parity_reward))
    times, tokens = [], []
    for _ in range(s.grpo_steps):
        t = time.perf_counter()
        m = trainer.train_step()
        sync(device)
        times.append(time.perf_counter() - t)
        tokens.append(m["tokens"])
    phases = {k: m[k] for k in ("time/generate", "time/reward", "time/logprobs", "time/update") if k in m}
    return times[1:], tokens[1:], phases


def _trl(path: str, rows: list, s: Sizes, device: str, seed: int, precision: str):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from unified_rl.hf import load_model

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.t, self.lengths = [], 0.0, []

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            self.times.append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(float(logs["completions/mean_length"]))

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=s.grpo_questions * s.grpo_group, num_generations=s.grpo_group,
                         max_completion_length=s.grpo_new, beta=0.04, epsilon=0.2, loss_type="grpo", scale_rewards="group",
                         learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0, temperature=1.0, top_k=0, top_p=1.0,
                         use_cpu=device == "cpu", report_to="none", logging_steps=1, save_strategy="no", max_steps=s.grpo_steps,
                         num_iterations=1, gradient_accumulation_steps=1, shuffle_dataset=False, seed=seed, disable_tqdm=True,
                         max_grad_norm=1.0, weight_decay=0.0, disable_dropout=True, bf16=precision == "bf16",
                         gradient_checkpointing=False)  # as unified_rl runs (TRL 1.16's default is on: a recompute, less memory)
        ds = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
        trainer = GRPOTrainer(model=load_model(path).to(device), reward_funcs=parity_reward, args=cfg, train_dataset=ds,
                              processing_class=word_tokenizer(s.vocab_big), callbacks=[clock])
        trainer.train()
        del trainer
    tokens = [x * s.grpo_questions * s.grpo_group for x in clock.lengths]
    return clock.times[1:], tokens[1:], {}


def grpo_vs_trl(device: str, s: Sizes) -> dict:
    """A GRPO step, this project vs TRL's GRPOTrainer, on the 0.5B-shaped random model saved once and
    loaded by both, the same prompts, G, length, beta, epsilon, lr, bf16 autocast over fp32 weights;
    runs alternate ours, TRL, ours, TRL ...; the first step of each run is warm-up."""
    warnings.filterwarnings("ignore")
    precision = "bf16" if device == "cuda" else "fp32"
    rows = prompt_rows(s.grpo_questions * s.grpo_steps + 8, s.vocab_big)
    res = {"ours": {"s": [], "tok": [], "peak": []}, "trl": {"s": [], "tok": [], "peak": []}}
    phases = {}
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "model")
        qwen(s, device).save_pretrained(path)  # the tokenizer is passed as an object: saved beside a Qwen2 config,
        # transformers 5 would load it back as a Qwen2Tokenizer whose pre-tokenizer encodes these words to nothing
        for k in range(s.grpo_rounds):
            for name, fn in (("ours", _ours), ("trl", _trl)):
                gc.collect()
                reset_peak(device)
                t, tok, ph = fn(path, rows, s, device, k, precision)
                res[name]["s"] += t
                res[name]["tok"] += tok
                res[name]["peak"].append(peak_gib(device))
                phases = ph or phases
                gc.collect()
    out = {}
    for name, r in res.items():
        sec = statistics.median(r["s"])
        out[name] = {"s_per_step": sec, "range": [min(r["s"]), max(r["s"])], "tokens_per_s": statistics.median(r["tok"]) / sec,
                     "peak_gib": max(r["peak"])}
    out["ratio"] = out["trl"]["s_per_step"] / out["ours"]["s_per_step"]
    out["phases"] = phases
    out["vllm_installed"] = importlib.util.find_spec("vllm") is not None
    out["trl_version"] = __import__("trl").__version__
    out["what"] = (f"{s.grpo_questions} questions x G = {s.grpo_group}, {s.grpo_new} new tokens, {precision}, "
                   f"{s.grpo_rounds} rounds x {s.grpo_steps - 1} timed steps per library")
    return out
