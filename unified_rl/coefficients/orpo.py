"""ORPO (Hong et al. 2024) as a gradient coefficient: supervised fine-tuning on the chosen answer
plus an odds-ratio term on each pair, no reference model (TRL ``experimental.orpo.ORPOTrainer``).

    J = (1/N+) sum_{o+ tokens} log pi(o_t)  +  (beta/P) sum_pairs log sigmoid(lo),
    lo = (l+ - l-) - (log(1 - e^{l+}) - log(1 - e^{l-})),   l = mean_t log pi(o_t)

with N+ the chosen tokens of the batch and P its pairs (every rank's, under torchrun). The first
part is a policy gradient whose advantage puts 1/N+ on each chosen token (:func:`chosen_nll`);
the second is :func:`odds_ratio`, with GC = +beta sigma(-lo) / (1 - e^{l+}) on o+ tokens and
-beta sigma(-lo) / (1 - e^{l-}) on o- tokens under ``group_mean(length_normalized=True)``'s
weights 1/(P |o|). A token's GC reads its partner's log-probs: ``couples_group``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..distributed import global_sum
from ..rollout import Rollout
from ._groups import group_index
from .dpo import check_pairs
from .pieces import AdvantageEstimator, Term
from .terms import masked


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - e^x) for x < 0, stable on both sides of -log 2 (as TRL's ORPO computes it)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass(frozen=True)
class ChosenNLL(AdvantageEstimator):
    """A = 1 / (N+ w_t) on the chosen answers' tokens, 0 on the rejected ones: with the policy
    gradient term, the mean log-likelihood of every chosen token of the batch, whatever the
    aggregation's weights w (ORPO's NLL part)."""

    needs = frozenset({"chosen"})
    formula = r"\frac{\mathbb{1}[o = o^+]}{N^+ w_t}"
    label = "chosen_nll()"

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        chosen = rollout.completion_mask & rollout.chosen[:, None]
        n_chosen = global_sum(int(chosen.sum()))
        if n_chosen == 0:
            raise ValueError("chosen_nll(): the batch has no chosen completion token")
        w = rollout.weights.to(torch.float64)
        return torch.where(chosen & (w > 0), 1.0 / (n_chosen * torch.where(w > 0, w, 1.0)), 0.0)


@dataclass(frozen=True)
class OddsRatio(Term):
    """ORPO's odds-ratio term beta log sigmoid(lo) per pair (see the module docstring)."""

    beta: float = 0.1
    couples_group = True
    needs = frozenset({"group_ids", "chosen"})

    @property
    def label(self) -> str:
        return f"odds_ratio(beta={self.beta:g})"

    @property
    def formula(self) -> str:
        return rf"\pm \frac{{{self.beta:g}\,\sigma(-lo)}}{{1 - e^{{\ell^\pm}}}},\ \ell = \mathrm{{mean}}_t \log\pi"

    def check(self, rollout: Rollout) -> None:
        check_pairs(rollout, self.label)

    def _parts(self, rollout: Rollout, logp: Tensor):
        lengths = rollout.completion_lengths.to(logp.dtype)
        ell = masked(rollout, logp).sum(-1) / lengths.clamp(min=1)
        odds = ell - log1mexp(ell)  # log(p / (1 - p)) of each sequence's mean token probability
        sign = rollout.chosen.to(logp.dtype) * 2 - 1
        idx, k = group_index(rollout.group_ids)
        lo = torch.zeros(k, dtype=logp.dtype, device=logp.device).index_add_(0, idx, sign * odds)[idx]
        w_seq = rollout.weights.to(logp.dtype).amax(-1) * lengths
        c = torch.full((k,), float("inf"), dtype=logp.dtype, device=logp.device).scatter_reduce_(0, idx, w_seq, "amin")[idx]
        return ell, lo, sign, c

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        _, lo, _, c = self._parts(rollout, logp)
        return torch.where(rollout.chosen, c * self.beta * F.logsigmoid(lo), torch.zeros_like(lo)).sum()

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        ell, lo, sign, c = self._parts(rollout, logp)
        per_seq = torch.where(c > 0, sign * self.beta * torch.sigmoid(-lo) / -torch.expm1(ell), torch.zeros_like(lo))
        return masked(rollout, per_seq[:, None].expand_as(logp))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        _, lo, _, _ = self._parts(rollout, logp)
        lo = lo[rollout.chosen]  # one per pair
        return {"orpo/log_odds_ratio": float(F.logsigmoid(lo).mean()), "orpo/log_odds_chosen": float(lo.mean()),
                "dpo/accuracy": float((lo > 0).double().mean())}


def chosen_nll() -> ChosenNLL:
    """The advantage of ORPO's NLL part: 1/(N+ w) on chosen tokens, 0 on rejected ones."""
    return ChosenNLL()


def odds_ratio(beta: float = 0.1) -> OddsRatio:
    """ORPO's odds-ratio term with weight ``beta`` (TRL's ``beta``, the paper's lambda)."""
    if not beta > 0:
        raise ValueError(f"odds_ratio: beta must be > 0, got {beta}")
    return OddsRatio(beta)
