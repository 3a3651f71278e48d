"""The training/inference mismatch correction: its GC is the gradient of its objective (fp64), its
weight is TRL 1.16's ``importance_sampling_ratio`` for all four modes (TRL's own code, run on the
same tensors), and with the weight equal to 1 the corrected term is the term itself."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

import unified_rl.coefficients as C
from helpers import check_gc as _check, filled as _filled
from helpers import ALL_AGGREGATIONS as AGGREGATIONS

MODES = ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


def _with_sampler(r, seed, noise=0.2):
    g = torch.Generator().manual_seed(seed + 7)
    sampler = torch.where(r.completion_mask, r.old_logprobs + noise * torch.randn(r.input_ids.shape, generator=g, dtype=torch.float64), 0.0)
    return r.replace(sampler_logprobs=sampler)


@given(seed=st.integers(0, 100_000), mode=st.sampled_from(MODES), level=st.sampled_from(["token", "sequence"]),
       agg=st.sampled_from(AGGREGATIONS), c_max=st.floats(1.05, 3.0), c_min=st.one_of(st.none(), st.floats(0.2, 0.95)))
def test_corrected_term_gc_is_gradient_of_objective(seed, mode, level, agg, c_max, c_min):
    r, logp = _filled(seed, agg, allow_empty=True)
    r = _with_sampler(r, seed)
    term = C.corrected(C.ppo_clip(0.2, level=level), C.sampler_correction(mode, c_max=c_max, c_min=c_min))
    _check(term, r, logp, nontrivial=mode.endswith("truncate"))  # a mask may drop every sample of a batch


def test_a_weight_of_one_changes_nothing():
    r, logp = _filled(4, C.token_mean())
    r = r.replace(sampler_logprobs=r.old_logprobs)  # the sampler is the trainer: r = 1 everywhere
    for mode in MODES:
        term = C.ppo_clip(0.2, level="sequence")
        torch.testing.assert_close(C.corrected(term, C.sampler_correction(mode)).gc(r, logp), term.gc(r, logp), rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("c_min,c_max", [(None, 2.0), (0.5, 3.0), (0.8, 1.2)])
def test_weights_match_trl(mode, c_min, c_max):
    """TRL's _generate_and_score_completions, lines that build importance_sampling_ratio, reproduced here
    from its source and checked against its own text so a change in TRL fails this test."""
    import inspect

    from trl.trainer.grpo_trainer import GRPOTrainer

    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for line in ("per_token_logps_diff = (old_per_token_logps - sampling_per_token_logps) * mask",
                 "per_sequence_logps_diff = per_token_logps_diff.sum(dim=-1, keepdim=True)",
                 "vllm_importance_sampling_ratio = torch.exp(logps_diff)",
                 "invalid_mis_mask, value=0.0"):
        assert line in src, line
    r, _ = _filled(9, C.token_mean())
    r = _with_sampler(r, 9, noise=0.4)
    mask = r.completion_mask.double()
    diff = torch.nan_to_num((r.old_logprobs - r.sampler_logprobs) * mask, nan=0.0)
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
    if mode.endswith("truncate"):
        ratio = torch.clamp(ratio, min=c_min, max=c_max)
    else:
        lo, hi = c_min if c_min is not None else -math.inf, c_max if c_max is not None else math.inf
        ratio = ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)
    trl_weight = (ratio * mask if ratio.shape[1] == mask.shape[1] else ratio.expand_as(mask) * mask)
    ours = C.sampler_correction(mode, c_max=c_max, c_min=c_min).weight(r, torch.float64)
    torch.testing.assert_close(ours, trl_weight, rtol=1e-15, atol=0)
    assert (ours[r.completion_mask] != 1).any()


def test_mismatch_metrics():
    r, logp = _filled(5, C.token_mean())
    r = _with_sampler(r, 5, noise=0.5)
    m = C.corrected(C.ppo_clip(0.2), C.sampler_correction("token_truncate", c_max=1.5)).metrics(r, logp)
    diff = (r.old_logprobs - r.sampler_logprobs)[r.completion_mask]
    assert m["mismatch/logp_diff_max"] == pytest.approx(float(diff.abs().max()))
    assert m["mismatch/logp_diff_mean"] == pytest.approx(float(diff.abs().mean()))
    assert m["mismatch/frac_corrected"] == pytest.approx(float((diff.exp() > 1.5).double().mean()))
    assert m["mismatch/kl_sampler_trainer"] > 0


def test_an_inexact_sampler_gets_pi_old_recomputed_and_the_mismatch_logged():
    """A sampler that says its log-probs are not the trainer's (``exact = False``, as vLLM's): the
    Trainer recomputes log pi_old, keeps the sampler's as ``sampler_logprobs``, and a corrected term
    logs the mismatch -- here transformers' generate against the trainer's recomputation: float noise."""
    import unified_rl as url
    from helpers import ROWS, TOK, has_seven, small_model
    from unified_rl.config import TrainConfig
    from unified_rl.hf import HFSampler
    from unified_rl.loop import Trainer
    from unified_rl.rewards import FromCallable

    class Separate(HFSampler):
        exact = False

    coef = C.chain(C.group_normalized(), C.corrected(C.ppo_clip(0.2), C.sampler_correction("token_truncate")), aggregation=C.token_mean(),
                   name="tis")
    cfg = TrainConfig(steps=2, questions_per_step=4, lr=1e-3, max_new_tokens=6)
    trainer = Trainer(small_model(seed=1), TOK, url.Method("tis", coef, url.data.Sampled(4)), ROWS, cfg, reward=FromCallable(has_seven),
                      sampler=Separate(eos_id=TOK.eos_token_id, pad_id=TOK.pad_token_id))
    history = trainer.run(progress=False)
    for m in history:
        assert 0 < m["mismatch/logp_diff_max"] < 1e-4 and m["mismatch/frac_corrected"] == 0.0
    r = trainer.source.sample(trainer.policy, 2)
    assert r.sampler_logprobs is not None and r.old_logprobs is None  # pi_old is the trainer's to compute
