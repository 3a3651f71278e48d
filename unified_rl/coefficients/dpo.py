"""DPO as a gradient coefficient (DeepSeekMath App. A.1.4; Rafailov et al. 2023).

For a pair (o+, o-) of the same question:
    l(o) = u(o) * sum_t log(pi(o_t) / pi_ref(o_t)),  u = 1/|o| (paper, length-normalised) or 1 (original)
    z = beta (l(o+) - l(o-)),   loss = -log sigmoid(z)
    GC = +beta sigmoid(-z) on o+ tokens,  -beta sigmoid(-z) on o- tokens.
The 1/|o| (or 1) and the 1/#pairs live in the aggregation weights (``group_mean``), so the
objective is J = sum_pairs c_p log sigmoid(z_p) with c_p read from those weights, and
dJ/dlogp = w * GC exactly. A token's GC reads its partner's log-probs: ``couples_group``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from ._groups import group_index
from .pieces import Term
from .terms import masked


@dataclass(frozen=True)
class DPOTerm(Term):
    beta: float = 0.1
    length_normalized: bool = True
    couples_group = True
    needs = frozenset({"group_ids", "chosen", "ref_logprobs"})
    label = "dpo()"

    def check(self, rollout: Rollout) -> None:
        idx, k = group_index(rollout.group_ids)
        n = torch.bincount(idx, minlength=k)
        n_chosen = torch.bincount(idx, weights=rollout.chosen.double(), minlength=k)
        for bad, what in ((n != 2, "sequence(s); a DPO pair needs exactly 2"), (n_chosen != 1, "chosen; a DPO pair needs exactly 1 chosen and 1 rejected")):
            if bool(bad.any()):
                g = int(bad.nonzero()[0, 0])
                row = int((idx == g).nonzero()[0, 0])
                count = int(n[g]) if "sequence" in what else int(n_chosen[g])
                raise ValueError(f"dpo(): pair {int(rollout.group_ids[row])} (sample {row}) has {count} {what}")

    def _parts(self, rollout: Rollout, logp: Tensor):
        lengths = rollout.completion_lengths.to(logp.dtype)
        u = torch.where(lengths > 0, 1.0 / lengths.clamp(min=1), torch.zeros_like(lengths)) if self.length_normalized else torch.ones_like(lengths)
        ell = (masked(rollout, logp - rollout.ref_logprobs.to(logp.dtype))).sum(-1) * u
        sign = rollout.chosen.to(logp.dtype) * 2 - 1
        idx, k = group_index(rollout.group_ids)
        margin = torch.zeros(k, dtype=logp.dtype, device=logp.device).index_add_(0, idx, sign * ell)
        z = self.beta * margin[idx]  # per sequence: its pair's z
        w_seq = rollout.weights.to(logp.dtype).amax(-1) * (lengths if self.length_normalized else 1.0)
        # c_p: the pair's weight (equal for both members under group_mean); 0 if either is empty.
        c = torch.full((k,), float("inf"), dtype=logp.dtype, device=logp.device).scatter_reduce_(0, idx, w_seq, "amin")[idx]
        return z, sign, c

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        z, sign, c = self._parts(rollout, logp)
        return (torch.where(rollout.chosen, c * F.logsigmoid(z), torch.zeros_like(z))).sum()

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        z, sign, c = self._parts(rollout, logp)
        per_seq = torch.where(c > 0, sign * self.beta * torch.sigmoid(-z), torch.zeros_like(z))
        return masked(rollout, per_seq[:, None].expand_as(logp))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        z, _, _ = self._parts(rollout, logp)
        zc = z[rollout.chosen]
        return {"dpo/loss": float(-F.logsigmoid(zc).mean()), "dpo/accuracy": float((zc > 0).double().mean()), "dpo/margin": float(zc.mean() / self.beta)}


def dpo_term(beta: float = 0.1, length_normalized: bool = True) -> DPOTerm:
    """The DPO term with coefficient ``beta``; ``length_normalized`` is the paper's 1/|o| form."""
    if not beta > 0:
        raise ValueError(f"dpo: beta must be > 0, got {beta}")
    return DPOTerm(beta, length_normalized)
