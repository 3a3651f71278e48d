"""Conformance with TRL 1.16's own loss code: the project's engine and TRL's ``_compute_loss``
(GRPO for every loss type and importance level, RLOO, DPO's sigmoid/hinge/IPO, CPO's SimPO) give
the same parameter gradients on the same fp64 model and tensors, to 1e-10 relative.

TRL is called on a stand-in trainer: a namespace holding exactly the attributes its loss reads,
whose log-prob function returns the tiny model's log-probs (with grad). The advantages TRL is
given are the ones this project's estimator computed (TRL's own add 1e-4 to the std; the
estimators are tested against their formulas in test_variant_pieces.py).
"""

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import unified_rl as url
import unified_rl.coefficients as C
from unified_rl.rollout import Sample
from helpers import random_rollout, tiny_model, true_logprobs, with_policy_logprobs

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # CPOTrainer lives in trl.experimental
trl = pytest.importorskip("trl", reason="TRL (a [dev] dependency) is the peer these tests compare with")
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trl.trainer.rloo_trainer import RLOOTrainer  # noqa: E402

REL = 1e-10


class _Accelerator:
    """One process: gathers and reductions are the identity."""

    num_processes, sync_gradients, device = 1, True, torch.device("cpu")

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, **_):
        return x


def _stub(**attrs):
    base = dict(model=SimpleNamespace(training=True), accelerator=_Accelerator(), current_gradient_accumulation_steps=1,
                _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, aux_loss_enabled=False)
    return SimpleNamespace(**{**base, **attrs})


def _flat_grads(model):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


def _ours(model, rollout, coef):
    model.zero_grad(set_to_none=True)
    url.engine.backward(model, rollout, coef)
    return _flat_grads(model)


def _completion_layout(rollout, full):
    """[batch, seq] values at output tokens -> TRL's right-padded [batch, completion] layout (keeps grad)."""
    n = rollout.completion_lengths
    width = int(n.max())
    rows = [torch.cat([full[i][rollout.completion_mask[i]], full.new_zeros(width - int(n[i]))]) for i in range(rollout.batch_size)]
    mask = torch.arange(width)[None] < n[:, None]
    return torch.stack(rows), mask.double()


def _assert_same(ours, theirs):
    assert theirs.norm() > 1e-6, "the peer's gradient is 0: the case tests nothing"
    rel = float((ours - theirs).norm() / theirs.norm())
    assert rel <= REL, f"relative gradient difference {rel:.3g} > {REL}"


def _setup(seed, noise=0.3, group_size=4):
    model = tiny_model(seed)
    r = random_rollout(seed, n_groups=3, group_size=group_size, completion_max=7)
    g = torch.Generator().manual_seed(seed)
    entropies = torch.where(r.completion_mask, torch.rand(r.input_ids.shape, generator=g, dtype=torch.float64) * 3, 0.0)
    return model, with_policy_logprobs(model, r, seed, noise).replace(entropies=entropies)


