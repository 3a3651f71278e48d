"""Shared-prompt training passes: a GRPO group's G samples share one prompt, so its tokens go
through the model once and their keys/values are handed to each sample's completion.

    prefix pass   : the U distinct prompts, right-padded        -> hidden states, KV cache
    suffix pass   : each row's completion, attending to its prompt's KV (gathered per row)
    log pi(o_1)   : from the prompt's last hidden state;  log pi(o_t>1): from the suffix pass

The gather is differentiable, so the backward sums each prompt's gradient over its samples: the
same numbers as running every row in full (tested in fp64), with the prompt's forward and
backward done once per group instead of G times.

Across micro-batches (``PromptPass(..., split=True)``), the prompts run once for the whole batch:
each micro-batch's suffix pass reads the prompts' keys/values through detached leaves, whose
gradients add up over the micro-batches; ``finish()`` then back-propagates them through the
prompt pass once. Micro-batches can then be cut by completion length alone.

Under activation checkpointing in training (transformers' checkpointed layers drop a cache they
are handed, since a layer that writes it would write it again when the backward recomputes it),
the suffix pass reads the prompts' keys/values from a cache that is only read (``_PromptLayer``:
its ``update`` returns the prompt's states with the new ones appended and stores nothing), so the
layers may keep it (``_can_checkpoint_with_cache``; ``use_cache=False`` tells the model not to
start a cache of its own) and a recomputation reads what the forward read. The prompt pass is then
checkpointed as a whole: only its keys/values and last hidden states are kept, and the backward
recomputes it once.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from jaxtyping import Bool, Int
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .compat import CACHE_KWARG, output_cache
from .models import activation_checkpointing

# Architectures whose decoder layers and cache behave like Llama's (full attention, RoPE by
# position id, DynamicCache); others take the plain per-row path.
SHARED_PREFIX_MODELS = ("llama", "qwen2", "qwen3", "mistral")


@dataclass
class PrefixPlan:
    """How a right-padded batch splits into distinct prompts and per-row suffixes."""

    prefix_ids: Int[Tensor, "prompts prefix"]
    prefix_mask: Bool[Tensor, "prompts prefix"]
    prefix_len: Int[Tensor, "prompts"]
    row_prefix: Int[Tensor, "batch"]          # which prompt each row continues
    suffix_ids: Int[Tensor, "batch suffix"]
    suffix_mask: Bool[Tensor, "batch suffix"]
    suffix_completion: Bool[Tensor, "batch suffix"]


def llama_like(model: nn.Module) -> bool:
    """True for the architectures in ``SHARED_PREFIX_MODELS`` with full attention in every layer
    (no sliding window): their layers can continue any cached prefix."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SHARED_PREFIX_MODELS:
        return False
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return False
    return all(t == "full_attention" for t in (getattr(config, "layer_types", None) or ()))


def supports_shared_prefix(model: nn.Module) -> bool:
    """True for ``llama_like`` models; with activation checkpointing on in training, only where every
    checkpointed layer recomputes by torch's non-reentrant checkpoint (transformers' default), which
    back-propagates into the prompt's keys/values a layer reads without taking them as an input."""
    if not llama_like(model):
        return False
    if not (activation_checkpointing(model) and model.training):
        return True
    return all(_non_reentrant(m) for m in _checkpointing(model) if _is_layer(m))


