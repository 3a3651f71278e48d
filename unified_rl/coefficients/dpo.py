"""DPO and its siblings as gradient coefficients (DeepSeekMath App. A.1.4; Rafailov et al. 2023).

For a pair (o+, o-) of the same question:
    l(o) = u(o) * sum_t log(pi(o_t) / pi_ref(o_t)),  u = 1/|o| (paper, length-normalised) or 1 (original)
    m = l(o+) - l(o-),  loss f(m):
        sigmoid (DPO)  -log sigmoid(beta m)           hinge (SLiC)  max(0, 1 - beta m)
        ipo            (m - 1 / (2 beta))^2           simpo         -log sigmoid(beta m - gamma), no pi_ref
    GC = -f'(m) on o+ tokens,  +f'(m) on o- tokens   (DPO: +-beta sigmoid(-beta m)).
The 1/|o| (or 1) and the 1/#pairs live in the aggregation weights (``group_mean``), so the
objective is J = sum_pairs c_p log sigmoid(z_p) with c_p read from those weights, and
dJ/dlogp = w * GC exactly. A token's GC reads its partner's log-probs: ``couples_group``.
"""

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from ._groups import group_index
from .pieces import Term
from .terms import masked


Loss = Literal["sigmoid", "ipo", "hinge", "simpo"]
LOSSES: tuple[str, ...] = get_args(Loss)


def check_pairs(rollout: Rollout, who: str) -> None:
    """Every group of ``rollout`` is a pair: exactly 2 sequences, one of them chosen (a ValueError
    naming ``who``, the pair and a sample otherwise)."""
    idx, k = group_index(rollout.group_ids)
    n = torch.bincount(idx, minlength=k)
    n_chosen = torch.bincount(idx, weights=rollout.chosen.double(), minlength=k)
    for bad, what in ((n != 2, "sequence(s); a pair needs exactly 2"), (n_chosen != 1, "chosen; a pair needs exactly 1 chosen and 1 rejected")):
        if bool(bad.any()):
            g = int(bad.nonzero()[0, 0])
            row = int((idx == g).nonzero()[0, 0])
            count = int(n[g]) if "sequence" in what else int(n_chosen[g])
            raise ValueError(f"{who}: pair {int(rollout.group_ids[row])} (sample {row}) has {count} {what}")


@dataclass(frozen=True)
class DPOTerm(Term):
    """A pairwise preference loss f(m) on the margin m (see the module docstring)."""

    beta: float = 0.1
    length_normalized: bool = True
    loss: Loss = "sigmoid"
    gamma: float = 0.0
    couples_group = True

    @property
    def needs(self) -> frozenset:
        return frozenset({"group_ids", "chosen"} | (set() if self.loss == "simpo" else {"ref_logprobs"}))

    @property
    def label(self) -> str:
        return "dpo()" if self.loss == "sigmoid" else f"{self.loss}(beta={self.beta})"

    @property
    def formula(self) -> str:
        b = f"{self.beta:g}"
        slope = {"sigmoid": rf"{b}\,\sigma(-{b} m)", "ipo": rf"2(\tfrac{{1}}{{2 \cdot {b}}} - m)",
                 "hinge": rf"{b}\,\mathbb{{1}}[{b} m < 1]", "simpo": rf"{b}\,\sigma({self.gamma:g} - {b} m)"}[self.loss]
        ell = r"\log\pi" if self.loss == "simpo" else r"\log\frac{\pi}{\pi_{ref}}"
        mean = r"\mathrm{mean}_t" if self.length_normalized else r"\sum_t"
        return rf"\pm {slope},\ m = {mean}{ell}(o^+) - {mean}{ell}(o^-)"

    def f(self, m: Tensor) -> Tensor:
        """The per-pair loss."""
        b = self.beta
        return {"sigmoid": lambda: -F.logsigmoid(b * m), "ipo": lambda: (m - 1 / (2 * b)) ** 2,
                "hinge": lambda: torch.relu(1 - b * m), "simpo": lambda: -F.logsigmoid(b * m - self.gamma)}[self.loss]()

    def slope(self, m: Tensor) -> Tensor:
        """df/dm."""
        b = self.beta
        return {"sigmoid": lambda: -b * torch.sigmoid(-b * m), "ipo": lambda: 2 * (m - 1 / (2 * b)),
                "hinge": lambda: torch.where(b * m < 1, torch.full_like(m, -b), torch.zeros_like(m)),
                "simpo": lambda: -b * torch.sigmoid(self.gamma - b * m)}[self.loss]()

    def check(self, rollout: Rollout) -> None:
        check_pairs(rollout, "dpo()")

    def _parts(self, rollout: Rollout, logp: Tensor):
        lengths = rollout.completion_lengths.to(logp.dtype)
        u = torch.where(lengths > 0, 1.0 / lengths.clamp(min=1), torch.zeros_like(lengths)) if self.length_normalized else torch.ones_like(lengths)
        ref = rollout.ref_logprobs.to(logp.dtype) if self.loss != "simpo" else torch.zeros_like(logp)
        ell = (masked(rollout, logp - ref)).sum(-1) * u
        sign = rollout.chosen.to(logp.dtype) * 2 - 1
        idx, k = group_index(rollout.group_ids)
        margin = torch.zeros(k, dtype=logp.dtype, device=logp.device).index_add_(0, idx, sign * ell)
        z = margin[idx]  # per sequence: its pair's margin m
        w_seq = rollout.weights.to(logp.dtype).amax(-1) * (lengths if self.length_normalized else 1.0)
        # c_p: the pair's weight (equal for both members under group_mean); 0 if either is empty.
        c = torch.full((k,), float("inf"), dtype=logp.dtype, device=logp.device).scatter_reduce_(0, idx, w_seq, "amin")[idx]
        return z, sign, c

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        z, sign, c = self._parts(rollout, logp)
        return (torch.where(rollout.chosen, -c * self.f(z), torch.zeros_like(z))).sum()

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        z, sign, c = self._parts(rollout, logp)
        per_seq = torch.where(c > 0, -sign * self.slope(z), torch.zeros_like(z))
        return masked(rollout, per_seq[:, None].expand_as(logp))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        z, _, _ = self._parts(rollout, logp)
        zc = z[rollout.chosen]
        return {"dpo/loss": float(self.f(zc).mean()), "dpo/accuracy": float((zc > 0).double().mean()), "dpo/margin": float(zc.mean())}


def dpo_term(beta: float = 0.1, length_normalized: bool = True, loss: str = "sigmoid", gamma: float = 0.0) -> DPOTerm:
    """The pairwise term with coefficient ``beta``: ``loss`` "sigmoid" (DPO), "ipo", "hinge" or
    "simpo" (reference-free, margin ``gamma``); ``length_normalized`` is the 1/|o| form (pair it
    with ``group_mean(length_normalized)``)."""
    if not beta > 0:
        raise ValueError(f"{loss}: beta must be > 0, got {beta}")
    if loss not in LOSSES:
        raise ValueError(f"dpo_term: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return DPOTerm(beta, length_normalized, loss, gamma)
