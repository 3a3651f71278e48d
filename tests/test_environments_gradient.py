"""On multi-turn rollouts (3 turns, environment replies of very different lengths between them), the
engine's gradient for grpo, dr_grpo, dapo and rloo equals the canonical loss written plainly over
the model's tokens only (fp64, 1e-10), and TRL's own GRPO ``_compute_loss`` given its ``tool_mask``."""

import pytest
import torch

import unified_rl as url
import unified_rl.coefficients as C
from unified_rl.data.encoder import Encoder
from unified_rl.environments import EpisodeSource, Limits
from unified_rl.hf import StaticCacheSampler
from env_helpers import Talk, eos_model, qwen_tokenizer
from helpers import tiny_model, true_logprobs, with_policy_logprobs

trl = pytest.importorskip("trl", reason="TRL (a [dev] dependency) is the peer compared with")
from test_conformance_trl import _assert_same, _flat_grads, _stub  # noqa: E402
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402

TOK = qwen_tokenizer()
L_MAX = 200  # the episodes' token budget: Dr. GRPO's constant normaliser (TRL's max_completion_length)
BETA = 0.04


def _episodes(seed=0):
    """4 questions x G = 4 episodes of up to 3 turns, with fp64 old/ref log-probs near the model's own
    and rewards that differ within each group."""
    rows = [{"prompt": p} for p in ("What is 2+3?", "Name a prime above 10.", "Say hi", "Count to three, slowly please.")]
    src = EpisodeSource(rows, Encoder(TOK, 256, 32), StaticCacheSampler(TOK.eos_token_id, TOK.pad_token_id), Talk, samples_per_question=4,
                        max_new_tokens=16, limits=Limits(max_turns=3, max_tokens=L_MAX), seed=seed)
    r = src.sample(eos_model(TOK, seed=seed), 4)
    model = tiny_model(seed + 1, vocab=len(TOK))  # fp64, exact norms: the model whose gradient is compared
    g = torch.Generator().manual_seed(seed)
    r = r.replace(rewards=torch.rand(r.batch_size, generator=g, dtype=torch.float64), sampler_logprobs=None, old_logprobs=None)
    r = with_policy_logprobs(model, r, seed, noise=0.3)
    turns = (r.completion_mask[:, 1:] & ~r.completion_mask[:, :-1]).sum(1)
    assert int(turns.max()) == 3, "the batch must hold 3-turn episodes"
    gaps = [int(g) for i in range(r.batch_size) for g in _gaps(r.completion_mask[i].tolist())]
    assert max(gaps) >= 2 * min(gaps) > 0, "environment replies of very different lengths"
    return model, r


def _gaps(mask):
    """Lengths of the runs of False between runs of True (the environment's tokens)."""
    out, seen, run = [], False, 0
    for m in mask:
        if m:
            if seen and run:
                out.append(run)
            seen, run = True, 0
        elif seen:
            run += 1
    return out


def _ours(model, r, coef):
    prepared = coef.prepare(r)
    model.zero_grad(set_to_none=True)
    url.engine.backward(model, prepared, coef)
    return prepared, _flat_grads(model)


def _plain(model, r, adv, kind):
    """The canonical losses, written over the model's tokens m only (environment tokens appear nowhere)."""
    model.zero_grad(set_to_none=True)
    m = r.completion_mask.double()
    logp = true_logprobs(model, r)
    if kind == "rloo":  # one clipped sequence ratio exp(sum_t m (log pi - log pi_old)), the KL folded into the advantage
        rho = torch.exp(((logp - r.old_logprobs) * m).sum(-1))
        loss = -torch.minimum(rho * adv, rho.clamp(0.8, 1.2) * adv).mean()
    else:
        rho = torch.exp(logp - r.old_logprobs)
        high = 0.28 if kind == "dapo" else 0.2
        surrogate = torch.minimum(rho * adv[:, None], rho.clamp(0.8, 1 + high) * adv[:, None])
        k3 = torch.exp(r.ref_logprobs - logp) - (r.ref_logprobs - logp) - 1
        per_token = -(surrogate - BETA * k3) * m
        if kind == "grpo":
            loss = (per_token.sum(-1) / m.sum(-1)).mean()
        elif kind == "dr_grpo":
            loss = per_token.sum() / (r.batch_size * L_MAX)
        else:
            loss = per_token.sum() / m.sum()
    loss.backward()
    return _flat_grads(model)


