"""Tiny fp64 transformers models and random rollouts for the property tests."""

import types

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import unified_rl as url

VOCAB = 23


def tiny_model(seed: int = 0, vocab: int = VOCAB, tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=tie, attn_implementation="sdpa")
    return exact_norms(LlamaForCausalLM(cfg).double().eval())


def tiny_arch(kind: str, seed: int = 0, vocab: int = VOCAB):
    """A tiny fp64 model of another architecture (grouped-query attention where it has one)."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=64)).double().eval()
    config, model = {"qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM), "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
                     "mistral": (tf.MistralConfig, tf.MistralForCausalLM), "llama": (tf.LlamaConfig, tf.LlamaForCausalLM)}[kind]
    extra = {"head_dim": 12} if kind == "qwen3" else {}  # head_dim != hidden / heads
    cfg = config(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=64, attn_implementation="sdpa", **extra)
    return exact_norms(model(cfg).double().eval())


def _rms_norm_in_input_dtype(self, x):
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def exact_norms(model):
    """transformers' RMSNorm computes in fp32 even in an fp64 model; that rounding breaks fp64
    comparisons between two ways of computing the same sum. Make the norms compute in the input's dtype."""
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = types.MethodType(_rms_norm_in_input_dtype, m)
    return model


def random_rollout(seed: int, n_groups: int = 2, group_size: int = 3, prompt_max: int = 4, completion_max: int = 6,
                   allow_empty: bool = False, vocab: int = VOCAB) -> url.Rollout:
    """Right-padded rows: prompt (>= 1 token) then completion; groups contiguous."""
    g = torch.Generator().manual_seed(seed)
    b = n_groups * group_size
    p_len = torch.randint(1, prompt_max + 1, (b,), generator=g)
    c_len = torch.randint(0 if allow_empty else 1, completion_max + 1, (b,), generator=g)
    seq = int((p_len + c_len).max())
    ids = torch.randint(0, vocab, (b, seq), generator=g)
    pos = torch.arange(seq)[None]
    attn = pos < (p_len + c_len)[:, None]
    comp = (pos >= p_len[:, None]) & attn
    ids = torch.where(attn, ids, torch.zeros_like(ids))
    groups = torch.arange(n_groups).repeat_interleave(group_size)
    rewards = torch.randint(0, 3, (b,), generator=g).double()
    return url.Rollout(ids, attn, comp, group_ids=groups, rewards=rewards)


def true_logprobs(model, rollout: url.Rollout) -> torch.Tensor:
    """Plain full-logits log pi of each token (0 outside completions), with grad."""
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask.long()).logits
    logp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, rollout.input_ids[:, 1:, None]).squeeze(-1)
    logp = torch.cat([torch.zeros_like(logp[:, :1]), logp], 1)
    return torch.where(rollout.completion_mask, logp, torch.zeros_like(logp))


