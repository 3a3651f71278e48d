"""check.json -> check.md: the GPU check's results as Markdown tables."""


def _f(x, spec=".3g") -> str:
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def _error(r: dict) -> list[str]:
    return [f"**failed** ({r['seconds']} s): `{r['error']}`", ""] if "error" in r else []


def _methods(r):
    tol = r["tolerance"]
    out = [f"Batch: {r['batch']}. Relative L2 error of the whole parameter gradient vs CPU fp64 "
           f"(pass: {', '.join(f'{k} <= {v:g}' for k, v in tol.items())}).", "",
           "| method | " + " | ".join(tol) + " | pass |", "|---|" + "---|" * (len(tol) + 1)]
    out += [f"| {row['method']} | " + " | ".join(_f(row[k], ".2e") for k in tol) + f" | {'yes' if row['pass'] else '**no**'} |"
            for row in r["rows"]]
    return out


def _head(r):
    out = [f"One GRPO backward over {r['tokens']} completion tokens, vocab {r['vocab']}, bf16 weights; peak memory above the "
           "weights and gradients; 'head' = peak minus the trunk-only pass.", "",
           "| pass | peak GiB | head GiB | seconds |", "|---|---|---|---|"]
    out += [f"| {k} | {_f(v['peak_gib'], '.2f')} | {_f(v.get('head_gib', ''), '.2f')} | {_f(v['seconds'], '.3f')} |"
            for k, v in r["rows"].items()]
    return out + ["", f"Chunked head / full logits (head share): **{_f(r['head_ratio'], '.3f')}x**"]


def _mfu(r):
    out = [f"Qwen2.5-0.5B-shaped ({_f(r['params_m'], '.0f')}M parameters), {r['tokens']} tokens per update; MFU against the measured "
           f"dense bf16 matmul rate ({_f(r['measured_peak_tflops'], '.0f')} TFLOP/s) and the 989 TFLOP/s datasheet.", "",
           "| weights | engine.backward + AdamW s | tokens/s | MFU (measured peak) | MFU (datasheet) | plain HF fwd+bwd + AdamW s | plain MFU | engine / plain |",
           "|---|---|---|---|---|---|---|---|"]
    for k, v in r["rows"].items():
        out.append(f"| {k} | {_f(v['seconds'], '.3f')} | {_f(v['tokens_per_s'], ',.0f')} | {_f(100 * v['mfu_measured'], '.1f')}% | "
                   f"{_f(100 * v['mfu_datasheet'], '.1f')}% | {_f(v['plain_seconds'], '.3f')} | {_f(100 * v['plain_mfu_measured'], '.1f')}% | "
                   f"{_f(v['seconds'] / v['plain_seconds'], '.2f')}x |")
    return out


def _packing(r):
    what = r["what"][0].upper() + r["what"][1:]
    out = [f"{what}: {r['real_tokens']:,} real tokens, {r['padded_tokens']:,} in the padded micro-batches "
           f"({_f(100 * r['padded_share'], '.1f')}% padding). Speed-up against SDPA padded; gradient relative error against "
           f"SDPA padded (pass: <= {r['tolerance']:g}).", "",
           "| attention | micro-batches | s | speed-up | peak GiB | gradient error |", "|---|---|---|---|---|---|"]
    for k, v in r["rows"].items():
        if "error" in v:
            out.append(f"| {k} | **failed**: `{v['error']}` | | | | |")
        for way in ("padded", "packed"):
            if f"{way}_s" in v:
                out.append(f"| {k} | {way} | {_f(v[way + '_s'], '.3f')} | **{_f(v['speedup_' + way], '.2f')}x** | "
                           f"{_f(v[way + '_peak_gib'], '.1f')} | {_f(v.get('grad_rel_error_' + way, ''), '.1e')} |")
    return out


def _samplers(r):
    out = [f"{r['what']}; the static decoder's fast path {'is' if r['fast_decode'] else 'is not'} taken for Qwen2.", "",
           "| sampler | tokens/s | s per draw |", "|---|---|---|"]
    out += [f"| {k} | {_f(v['tokens_per_s'], ',.0f')} | {_f(v['seconds'], '.2f')} |" for k, v in r["rows"].items()]
    if not r["vllm_installed"]:
        out += ["| vllm | not installed on this machine | |"]
    return out


def _grpo(r):
    out = [f"{r['what']}.", "", "| library | median s/step (range) | completion tokens/s | peak GiB | ratio (TRL time / ours) |",
           "|---|---|---|---|---|"]
    for k, label in (("ours", "unified_rl"), ("trl", f"TRL {r['trl_version']} GRPOTrainer")):
        v = r[k]
        ratio = f"**{_f(r['ratio'], '.2f')}x**" if k == "ours" else "1.00x"
        out.append(f"| {label} | {_f(v['s_per_step'], '.3f')} ({_f(v['range'][0], '.3f')}-{_f(v['range'][1], '.3f')}) | "
                   f"{_f(v['tokens_per_s'], ',.0f')} | {_f(v['peak_gib'], '.1f')} | {ratio} |")
    if r.get("phases"):
        out += ["", "unified_rl's last step: " + ", ".join(f"{k.split('/')[1]} {_f(v, '.3f')} s" for k, v in r["phases"].items())]
    if not r["vllm_installed"]:
        out += ["", "vLLM is not installed on this machine: both libraries sample with their own transformers-based generation."]
    return out


RENDER = {"methods": ("Every method's gradient on the device", _methods),
          "fsdp": ("FSDP2 on one device", lambda r: [f"Sharded vs plain gradient ({r['backend']}): relative error {_f(r['rel_error_vs_plain'], '.2e')}"]),
          "lora": ("LoRA", lambda r: [f"{r['adapter_tensors']} adapter tensors, fp32 on the device vs CPU fp64: relative error {_f(r['rel_error'], '.2e')}"]),
          "cuda_tests": ("The suite's CUDA tests", lambda r: [f"`pytest -m cuda`: {r['summary']}"]),
          "head_memory": ("Loss-head memory at a 152k vocabulary", _head),
          "mfu": ("The update's throughput and MFU", _mfu),
          "packing": ("Padded vs packed training", _packing),
          "samplers": ("Samplers", _samplers),
          "grpo_vs_trl": ("A GRPO step vs TRL", _grpo)}


def markdown(results: dict) -> str:
    env = results["environment"]
    v = env["versions"]
    head = f"{env.get('gpu', 'CPU (dry run)')}" + (f", {env['gpu_memory_gib']} GiB, driver {env['driver']}" if "gpu" in env else "")
    lines = ["# GPU check" + (" (dry run: tiny sizes on CPU, the numbers mean nothing)" if results["dry_run"] else ""), "",
             f"{head}; {env['machine']}; started {results['started']}", "",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    for name, (title, render) in RENDER.items():
        if name not in results:
            continue
        r = results[name]
        verdict = "" if "pass" not in r else (" -- pass" if r["pass"] else " -- **FAIL**")
        lines += [f"## {title}{verdict} ({r['seconds']} s)", ""]
        lines += _error(r) or render(r)
        lines.append("")
    return "\n".join(lines)