def _checkpointing(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` with transformers' ``gradient_checkpointing`` flag set: its
    checkpointed layers, and the models around them (which turn ``use_cache`` off in training)."""
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


def _is_layer(m: nn.Module) -> bool:
    """A transformers ``GradientCheckpointingLayer``."""
    return hasattr(m, "_can_checkpoint_with_cache")


def _non_reentrant(layer: nn.Module) -> bool:
    """Whether ``layer`` checkpoints with ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``."""
    func = getattr(layer, "_gradient_checkpointing_func", None)
    return getattr(func, "func", None) is checkpoint and getattr(func, "keywords", {}).get("use_reentrant") is False


_MISSING = object()


@contextmanager
def _layers_set(layers: list[nn.Module], name: str, value: bool) -> Iterator[None]:
    """Set attribute ``name`` of each of ``layers`` to ``value`` for the duration (restored after)."""
    before = [m.__dict__.get(name, _MISSING) for m in layers]
    for m in layers:
        setattr(m, name, value)
    try:
        yield
    finally:
        for m, old in zip(layers, before):
            if old is _MISSING:
                delattr(m, name)
            else:
                setattr(m, name, old)


class _PromptLayer(DynamicLayer):
    """A cache layer holding prompts' keys/values that the suffix pass only reads: ``update``
    returns them with the new states appended and stores nothing (see the module docstring)."""

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        return torch.cat([self.keys, key_states], -2), torch.cat([self.values, value_states], -2)


def plan_shared_prefix(input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"],
                       completion_mask: Bool[Tensor, "batch seq"]) -> Optional[PrefixPlan]:
    """The split of a right-padded batch at each row's first completion token, or None when no
    two rows share a prompt (or rows are not right-padded / have no prompt token)."""
    b, seq = input_ids.shape
    lengths = attention_mask.sum(-1)
    if not bool((attention_mask == (torch.arange(seq, device=input_ids.device) < lengths[:, None])).all()):
        return None  # not right-padded
    has_completion = completion_mask.any(-1)
    start = torch.where(has_completion, completion_mask.long().argmax(-1), lengths)
    if bool((start < 1).any()):
        return None
    ids, starts = input_ids.tolist(), start.tolist()
    index: dict[tuple, int] = {}
    row_prefix = [index.setdefault(tuple(ids[i][: starts[i]]), len(index)) for i in range(b)]
    if len(index) == b:
        return None
    prompts = list(index)
    lp = max(len(p) for p in prompts)
    dev = input_ids.device
    prefix_ids = torch.zeros((len(prompts), lp), dtype=input_ids.dtype, device=dev)
    for u, p in enumerate(prompts):
        prefix_ids[u, : len(p)] = torch.tensor(p, dtype=input_ids.dtype, device=dev)
    prefix_len = torch.tensor([len(p) for p in prompts], device=dev)
    suffix_len = lengths - start
    ls = max(int(suffix_len.max()), 1)
    cols = start[:, None] + torch.arange(ls, device=dev)
    suffix_mask = torch.arange(ls, device=dev) < suffix_len[:, None]
    cols = torch.where(suffix_mask, cols, torch.zeros_like(cols))
    return PrefixPlan(prefix_ids, torch.arange(lp, device=dev) < prefix_len[:, None], prefix_len,
                      torch.tensor(row_prefix, device=dev), input_ids.gather(1, cols) * suffix_mask,
                      suffix_mask, completion_mask.gather(1, cols) & suffix_mask)


class PromptPass:
    """The distinct prompts of ``plan`` run through ``trunk`` once; ``hidden(rows)`` continues
    any subset of rows from them. With ``split``, the prompt pass's outputs are cut from the
    graph by leaves (see the module docstring) and ``finish()`` must run after the last backward."""

    def __init__(self, trunk: nn.Module, plan: PrefixPlan, split: bool = False):
        # flags set in training: lifted for the prompt pass, which runs its layers plain (some transformers
        # versions drop the cache in training even without grad); with grad, it is checkpointed as a whole
        self.checkpointed = _checkpointing(trunk) if trunk.training else []
        if self.checkpointed and torch.is_grad_enabled():
            self.outputs = list(checkpoint(self._run, trunk, plan, use_reentrant=False))
        else:
            self.outputs = self._run(trunk, plan)
        last = self.outputs[-1]
        split = split and last.requires_grad
        # a leaf for each output the trained weights reach; with LoRA on some projections only
        # (q_proj, v_proj) the first layers' keys depend on no trained weight and stay as they are
        self.inputs = [t.detach().requires_grad_() if t.requires_grad else t for t in self.outputs] if split else self.outputs
        self.trunk, self.plan, self.split = trunk, plan, split

    def _run(self, trunk: nn.Module, plan: PrefixPlan) -> list[Tensor]:
        """The prompt pass: every layer's keys and values, then each prompt's last hidden state."""
        lp = plan.prefix_ids.shape[1]
        dev = plan.prefix_ids.device
        with _layers_set(self.checkpointed, "gradient_checkpointing", False):
            out = trunk(input_ids=plan.prefix_ids, attention_mask=plan.prefix_mask.long(),
                        position_ids=torch.arange(lp, device=dev).expand_as(plan.prefix_ids), use_cache=True)
        last = out.last_hidden_state[torch.arange(len(plan.prefix_len), device=dev), plan.prefix_len - 1]
        return [t for layer in output_cache(out).layers for t in (layer.keys, layer.values)] + [last]

    def hidden(self, rows: Int[Tensor, " rows"]):
        """(hidden, completion): for ``rows`` of the batch, the hidden state that predicts each of
        their suffix positions, [rows, suffix, hidden] -- position 0 (the first completion token) is
        predicted by the prompt's last token -- and which of those positions are completion tokens."""
        p, dev = self.plan, self.plan.prefix_ids.device
        prompt = p.row_prefix[rows]
        suffix_mask = p.suffix_mask[rows]
        ls = max(int(suffix_mask.sum(-1).max()), 1)
        suffix_mask = suffix_mask[:, :ls]
        kv = self.inputs[:-1]  # differentiable gather: one prompt -> its rows
        # index_select, not kv[i][prompt]: several rows share a prompt, and indexing's backward sums
        # their gradients with index_put_(accumulate=True), whose order varies with CPU threads
        # (not bitwise reproducible); index_select's backward (index_add_) sums in a fixed order
        cache = DynamicCache(ddp_cache_data=[(kv[i].index_select(0, prompt), kv[i + 1].index_select(0, prompt)) for i in range(0, len(kv), 2)])
        for layer in cache.layers:
            layer.__class__ = _PromptLayer
        mask = torch.cat([p.prefix_mask[prompt], suffix_mask], 1)
        start = p.prefix_len[prompt]
        with _layers_set([m for m in self.checkpointed if _is_layer(m)], "_can_checkpoint_with_cache", True):
            hidden = self.trunk(input_ids=p.suffix_ids[rows, :ls], attention_mask=mask.long(),
                                position_ids=start[:, None] + torch.arange(ls, device=dev),
                                use_cache=not self.checkpointed, **{CACHE_KWARG: cache}).last_hidden_state
        last = self.inputs[-1].index_select(0, prompt)
        return torch.cat([last[:, None], hidden[:, :-1]], 1), p.suffix_completion[rows, :ls]

    def finish(self) -> None:
        """Back-propagate the gradients gathered at the leaves through the prompt pass (``split`` only)."""
        if not self.split:
            return
        pairs = [(o, i.grad) for o, i in zip(self.outputs, self.inputs) if o is not i and i.grad is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        self.outputs, self.inputs = [], []