def with_policy_logprobs(model, rollout: url.Rollout, seed: int, noise: float = 0.3) -> url.Rollout:
    """old/ref log-probs near the model's own, so some tokens clip and some do not."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        lp = true_logprobs(model, rollout)
    old = lp + noise * torch.randn(lp.shape, generator=g, dtype=lp.dtype)
    ref = lp + noise * torch.randn(lp.shape, generator=g, dtype=lp.dtype)
    m = rollout.completion_mask
    return rollout.replace(old_logprobs=torch.where(m, old, 0.0), ref_logprobs=torch.where(m, ref, 0.0))


def with_steps(r, seed):
    """Process rewards on random steps of each completion (its last token always a step)."""
    g = torch.Generator().manual_seed(seed + 7)
    m = r.completion_mask
    last = torch.zeros_like(m)
    for i, row in enumerate(m):
        idx = row.nonzero().squeeze(1)
        if len(idx):
            last[i, idx[-1]] = True
    steps = (m & (torch.rand(m.shape, generator=g) < 0.4)) | last
    rewards = torch.where(steps, torch.randint(0, 2, m.shape, generator=g).double(), 0.0)
    return r.replace(step_mask=steps, step_rewards=rewards)


def multi_turn_rollout(seed: int, n_groups: int = 4, group_size: int = 2, turns: int = 3, vocab: int = VOCAB) -> url.Rollout:
    """Episodes laid out as the episode source lays them: per row a prompt, then up to ``turns`` model
    turns with environment replies of very different lengths (1 to 9 tokens) between them;
    ``completion_mask`` on the model's tokens only, a per-turn reward at each turn's last model token,
    an outcome reward per row, groups contiguous."""
    g = torch.Generator().manual_seed(seed)
    rows, masks, ends = [], [], []
    for _ in range(n_groups):
        prompt = torch.randint(0, vocab, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        for _ in range(group_size):
            ids, mask, last = list(prompt), [False] * len(prompt), []
            for k in range(int(torch.randint(1, turns + 1, (1,), generator=g))):
                if k:
                    n_env = int(torch.randint(1, 10, (1,), generator=g))
                    ids += torch.randint(0, vocab, (n_env,), generator=g).tolist()
                    mask += [False] * n_env
                n = int(torch.randint(1, 5, (1,), generator=g))
                ids += torch.randint(0, vocab, (n,), generator=g).tolist()
                mask += [True] * n
                last.append(len(ids) - 1)
            rows.append(ids), masks.append(mask), ends.append(last)
    seq = max(len(r) for r in rows)
    b = len(rows)
    ids, attn, comp = torch.zeros((b, seq), dtype=torch.long), torch.zeros((b, seq), dtype=torch.bool), torch.zeros((b, seq), dtype=torch.bool)
    steps = torch.zeros((b, seq), dtype=torch.bool)
    for i, (r, m, last) in enumerate(zip(rows, masks, ends)):
        ids[i, : len(r)], attn[i, : len(r)], comp[i, : len(r)] = torch.tensor(r), True, torch.tensor(m)
        steps[i, last] = True
    step_rewards = torch.where(steps, torch.randint(0, 2, (b, seq), generator=g).double(), 0.0)
    groups = torch.arange(n_groups).repeat_interleave(group_size)
    return url.Rollout(ids, attn, comp, group_ids=groups, rewards=torch.rand(b, generator=g, dtype=torch.float64), step_rewards=step_rewards,
                       step_mask=steps)


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def assert_grads_close(a, b, rtol=1e-9, atol=1e-12):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def shared_prompt_rollout(seed: int, n_groups: int = 3, group_size: int = 3, prompt_max: int = 5, completion_max: int = 6,
                          allow_empty: bool = False, vocab: int = VOCAB) -> url.Rollout:
    """Like :func:`random_rollout`, but the rows of a group continue one shared prompt (as GRPO's do)."""
    g = torch.Generator().manual_seed(seed)
    rows, comps = [], []
    for _ in range(n_groups):
        prompt = torch.randint(0, vocab, (int(torch.randint(1, prompt_max + 1, (1,), generator=g)),), generator=g).tolist()
        for _ in range(group_size):
            n = int(torch.randint(0 if allow_empty else 1, completion_max + 1, (1,), generator=g))
            rows.append(prompt + torch.randint(0, vocab, (n,), generator=g).tolist())
            comps.append(len(prompt))
    seq = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), seq), dtype=torch.long)
    attn = torch.zeros((len(rows), seq), dtype=torch.bool)
    comp = torch.zeros_like(attn)
    for i, (r, p) in enumerate(zip(rows, comps)):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = True
        comp[i, p: len(r)] = True
    groups = torch.arange(n_groups).repeat_interleave(group_size)
    rewards = torch.randint(0, 3, (len(rows),), generator=g).double()
    return url.Rollout(ids, attn, comp, group_ids=groups, rewards=rewards)