# (TRL loss_type, importance level, TRL extras, our chain)
GRPO_CASES = {
    "grpo": ("grpo", "token", {}, lambda b: C.chain(C.group_normalized(), C.ppo_clip(0.2), C.kl_k3(b), aggregation=C.sequence_mean())),
    "bnpo": ("bnpo", "token", {}, lambda b: C.chain(C.group_normalized(), C.ppo_clip(0.2), C.kl_k3(b), aggregation=C.token_mean())),
    "dr_grpo": ("dr_grpo", "token", {}, lambda b: C.chain(C.group_normalized("none"), C.ppo_clip(0.2), C.kl_k3(b),
                                                          aggregation=C.max_length_mean(9))),
    "dapo": ("dapo", "token", {"epsilon_high": 0.28}, lambda b: C.chain(C.group_normalized(), C.ppo_clip(0.2, 0.28), C.kl_k3(b),
                                                                         aggregation=C.token_mean())),
    "cispo": ("cispo", "token", {"epsilon_high": 1.1}, lambda b: C.chain(C.group_normalized(), C.cispo(1.1), C.kl_k3(b),
                                                                          aggregation=C.token_mean())),
    # TRL builds SAPO's temperatures with torch.where on Python floats, which makes them fp32 even in an
    # fp64 model (1.05 becomes 1.0499999523); temperatures exact in fp32 keep the comparison exact.
    "sapo": ("sapo", "token", {}, lambda b: C.chain(C.group_normalized(), C.sapo(1.0, 1.125), C.kl_k3(b), aggregation=C.sequence_mean())),
    "luspo": ("luspo", "sequence", {}, lambda b: C.chain(C.group_normalized(), C.ppo_clip(0.2, level="sequence"), C.kl_k3(b),
                                                         aggregation=C.sequence_sum())),
    "gspo": ("grpo", "sequence", {}, lambda b: C.chain(C.group_normalized(), C.ppo_clip(0.2, level="sequence"), C.kl_k3(b),
                                                       aggregation=C.sequence_mean())),
    "gspo_paper_eps": ("grpo", "sequence", {"epsilon": 3e-4, "epsilon_high": 4e-4},
                       lambda b: C.chain(C.group_normalized(), C.ppo_clip(3e-4, 4e-4, level="sequence"), C.kl_k3(b),
                                         aggregation=C.sequence_mean())),
    "dapo_sequence": ("dapo", "sequence", {"epsilon_high": 0.28}, lambda b: C.chain(
        C.group_normalized(), C.ppo_clip(0.2, 0.28, level="sequence"), C.kl_k3(b), aggregation=C.token_mean())),
    "cispo_sequence": ("cispo", "sequence", {"epsilon_high": 1.05}, lambda b: C.chain(
        C.group_normalized(), C.cispo(1.05, level="sequence"), C.kl_k3(b), aggregation=C.token_mean())),
    "sapo_sequence": ("sapo", "sequence", {}, lambda b: C.chain(
        C.group_normalized(), C.sapo(1.0, 1.125, level="sequence"), C.kl_k3(b), aggregation=C.sequence_mean())),
    "grpo_delta": ("grpo", "token", {"epsilon_high": 0.28, "delta": 1.4}, lambda b: C.chain(
        C.group_normalized(), C.ppo_clip(0.2, 0.28, delta=1.4), C.kl_k3(b), aggregation=C.sequence_mean())),
    "dapo_off_policy_mask": ("dapo", "token", {"off_policy_mask_threshold": 0.02}, lambda b: C.chain(
        C.group_normalized(), C.gated(C.ppo_clip(0.2), C.off_policy_mask(0.02)), C.kl_k3(b), aggregation=C.token_mean())),
    "grpo_top_entropy": ("grpo", "token", {"top_entropy_quantile": 0.3}, lambda b: C.chain(
        C.group_normalized(), C.gated(C.ppo_clip(0.2), C.top_entropy_mask(0.3)), C.kl_k3(b), aggregation=C.sequence_mean())),
    "dapo_sequence_top_entropy": ("dapo", "sequence", {"top_entropy_quantile": 0.5}, lambda b: C.chain(
        C.group_normalized(), C.gated(C.ppo_clip(0.2, level="sequence"), C.top_entropy_mask(0.5)), C.kl_k3(b), aggregation=C.token_mean())),
    "grpo_batch_scale": ("grpo", "token", {}, lambda b: C.chain(C.group_normalized("batch"), C.ppo_clip(0.2), C.kl_k3(b),
                                                                aggregation=C.sequence_mean())),
}