def _group_adv(r, std=True):
    x = r.rewards.double().view(-1, 4)
    a = x - x.mean(1, keepdim=True)
    return (a / x.std(1, keepdim=True) if std else a).view(-1)  # this project divides by the std alone (TRL adds 1e-4)


CASES = {
    "grpo": (lambda: C.chain(C.group_normalized(), C.ppo_clip(0.2), C.kl_k3(BETA), aggregation=C.sequence_mean()), "grpo"),
    "dr_grpo": (lambda: C.chain(C.group_normalized("none"), C.ppo_clip(0.2), C.kl_k3(BETA), aggregation=C.max_length_mean(L_MAX)), "dr_grpo"),
    "dapo": (lambda: C.chain(C.group_normalized(), C.ppo_clip(0.2, 0.28), C.kl_k3(BETA), aggregation=C.token_mean()), "dapo"),
}


@pytest.fixture(scope="module")
def batch():
    return _episodes()


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_turn_gradient_is_the_loss_over_model_tokens_only(batch, case):
    model, r = batch
    make, kind = CASES[case]
    prepared, ours = _ours(model, r, make())
    adv = prepared.advantages.sum(-1) / r.completion_lengths
    torch.testing.assert_close(adv.double(), _group_adv(r, std=case != "dr_grpo"), rtol=1e-12, atol=1e-12)
    _assert_same(ours, _plain(model, r, adv, kind))
    _assert_same(ours, _trl(model, prepared, adv, kind))


def test_multi_turn_rloo_gradient_is_the_loss_over_model_tokens_only(batch):
    model, r = batch
    coef = url.methods.rloo(BETA).coefficient
    prepared, ours = _ours(model, r, coef)
    g = r.rewards.double().view(-1, 4) - BETA * ((r.old_logprobs - r.ref_logprobs) * r.completion_mask).sum(-1).view(-1, 4)
    adv = (g - (g.sum(1, keepdim=True) - g) / 3).view(-1)
    _assert_same(ours, _plain(model, r, adv, "rloo"))


def _trl(model, r, adv, kind):
    """TRL's GRPO loss on its layout: the completion is everything after the prompt (the model's and
    the environment's tokens), ``tool_mask`` 0 on the environment's."""
    start = r.completion_mask.long().argmax(1)
    end = r.attention_mask.sum(1)
    width = int((end - start).max())
    logp_full = true_logprobs(model, r.replace(completion_mask=r.attention_mask & (torch.arange(r.input_ids.shape[1]) >= start[:, None])))

    def layout(x):
        return torch.stack([torch.cat([x[i, start[i]: end[i]], x.new_zeros(width - int(end[i] - start[i]))]) for i in range(r.batch_size)])

    region = (torch.arange(width)[None] < (end - start)[:, None]).double()
    tool_mask = layout(r.completion_mask.double())
    logp, old, ref = layout(logp_full), layout(r.old_logprobs), layout(r.ref_logprobs)
    loss_type = {"grpo": "grpo", "dr_grpo": "dr_grpo", "dapo": "dapo"}[kind]
    args = type("A", (), dict(delta=None, use_bias_correction_kl=False, sapo_temperature_pos=1.0, sapo_temperature_neg=1.0, steps_per_generation=1))()
    stub = _stub(loss_type=loss_type, importance_sampling_level="token", beta=BETA, epsilon_low=0.2, epsilon_high=0.28 if kind == "dapo" else 0.2,
                 args=args, top_entropy_quantile=1.0, off_policy_mask_threshold=None, use_vllm=False, vllm_importance_sampling_correction=False,
                 max_completion_length=L_MAX, _entropy_bonus_enabled=False, get_off_policy_mask=GRPOTrainer.get_off_policy_mask,
                 _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None))
    b = r.batch_size
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1), "completion_ids": torch.zeros(b, width, dtype=torch.long),
              "completion_mask": region, "tool_mask": tool_mask, "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": (region * tool_mask).sum()}
    model.zero_grad(set_to_none=True)
    GRPOTrainer._compute_loss(stub, model, inputs).backward()
    return _flat_grads(model)