def run_cli(args, cwd):
    """``unified-rl`` (the installed script, else ``python -m unified_rl.apps.cli``) in ``cwd``."""
    import os
    import shutil
    import subprocess
    import sys

    exe = shutil.which("unified-rl")
    cmd = [exe] if exe else [sys.executable, "-m", "unified_rl.apps.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


# ---------------------------------------------------------------- the Trainer tests' task and model
def _char_tokenizer():
    from unified_rl.apps.tasks import char_tokenizer

    return char_tokenizer()


TOK = _char_tokenizer()


def _rows():
    from unified_rl.apps.tasks import ArithmeticTask

    return ArithmeticTask().train_rows(64)


ROWS = _rows()


def has_seven(prompts, completions, **_):
    """A reward any policy can learn fast: 1 if a '7' is among the first 6 characters."""
    return [float("7" in c[:6]) for c in completions]


def seven_steps(prompt, completion):
    """A process check for tests: every second character is a step, correct when it is a '7'."""
    return [(i, completion[i] == "7") for i in range(1, len(completion), 2)] or [(max(len(completion) - 1, 0), False)]


def small_model(seed=0):
    from unified_rl.hf import tiny_llama

    return tiny_llama(len(TOK), hidden=32, layers=2, heads=2, intermediate=64, seed=seed)


def registered(name: str, max_new_tokens: int = 48, **settings):
    """The registered method ``name`` built with those of ``settings`` it takes (G, beta, epsilon), as
    a recipe that names several methods gives them."""
    entry = url.methods.REGISTRY[name]
    return url.methods.build(name, max_new_tokens=max_new_tokens, **{k: v for k, v in settings.items() if entry.parameter(k)})


def teacher_for(method, build=None) -> dict:
    """``{"teacher": model}`` for a method that distils from a teacher (``build()``, default a small
    model of seed 9), else ``{}``: a Trainer's ``teacher=`` or the engine's ``models=``."""
    reads = url.coefficients.reads_of(method.coefficient.vocabulary)
    follows = "teacher" in reads or "teacher_logprobs" in method.coefficient.needs  # over the vocabulary, or sampled (opd)
    return {"teacher": (build or (lambda: small_model(seed=9)))()} if follows else {}


# ---------------------------------------------------------------- filled rollouts for the GC property tests
ALL_AGGREGATIONS = [url.coefficients.sequence_mean(), url.coefficients.token_mean(), url.coefficients.sequence_sum(),
                    url.coefficients.max_length_mean(50), url.coefficients.group_mean(True), url.coefficients.constant_weight(0.37)]


def filled(seed: int, aggregation, allow_empty=False):
    """A rollout with weights, advantages, old/ref log-probs and a random logp (junk in masked slots)."""
    r = random_rollout(seed, n_groups=3, group_size=2, allow_empty=allow_empty)
    g = torch.Generator().manual_seed(seed)
    shape = r.input_ids.shape
    logp = -torch.rand(shape, generator=g, dtype=torch.float64) * 3
    noise = lambda s: logp + s * torch.randn(shape, generator=g, dtype=torch.float64)  # noqa: E731
    m = r.completion_mask
    r = r.replace(
        advantages=torch.where(m, torch.randn(shape, generator=g, dtype=torch.float64), 0.0),
        old_logprobs=torch.where(m, noise(0.4), 0.0),
        ref_logprobs=torch.where(m, noise(0.4), 0.0),
        teacher_logprobs=torch.where(m, noise(0.8), 0.0),
        chosen=torch.arange(r.batch_size) % 2 == 0,
    )
    r = r.replace(weights=aggregation(r))
    junk = torch.where(m, logp, torch.full_like(logp, float("nan")))
    return r, junk


def check_gc(term, r, logp, nontrivial: bool = True):
    """The term's closed-form GC times the weights equals autograd of its objective (fp64); with
    ``nontrivial``, the gradient is non-zero somewhere wherever a completion token has weight."""
    x = logp.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(term.objective(r, x), x)
    gc = term.gc(r, logp)
    assert torch.isfinite(gc).all()
    torch.testing.assert_close(grad, r.weights * gc, rtol=1e-12, atol=1e-15)
    if nontrivial and bool((r.weights * r.completion_mask).abs().sum() > 0):
        assert bool((grad != 0).any()), "the GC is 0 on every weighted token: the comparison proves nothing"
    return gc


def with_critic(method, rollout, policy):
    """The rollout as the learner hands it to a method's coefficient: with the values of the
    method's critic built from ``policy`` (PPO), and that critic; unchanged and None without one."""
    if method.critic is None:
        return rollout, None
    critic = method.critic.build(policy)
    return rollout.replace(values=critic.values(rollout)), critic