def _trl_grpo(model, r, loss_type, level, extra, beta, is_ratio=None):
    logp, mask = _completion_layout(r, true_logprobs(model, r))
    old, _ = _completion_layout(r, r.old_logprobs)
    ref, _ = _completion_layout(r, r.ref_logprobs)
    ent, _ = _completion_layout(r, r.entropies)
    adv = r.advantages.sum(-1) / r.completion_lengths.clamp(min=1)  # per-sequence advantage (constant along the sequence)
    eps = extra.get("epsilon", 0.2)
    args = SimpleNamespace(delta=extra.get("delta"), use_bias_correction_kl=False, sapo_temperature_pos=1.0, sapo_temperature_neg=1.125,
                           steps_per_generation=1)
    stub = _stub(loss_type=loss_type, importance_sampling_level=level, beta=beta, epsilon_low=eps, epsilon_high=extra.get("epsilon_high", eps),
                 args=args, top_entropy_quantile=extra.get("top_entropy_quantile", 1.0), off_policy_mask_threshold=extra.get("off_policy_mask_threshold"),
                 use_vllm=is_ratio is not None, vllm_importance_sampling_correction=is_ratio is not None, max_completion_length=9, _entropy_bonus_enabled=False,
                 get_off_policy_mask=GRPOTrainer.get_off_policy_mask,
                 _get_per_token_logps_and_entropies=lambda *a, **k: (logp, ent, None))
    stub.get_high_entropy_mask = lambda e, m, q: GRPOTrainer.get_high_entropy_mask(stub, e, m, q)
    b = r.batch_size
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1), "completion_ids": torch.zeros_like(mask, dtype=torch.long),
              "completion_mask": mask, "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    model.zero_grad(set_to_none=True)
    GRPOTrainer._compute_loss(stub, model, inputs).backward()
    return _flat_grads(model)


@pytest.mark.parametrize("case", sorted(GRPO_CASES))
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_types_match_trl(case, beta):
    loss_type, level, extra, make = GRPO_CASES[case]
    seed = sorted(GRPO_CASES).index(case)
    model, r = _setup(seed, noise=0.05 if "paper_eps" in case else 0.3)
    coef = make(beta)
    prepared = coef.prepare(r)
    _assert_same(_ours(model, prepared, coef), _trl_grpo(model, prepared, loss_type, level, extra, beta))


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_rloo_matches_trl(beta):
    """TRL's RLOOTrainer: KL (k1, summed) in the reward before the leave-one-out baseline, one clipped
    ratio exp(sum_t log(pi / pi_old)) per sequence, mean over sequences."""
    model, r = _setup(11, noise=0.05)
    coef = url.methods.rloo(beta).coefficient
    prepared = coef.prepare(r)
    ours = _ours(model, prepared, coef)
    # TRL's advantage, as its _generate_and_score_completions computes it (beta * sum k1 out of the reward, then the baseline)
    g = r.rewards.view(-1, 4) - beta * ((r.old_logprobs - r.ref_logprobs) * r.completion_mask).sum(-1).view(-1, 4)
    trl_adv = (g - (g.sum(1, keepdim=True) - g) / 3).view(-1)
    torch.testing.assert_close(prepared.advantages.sum(-1) / r.completion_lengths, trl_adv, rtol=1e-12, atol=1e-12)
    logp, mask = _completion_layout(r, true_logprobs(model, r))
    stub = _stub(epsilon_low=0.2, epsilon_high=0.2, _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None))
    b = r.batch_size
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1), "completion_ids": torch.zeros_like(mask, dtype=torch.long),
              "completion_mask": mask, "advantages": trl_adv, "old_logps": (r.old_logprobs * r.completion_mask).sum(-1)}
    model.zero_grad(set_to_none=True)
    RLOOTrainer._compute_loss(stub, model, inputs).backward()
    _assert_same(ours, _flat_grads(model))


