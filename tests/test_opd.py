"""On-policy distillation as a sampled reverse KL (``methods.opd``): prime-rl's ``opd`` loss,
transcribed, gives the engine's parameter gradients in fp64; the Trainer fills the teacher's
log-probs with one teacher pass; a teacher equal to the student teaches nothing (GC exactly 0)."""

import pytest
import torch

import unified_rl as url
from helpers import grads, random_rollout, tiny_model, true_logprobs

MODEL = tiny_model(3)


def _safe_mean(values, mask):
    return values[mask].sum() / torch.clamp_min(mask.sum(), 1)


def _prime_rl_opd_loss(trainer_logprobs, inference_logprobs, teacher_logprobs, advantages, loss_mask, rl_loss_scale):
    """prime-rl ``src/prime_rl/trainer/rl/loss.py`` ``opd_loss_fn``, its lines as they are (DPPO mask
    at 0.2, the log-ratio advantage detached, 1e-3 times the squared log importance ratio)."""
    log_importance_ratio = trainer_logprobs - inference_logprobs
    importance_ratio = torch.exp(log_importance_ratio)
    probs_diff = torch.exp(trainer_logprobs) - torch.exp(inference_logprobs)
    dppo_invalid_mask_high = probs_diff > 0.2
    dppo_invalid_mask_low = probs_diff < -0.2
    positive_advantages = advantages > 0
    dppo_invalid_mask = torch.where(positive_advantages, dppo_invalid_mask_high, dppo_invalid_mask_low)
    keep_mask = loss_mask & ~dppo_invalid_mask
    teacher_kl = teacher_logprobs - trainer_logprobs
    advantages = 0.0 * advantages + 1.0 * teacher_kl.detach()
    pg_loss = keep_mask * advantages * importance_ratio
    kl_loss = loss_mask * log_importance_ratio ** 2
    return (-pg_loss + 1e-3 * kl_loss).sum() / rl_loss_scale, _safe_mean(teacher_kl, loss_mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_opd_matches_prime_rl_opd_loss(seed):
    """On the student's own samples (pi_old = pi, as at a step's first update) prime-rl's loss over
    the batch's tokens (its rl_loss_scale: the loss tokens) and ours give the same gradient."""
    r = random_rollout(seed, n_groups=2, group_size=3, completion_max=7)
    teacher = tiny_model(seed + 10)
    with torch.no_grad():
        r = r.replace(old_logprobs=true_logprobs(MODEL, r), teacher_logprobs=true_logprobs(teacher, r))
    method = url.methods.opd()
    MODEL.zero_grad()
    url.engine.backward(MODEL, method.coefficient.prepare(r), method.coefficient, url.ExecutionPlan(max_tokens=11))
    ours = torch.cat([g.reshape(-1) for g in grads(MODEL)])
    MODEL.zero_grad()
    lp = true_logprobs(MODEL, r)
    m = r.completion_mask
    loss, teacher_kl = _prime_rl_opd_loss(lp[m], r.old_logprobs[m], r.teacher_logprobs[m], torch.zeros_like(lp[m]), torch.ones_like(m[m]),
                                          int(m.sum()))
    loss.backward()
    theirs = torch.cat([g.reshape(-1) for g in grads(MODEL)])
    assert theirs.norm() > 1e-6
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-10
    metrics = method.coefficient.metrics(method.coefficient.prepare(r), lp.detach())
    assert metrics["distill/teacher_kl"] == pytest.approx(float(teacher_kl.detach()), rel=1e-12)


def test_the_trainer_fills_the_teachers_logprobs_and_a_copy_teaches_nothing():
    """The teacher pass gives the teacher's own log-probs of the sampled tokens; with the student's own
    weights as the teacher, every GC is 0 and so is the update."""
    from helpers import ROWS, TOK, small_model
    from unified_rl.config import TrainConfig
    from unified_rl.loop import Trainer

    student = small_model(seed=1)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    cfg = TrainConfig(steps=1, questions_per_step=2, lr=1e-2, max_new_tokens=12)
    trainer = Trainer(student, TOK, url.methods.opd(), ROWS, cfg, teacher=small_model(seed=1))
    m = trainer.train_step()
    assert m["gc/abs_mean"] == 0.0 and m["distill/teacher_kl"] == 0.0
    assert all(torch.equal(before[n], p) for n, p in student.named_parameters())
    teacher = small_model(seed=2)
    trainer = Trainer(small_model(seed=1), TOK, url.methods.opd(), ROWS, cfg, teacher=teacher)
    rollout = trainer._frozen_passes(trainer.producer.produce(2))
    torch.testing.assert_close(rollout.teacher_logprobs, url.engine.logprobs(teacher, rollout), rtol=0, atol=0)
    assert float(rollout.teacher_logprobs[rollout.completion_mask].abs().min()) > 0
    with pytest.raises(ValueError, match="pass teacher= to the Trainer"):
        Trainer(small_model(seed=1), TOK, url.methods.opd(), ROWS, cfg)
