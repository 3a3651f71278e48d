"""Every piece: its closed-form GC equals autograd of its objective term, dJ/dlogp = w * GC (fp64)."""

import torch
from hypothesis import given, strategies as st

import unified_rl.coefficients as C
from helpers import check_gc as _check, filled as _filled

PER_TOKEN_TERMS = {
    "policy_gradient": lambda: C.policy_gradient(),
    "ppo_clip": lambda: C.ppo_clip(0.2),
    "ppo_clip_higher": lambda: C.ppo_clip(0.1, epsilon_high=0.3),
    "kl_k3": lambda: C.kl_k3(0.04),
    "kl_k3_large": lambda: C.kl_k3(1.7),
    "teacher_kl": lambda: C.teacher_kl(1.0),
    "teacher_kl_tau": lambda: C.teacher_kl(0.3),
}
AGGREGATIONS = [C.sequence_mean(), C.token_mean(), C.constant_weight(0.37), C.group_mean(True), C.group_mean(False)]


@given(seed=st.integers(0, 100_000), name=st.sampled_from(sorted(PER_TOKEN_TERMS)), agg=st.sampled_from(AGGREGATIONS))
def test_per_token_term_gc_is_gradient_of_objective(seed, name, agg):
    r, logp = _filled(seed, agg, allow_empty=True)
    _check(PER_TOKEN_TERMS[name](), r, logp)


@given(seed=st.integers(0, 100_000), beta=st.floats(0.01, 2.0), normalized=st.booleans())
def test_dpo_gc_is_gradient_of_objective(seed, beta, normalized):
    r, logp = _filled(seed, C.group_mean(normalized))
    term = C.dpo_term(beta, normalized)
    term.check(r)
    gc = _check(term, r, logp)
    assert (gc[r.completion_mask] != 0).all()


@given(seed=st.integers(0, 100_000), beta=st.floats(0.0, 1.0), eps=st.floats(0.05, 0.5))
def test_chain_gc_is_gradient_of_chain_objective(seed, beta, eps):
    """The GRPO composition: GC = A rho 1_clip + beta (kappa - 1) = d/dlogp of the Eq. 3 summand."""
    r, logp = _filled(seed, C.sequence_mean())
    chain = C.chain(None, C.ppo_clip(eps), C.kl_k3(beta), aggregation=C.sequence_mean())
    x = logp.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(chain.objective(r, x), x)
    torch.testing.assert_close(grad, r.weights * chain(r, logp), rtol=1e-12, atol=1e-15)


def test_ppo_clip_gc_by_hand():
    """A = +1, rho = e^0.3 > 1.2 -> clipped (0); A = -1, rho = e^0.3 -> kept: -e^0.3; A = +2, rho = 1 -> 2."""
    import unified_rl as url

    ids = torch.zeros(1, 4, dtype=torch.long)
    m = torch.tensor([[False, True, True, True]])
    r = url.Rollout(ids, torch.ones_like(m), m, advantages=torch.tensor([[0.0, 1.0, -1.0, 2.0]], dtype=torch.float64),
                    old_logprobs=torch.tensor([[0.0, -1.3, -1.3, -1.0]], dtype=torch.float64))
    logp = torch.tensor([[0.0, -1.0, -1.0, -1.0]], dtype=torch.float64)
    gc = C.ppo_clip(0.2).gc(r, logp)
    torch.testing.assert_close(gc, torch.tensor([[0.0, 0.0, -torch.exp(torch.tensor(0.3)).item(), 2.0]], dtype=torch.float64))


def test_kl_k3_by_hand():
    """log kappa = ref - logp = ln 2 -> D = 2 - ln 2 - 1, GC = beta (2 - 1) = beta."""
    import math

    import unified_rl as url

    ids = torch.zeros(1, 2, dtype=torch.long)
    m = torch.tensor([[False, True]])
    r = url.Rollout(ids, torch.ones_like(m), m, ref_logprobs=torch.tensor([[0.0, math.log(0.5)]], dtype=torch.float64),
                    weights=torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    logp = torch.tensor([[0.0, math.log(0.25)]], dtype=torch.float64)
    k3 = C.kl_k3(0.5)
    assert k3.gc(r, logp)[0, 1].item() == 0.5
    assert abs(k3.objective(r, logp).item() + 0.5 * (1 - math.log(2))) < 1e-15
