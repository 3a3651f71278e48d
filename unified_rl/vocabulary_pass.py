"""The engine's pass for terms over the vocabulary (``coefficients.vocabulary``):

    grad J = sum_t w_t sum_v C_{t,v} grad log pi(v | q, o_<t),   C = dj / d log pi

A model's adapter gives the states its head reads at the output positions (the last hidden states
and the linear head of a transformers model; the logits themselves for any other module); the
head runs on ``plan.chunk_bytes`` of fp32 logits at a time under activation checkpointing, so
C, the log-softmax and the other models' distributions (teacher, reference) exist for one chunk
only, in the forward and again in the backward. Other models run without grad, in eval mode.
"""

from typing import Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .batching import micro_batch_views
from .coefficients.vocabulary import reads_of
from .distributed import global_sum
from .lm_head import default_chunk_bytes
from .rollout import Rollout

HeadStates = tuple[Tensor, Callable[[Tensor], Tensor], int]  # (states [n, d], head: states -> logits, vocabulary size)


def fit_vocabulary(logits: Tensor, size: int) -> Tensor:
    """Another model's logits on the policy's ``size`` rows, when the two heads differ only by padding
    rows past the shared tokenizer's tokens: the other's extra rows dropped (no token has them), its
    missing rows -inf (probability 0 where the other model has no such row)."""
    if logits.shape[-1] >= size:
        return logits[..., :size]
    return torch.cat([logits, logits.new_full((*logits.shape[:-1], size - logits.shape[-1]), float("-inf"))], -1)


def _check_reads(terms: Sequence, models: Mapping[str, nn.Module]) -> frozenset:
    reads = reads_of(terms)
    for t in terms:
        for name in sorted(t.reads - set(models)):
            raise ValueError(f"engine.backward: {t.label} reads the {name}'s distribution, but no {name!r} model was given "
                             f"(models={sorted(models)}); the Trainer takes teacher= (the command line --teacher PATH)")
    return reads


def _others(models: Mapping[str, nn.Module], reads: frozenset, mb: Rollout, states_of: Callable) -> dict[str, HeadStates]:
    out = {}
    for name in sorted(reads):
        m = models[name]
        was = m.training
        m.eval()
        try:
            with torch.no_grad():
                out[name] = states_of(m, mb)
        finally:
            m.train(was)
    return out


def local_passes(model: nn.Module, rollout: Rollout, plan, states_of: Callable, micro: Callable) -> Iterator:
    """(view, micro's result) per micro-batch of one process: ``micro(states, head, vocab, idx, lo, hi, mb)``
    on the model's head states. A distributed adapter's ``vocabulary_passes`` yields the same, with
    ``micro`` run inside the wrapper's forward (so the wrapper's hooks see the head)."""
    for idx, lo, hi, mb in micro_batch_views(rollout, plan.max_tokens, keep_groups=False):
        yield mb, micro(*states_of(model, mb), idx, lo, hi, mb)


def backward_vocabulary(model: nn.Module, rollout: Rollout, terms: Sequence, plan, models: Mapping[str, nn.Module],
                        states_of: Callable[[nn.Module, Rollout], HeadStates], passes: Optional[Callable] = None
                        ) -> tuple[float, dict[str, float]]:
    """Accumulate ``.grad`` += -grad J of the vocabulary ``terms`` on a prepared ``rollout``; returns
    -J (their objective, as a loss), each term's ``{name}/mean`` (its j over output tokens) and
    ``entropy/exact``, the policy's mean entropy (which each term then ``observe``s). A term with an
    ``aggregation`` of its own is weighted by it, else by the rollout's weights.
    ``states_of(model, micro_batch)``: the adapter's head states (see the module docstring);
    ``passes(model, rollout, plan, micro)``: the adapter's own micro-batch loop (a distributed
    wrapper's), default :func:`local_passes`."""
    reads = _check_reads(terms, models)
    full = torch.stack([(t.aggregation(rollout) if t.aggregation is not None else rollout.weights).to(torch.float64) for t in terms])

    def micro(states: Tensor, head: Callable, vocab: int, idx: Tensor, lo: int, hi: int, mb: Rollout) -> tuple[Tensor, Tensor]:
        """The micro-batch's surrogate loss (its backward is -grad J there) and [-J, sum of each j, entropy sum]."""
        target = mb.completion_mask[:, 1:]
        where = target.nonzero()  # (row, column - 1) of each output position, in the states' order
        weights = full[:, idx][:, :, lo:hi][:, :, 1:][:, target]  # [terms, n]
        others = _others(models, reads, mb, states_of)
        chunk = max(1, (plan.chunk_bytes or default_chunk_bytes(states.device)) // (4 * vocab))
        loss, values = states.new_zeros((), dtype=torch.float64), torch.zeros(len(terms) + 2, dtype=torch.float64)
        for s in range(0, states.shape[0], chunk):
            e = s + chunk
            part = {k: (st[s:e], h) for k, (st, h, _) in others.items()}

            def run(h_chunk: Tensor, s: int = s, e: int = e, part: dict = part) -> tuple[Tensor, Tensor]:
                logp = torch.log_softmax(head(h_chunk).to(torch.promote_types(h_chunk.dtype, torch.float32)) / mb.temperature, -1)
                with torch.no_grad():
                    lp = logp.detach()
                    dists = {k: torch.log_softmax(fit_vocabulary(hk(st).to(lp.dtype), vocab) / mb.temperature, -1)
                             for k, (st, hk) in part.items()}
                    w = weights[:, s:e].to(logp.dtype)
                    c = sum(w[i][:, None] * t.coefficient(lp, dists) for i, t in enumerate(terms))  # w_t C summed over terms
                    bad = ~torch.isfinite(c).all(-1)
                    if bool(bad.any()):
                        b, t = where[s + int(bad.nonzero()[0, 0])].tolist()
                        raise FloatingPointError(f"engine.backward: the vocabulary coefficient is not finite at sample {int(idx[b])}, "
                                                 f"position {lo + t + 1}")
                    js = torch.stack([t.objective(lp, dists) for t in terms] + [-(lp.exp() * lp).sum(-1)])  # and the entropy
                return -(c * logp).sum(), torch.cat([(w * js[:-1]).sum(-1), js.sum(-1)])

            surrogate, part_values = checkpoint(run, states[s:e], use_reentrant=False)
            loss = loss + surrogate
            values += torch.cat([-part_values[: len(terms)].sum()[None], part_values[len(terms):]]).double().cpu()
        return loss, values

    total, sums, count = 0.0, torch.zeros(len(terms) + 1, dtype=torch.float64), 0
    loop = passes or (lambda m, r, p, f: local_passes(m, r, p, states_of, f))
    for mb, (loss, values) in loop(model, rollout, plan, micro):
        loss.backward()
        total += float(values[0])
        sums += values[1:]
        count += int(mb.completion_mask[:, 1:].sum())
    means = (global_sum(sums) / max(global_sum(count), 1)).tolist()  # over every rank's output tokens
    metrics = {f"{t.name}/mean": means[i] for i, t in enumerate(terms)} | {"entropy/exact": means[-1]}
    for t in terms:
        metrics.update(t.observe(means[-1]))
    return total, metrics