class _FusedHead(torch.nn.Module):
    """What DPOTrainer asks of the model (``fused_lm_head=True``): per-token log-probs of ``labels``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, labels, fused_lm_head=True, use_cache=False, **_):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask.long()).logits[:, :-1].double()
        target = labels[:, 1:]
        lp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
        lp = torch.where(target != -100, lp, torch.zeros_like(lp))
        zeros = torch.zeros_like(lp).detach()
        return SimpleNamespace(log_probs=lp, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def _pairs(seed, pairs=4):
    """2P rows, chosen first then rejected (TRL's order); pair p = rows p and P + p."""
    model = tiny_model(seed)
    r = random_rollout(seed, n_groups=1, group_size=2 * pairs, completion_max=7)
    r = r.replace(group_ids=torch.arange(2 * pairs) % pairs, chosen=torch.arange(2 * pairs) < pairs)
    return model, with_policy_logprobs(model, r, seed, 0.3)


@pytest.mark.parametrize("loss,normalized,beta", [("sigmoid", False, 0.1), ("sigmoid", False, 0.7), ("hinge", False, 0.1),
                                                  ("hinge", False, 2.0), ("ipo", True, 0.1), ("ipo", True, 0.5)])
def test_preference_losses_match_trl_dpo(loss, normalized, beta):
    model, r = _pairs(3 + int(beta * 10))
    coef = C.chain(None, C.dpo_term(beta, normalized, loss), aggregation=C.group_mean(normalized))
    ours = _ours(model, coef.prepare(r), coef)
    ref = (r.ref_logprobs * r.completion_mask).sum(-1)
    p = r.batch_size // 2
    stub = _stub(ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss], loss_weights=[1.0], beta=beta,
                 use_weighting=False, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": r.input_ids, "attention_mask": r.attention_mask.long(), "completion_mask": r.completion_mask.long(),
              "ref_chosen_logps": ref[:p], "ref_rejected_logps": ref[p:]}
    model.zero_grad(set_to_none=True)
    DPOTrainer._compute_loss(stub, _FusedHead(model), inputs, return_outputs=False).backward()
    _assert_same(ours, _flat_grads(model))


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_orpo_matches_trl_orpo(beta):
    """ORPO's loss, NLL(chosen tokens) - mean beta log sigmoid(log odds ratio): TRL's own
    ``odds_ratio_loss`` (which casts its inputs to fp32, so 1e-6 there) and, in fp64 at ``REL``, its
    expression with TRL's own ``log1mexp``."""
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer, log1mexp

    model, r = _pairs(11 + int(beta * 10))
    coef = url.methods.orpo(beta).coefficient
    ours = _ours(model, coef.prepare(r), coef)
    p = r.batch_size // 2

    def theirs(odds_ratio_losses):
        model.zero_grad(set_to_none=True)
        lp = true_logprobs(model, r)
        avg = lp.sum(-1) / r.completion_lengths
        chosen_tokens = r.completion_mask[:p]
        nll = -lp[:p][chosen_tokens].sum() / chosen_tokens.sum()  # TRL's CrossEntropyLoss over the chosen labels
        (nll - odds_ratio_losses(avg[:p], avg[p:]).mean()).backward()
        return _flat_grads(model)

    trl_fp32 = theirs(lambda c, r_: ORPOTrainer.odds_ratio_loss(_stub(beta=beta), c, r_)[0])
    assert float((ours - trl_fp32).norm() / trl_fp32.norm()) < 1e-6
    fp64 = theirs(lambda c, r_: beta * torch.nn.functional.logsigmoid((c - r_) - (log1mexp(c) - log1mexp(r_))))
    _assert_same(ours, fp64)


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_online_dpo_matches_trl_online_dpo(beta):
    """Online DPO: TRL computes its pairs and loss inline in ``OnlineDPOTrainer.training_step``
    (``trl/experimental/online_dpo/online_dpo_trainer.py``: ``mask = first_half >= second_half`` ...
    ``losses = -F.logsigmoid(self.beta * logits)``; no function to call), so those lines are
    transcribed here on TRL's layout (first samples, then second samples), rewards with ties; our
    pairs come from ``data.ranked.rank_pairs`` on the question-major layout the sampler gives."""
    from unified_rl.data.ranked import rank_pairs
    from unified_rl.data.collate import concat

    p = 4
    model, r = _pairs(21 + int(beta * 10), pairs=p)  # rows 0..p-1 are the first samples, p..2p-1 the second
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0, 1.0, 0.5, 0.3], dtype=torch.float64)  # pairs 0 and 2 tie
    order = [i for q in range(p) for i in (q, p + q)]  # question-major, as SampledSource gives them
    sampled = r.select(order).replace(group_ids=torch.arange(2 * p) // 2, rewards=rewards[order].float(), chosen=None)
    pairs, dropped = rank_pairs(sampled)
    assert dropped == 0 and [bool(x.chosen[0]) for x in pairs] == [True, False, True, False]
    ours_r = concat([x.replace(group_ids=torch.full((2,), i)) for i, x in enumerate(pairs)], pad_id=0)
    coef = url.methods.online_dpo(beta).coefficient
    ours = _ours(model, coef.prepare(ours_r), coef)

    model.zero_grad(set_to_none=True)
    logprobs, ref_logprobs = true_logprobs(model, r), r.ref_logprobs * r.completion_mask
    first_half, second_half = rewards.split(p)
    mask = first_half >= second_half
    batch_range = torch.arange(p)
    chosen_indices = batch_range + (~mask * p)
    rejected_indices = batch_range + (mask * p)
    cr = torch.cat((chosen_indices, rejected_indices))
    cr_logprobs_sum, cr_ref_logprobs_sum = logprobs[cr].sum(1), ref_logprobs[cr].sum(1)
    chosen_sum, rejected_sum = torch.split(cr_logprobs_sum, p)
    chosen_ref_sum, rejected_ref_sum = torch.split(cr_ref_logprobs_sum, p)
    logits = (chosen_sum - rejected_sum) - (chosen_ref_sum - rejected_ref_sum)
    (-torch.nn.functional.logsigmoid(beta * logits)).mean().backward()
    _assert_same(ours, _flat_grads(model))


@pytest.mark.parametrize("beta,gamma", [(2.0, 1.0), (0.1, 0.5), (2.5, 0.0)])
def test_simpo_matches_trl_cpo(beta, gamma):
    model, r = _pairs(7)
    coef = url.methods.simpo(beta, gamma).coefficient
    ours = _ours(model, coef.prepare(r), coef)
    avg = true_logprobs(model, r).sum(-1) / r.completion_lengths
    p = r.batch_size // 2
    stub = _stub(beta=beta, simpo_gamma=gamma, alpha=0.0, label_smoothing=0.0, loss_type="simpo")
    model.zero_grad(set_to_none=True)
    losses, _, _ = CPOTrainer.cpo_loss(stub, avg[:p], avg[p:])
    losses.mean().backward()
    _assert_same(ours, _flat_grads(model))


def test_overlong_penalty_matches_trl():
    from trl.rewards import get_soft_overlong_punishment

    lengths = list(range(0, 14))
    ids = torch.zeros(len(lengths), 16, dtype=torch.long)
    pos = torch.arange(16)[None]
    n = torch.tensor(lengths)[:, None]
    r = url.Rollout(ids, pos < n + 1, (pos >= 1) & (pos < n + 1))
    texts = [Sample("q", "o" * k) for k in lengths]
    ours = url.rewards.overlong_penalty(10, 4)(r, texts).rewards.tolist()
    theirs = get_soft_overlong_punishment(10, 4)([[1] * k for k in lengths])
    assert ours == pytest.approx(theirs, abs=1e-7) and min(theirs) == -1 and max(theirs) == 0


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_sampler_correction_enters_the_loss_as_in_trl(mode, beta):
    """TRL multiplies the policy loss by ``importance_sampling_ratio`` (the KL is added after): with
    TRL's ratio for each mode given to its _compute_loss, the gradients equal ``corrected(...)``'s."""
    model, r = _setup(21, noise=0.1)
    g = torch.Generator().manual_seed(21)
    r = r.replace(sampler_logprobs=torch.where(r.completion_mask, r.old_logprobs + 0.3 * torch.randn(r.input_ids.shape, generator=g,
                                                                                                    dtype=torch.float64), 0.0))
    correction = C.sampler_correction(mode, c_max=1.3, c_min=0.7)
    coef = C.chain(C.group_normalized(), C.corrected(C.ppo_clip(0.2), correction), C.kl_k3(beta), aggregation=C.token_mean())
    prepared = coef.prepare(r)
    old, mask = _completion_layout(r, r.old_logprobs)
    sampler, _ = _completion_layout(r, r.sampler_logprobs)
    diff = (old - sampler) * mask  # TRL's lines, in its [batch, completion] layout
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
    ratio = ratio.clamp(0.7, 1.3) if mode.endswith("truncate") else ratio.masked_fill((ratio < 0.7) | (ratio > 1.3), 0.0)
    assert ((ratio != 1) & (ratio != 0)).any() and (mode.endswith("truncate") or (ratio == 0).any())
    _assert_same(_ours(model, prepared, coef), _trl_grpo(model, prepared, "dapo", "token", {}, beta, is_ratio=ratio))
