"""The one engine: grad J = sum_{b,t} w[b,t] * GC[b,t] * grad log pi_theta(o_t | q, o_<t).

    logp = log pi_theta at completion positions only (a ModelAdapter's micro-batch passes)
    gc   = coefficient(rollout, logp.detach())             # no grad
    loss = -sum w * gc * logp ;  loss.backward()            # parameter .grad += -grad J

Every method -- SFT, RFT, DPO, PPO, GRPO, and any composition -- goes through these lines;
nothing here knows a method's name or a model library. How a model computes log-probs is a
:class:`~unified_rl.protocols.ModelAdapter`: ``unified_rl.hf`` registers the transformers one
(chunked loss head, prompts run once per batch); any module whose forward maps
``input_ids, attention_mask, position_ids`` to logits works through :class:`PlainAdapter`.
Log-probs are taken at the temperature the rollout was sampled at (``rollout.temperature``).
"""

import warnings
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .batching import micro_batch_views
from .lm_head import logits_logprobs, on_mask
from .precision import PRECISIONS, autocast
from .protocols import GradientCoefficient, ModelAdapter
from .rollout import Rollout
from .vocabulary_pass import HeadStates, backward_vocabulary


@dataclass(frozen=True)
class ExecutionPlan:
    """How the engine runs a pass; none of it changes the gradient.

    ``max_tokens``: padded tokens per forward call (rows bucketed by length; None: one call);
    ``chunk_bytes``: working memory of the chunked loss head (None: the device's default,
    ``lm_head.default_chunk_bytes``); ``share_prefix``: a prompt shared by
    several rows runs once (adapters that can); ``precision``: "fp32" or "bf16" autocast; ``packed``:
    a micro-batch's rows run as one sequence without padding (adapters that can; same gradient)."""

    max_tokens: Optional[int] = None
    chunk_bytes: Optional[int] = None
    share_prefix: bool = True
    precision: str = "fp32"
    packed: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise ValueError(f"ExecutionPlan.max_tokens: expected an integer >= 1 or None, got {self.max_tokens!r}")
        if self.chunk_bytes is not None and (not isinstance(self.chunk_bytes, int) or self.chunk_bytes < 1):
            raise ValueError(f"ExecutionPlan.chunk_bytes: expected an integer >= 1 or None, got {self.chunk_bytes!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"ExecutionPlan.precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class Stats:
    """What one ``backward`` computed: the surrogate loss (-J), per-token ``gc`` and ``logprobs``
    ([batch, seq], detached, 0 outside completions) and scalar metrics (see docs/metrics.md)."""

    loss: float
    gc: Float[Tensor, "batch seq"]
    logprobs: Float[Tensor, "batch seq"]
    metrics: dict[str, float] = field(default_factory=dict)


def forward_logits(model: nn.Module, mb: Rollout, hint: bool = False) -> Float[Tensor, "rows cols vocab"]:
    """``model``'s logits on a micro-batch, through its forward (where FSDP2 and PEFT hook in).
    ``hint``: the training pass, where a model returning an output object gets a one-time hint that
    its adapter (chunked head, shared prompts) is not registered."""
    position_ids = (mb.attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
    out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask.long(), position_ids=position_ids)
    if isinstance(out, Tensor):
        return out
    if hint and not _warned:
        _warned.append(type(out).__name__)
        warnings.warn(f"engine: {type(model).__name__} returns {type(out).__name__}; its full logits are used. For a transformers "
                      "model, import unified_rl.hf first: it registers the adapter with the chunked head and shared prompts", stacklevel=4)
    return out.logits


_warned: list = []  # the plain path's hint is given once per process


class PlainAdapter(ModelAdapter):
    """Any module whose ``forward(input_ids=, attention_mask=, position_ids=)`` returns logits
    ``[batch, seq, vocab]`` (or an object with ``.logits``): full logits, micro-batched by the plan."""

    def accepts(self, model: nn.Module) -> bool:
        """Always: the fallback."""
        return True

    def passes(self, model: nn.Module, rollout: Rollout, plan: ExecutionPlan, keep_groups: bool
               ) -> Iterator[tuple[Int[Tensor, " rows"], int, int, Rollout, Float[Tensor, "rows cols"]]]:
        """One full forward per micro-batch; log-probs gathered at the completion tokens."""
        for idx, lo, hi, mb in micro_batch_views(rollout, plan.max_tokens, keep_groups):
            logits = forward_logits(model, mb, hint=True)
            target = mb.completion_mask[:, 1:]
            logp = logits_logprobs(logits[:, :-1][target], mb.input_ids[:, 1:][target], mb.temperature)
            yield idx, lo, hi, mb, on_mask(mb.completion_mask, logp)

    def head_states(self, model: nn.Module, mb: Rollout) -> HeadStates:
        """The logits at the output positions themselves, and the identity as the head."""
        logits = forward_logits(model, mb)
        return logits[:, :-1][mb.completion_mask[:, 1:]], lambda x: x, logits.shape[-1]


_ADAPTERS: list[ModelAdapter] = []


def register_adapter(adapter: ModelAdapter) -> None:
    """Put ``adapter`` first in line: the engine runs a model with the first adapter that accepts it."""
    if adapter not in _ADAPTERS:
        _ADAPTERS.insert(0, adapter)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The registered adapter that accepts ``model``, else :class:`PlainAdapter`. The engine never
    imports a model library: ``unified_rl.hf`` registers the transformers adapters when it is
    imported (any of its helpers), the caller registers its own with :func:`register_adapter`."""
    return next((a for a in _ADAPTERS if a.accepts(model)), PlainAdapter())


def backward(model: nn.Module, rollout: Rollout, coefficient: GradientCoefficient, plan: ExecutionPlan = ExecutionPlan(),
             models: Optional[Mapping[str, nn.Module]] = None) -> Stats:
    """Accumulate parameter ``.grad`` += -grad J for a prepared rollout; return :class:`Stats`.

    ``rollout`` must have ``weights`` (run ``coefficient.prepare`` first). ``plan`` says how the
    passes run (micro-batch budget, loss-head chunk, shared prompts, precision); same gradient.
    A coefficient's terms over the vocabulary (``coefficient.vocabulary``) run in a pass of their
    own (``vocabulary_pass``), reading the distributions of ``models`` (``{"teacher": ...}``)."""
    if rollout.weights is None:
        raise ValueError("engine.backward: Rollout.weights is None; call coefficient.prepare(rollout) first")
    gc_full = torch.zeros(rollout.input_ids.shape, dtype=torch.float64, device=rollout.input_ids.device)
    logp_full = torch.zeros_like(gc_full)
    loss_sum = torch.zeros((), dtype=torch.float64, device=gc_full.device)  # read once at the end: no wait per micro-batch
    extra = {}
    adapter = adapter_for(model)
    with autocast(model, plan.precision, backward=True):
        defer = {"reduce": False} if coefficient.vocabulary and hasattr(adapter, "vocabulary_passes") else {}  # one reduction, at the end
        for idx, lo, hi, mb, logp in (adapter.passes(model, rollout, plan, keep_groups=coefficient.couples_group, **defer)
                                      if coefficient.sampled else ()):
            with torch.no_grad():
                gc = coefficient(mb, logp.detach())
            bad = mb.completion_mask & ~torch.isfinite(gc)
            if bool(bad.any()):
                b, t = bad.nonzero()[0].tolist()
                raise FloatingPointError(f"engine.backward: gradient coefficient is {gc[b, t].item()} at sample {int(idx[b])}, position {lo + t}")
            loss = -(mb.weights.to(logp.dtype) * gc.to(logp.dtype) * logp).sum()
            loss.backward()
            loss_sum += loss.detach().double()
            gc_full[idx, lo:hi] = gc.detach().to(gc_full.dtype)
            logp_full[idx, lo:hi] = logp.detach().to(gc_full.dtype)
        loss_total = float(loss_sum)
        if coefficient.vocabulary:
            states_of = lambda m, mb: adapter_for(m).head_states(m, mb)  # noqa: E731
            vocab_loss, extra = backward_vocabulary(model, rollout, coefficient.vocabulary, plan, models or {}, states_of,
                                                    getattr(adapter, "vocabulary_passes", None))
            loss_total += vocab_loss
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    dtype = torch.promote_types(dtype, torch.float32)
    gc_full, logp_full = gc_full.to(dtype), logp_full.to(dtype)
    metrics = {"loss": loss_total, "tokens": float(rollout.num_completion_tokens), **extra}
    if rollout.num_completion_tokens and coefficient.sampled:
        metrics.update(coefficient.metrics(rollout, logp_full, gc_full))
    return Stats(loss_total, gc_full, logp_full, metrics)


def logprobs(model: nn.Module, rollout: Rollout, plan: ExecutionPlan = ExecutionPlan()) -> Float[Tensor, "batch seq"]:
    """log pi(o_t) of ``model`` for every output token of ``rollout`` (fp32, 0 elsewhere, no grad),
    at ``rollout.temperature``: fills ``old_logprobs`` / ``ref_logprobs``, e.g.
    ``rollout.replace(ref_logprobs=engine.logprobs(reference, rollout, plan))``."""
    out = torch.zeros(rollout.input_ids.shape, dtype=torch.float32, device=rollout.input_ids.device)
    was = model.training
    model.eval()
    try:
        with autocast(model, plan.precision), torch.inference_mode():  # ``out``, made outside, stays an ordinary tensor
            for idx, lo, hi, _, lp in adapter_for(model).passes(model, rollout, plan, keep_groups=False):
                out[idx, lo:hi] = lp.float()
    finally:
        model.train(was)
    return out


def entropies(model: nn.Module, rollout: Rollout, plan: ExecutionPlan = ExecutionPlan()) -> Float[Tensor, "batch seq"]:
    """H(pi(. | q, o_<t)) of ``model`` at every output token of ``rollout`` (fp32, 0 elsewhere, no
    grad), at ``rollout.temperature``: fills ``Rollout.entropies`` for pieces that read it (the
    top-entropy mask). One extra forward of full logits per micro-batch, made only when a piece needs it."""
    out = torch.zeros(rollout.input_ids.shape, dtype=torch.float32, device=rollout.input_ids.device)
    was = model.training
    model.eval()
    try:
        with autocast(model, plan.precision), torch.inference_mode():
            for idx, lo, hi, mb in micro_batch_views(rollout, plan.max_tokens, False):
                logits = forward_logits(model, mb)[:, :-1][mb.completion_mask[:, 1:]].float() / mb.temperature
                logp = torch.log_softmax(logits, -1)
                h = -(logp.exp() * logp).sum(-1)
                out[idx, lo:hi] = on_mask(mb.completion_mask, h).float()
    finally:
        model.train(was)
    return out
