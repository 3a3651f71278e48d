"""The transformers ModelAdapter: log pi_theta(o_t | q, o_<t) of a causal LM at completion positions.

The trunk runs once per micro-batch and the linear head goes through the core's chunked
``linear_logprobs`` (no full fp32 logits); rows that continue the same prompt run it once per
batch (prefix.py). Models whose head is not a plain linear map fall back to full logits.
Registered with the engine when ``unified_rl.hf`` is imported.
"""

from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..batching import micro_batch_views
from ..lm_head import linear_logprobs, logits_logprobs, on_mask
from ..protocols import ModelAdapter
from ..rollout import Rollout
from .lora import is_peft, unwrap
from .prefix import PrefixPlan, PromptPass, plan_shared_prefix, supports_shared_prefix

# Configs whose head is not a plain linear map of the last hidden state.
_HEAD_MODIFIERS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _split_head(model: nn.Module) -> "tuple[nn.Module, nn.Linear] | None":
    """(trunk, lm_head) of a transformers causal LM whose logits are lm_head(last hidden)."""
    get_head = getattr(model, "get_output_embeddings", None)
    trunk = getattr(model, "base_model", None)
    head = get_head() if callable(get_head) else None
    config = getattr(model, "config", None)
    if head is None or trunk is None or trunk is model or not isinstance(head, nn.Linear):
        return None
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in _HEAD_MODIFIERS):
        return None
    return trunk, head


def completion_logprobs(
    model: nn.Module,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Bool[Tensor, "batch seq"],
    completion_mask: Bool[Tensor, "batch seq"],
    *,
    temperature: float = 1.0,
    chunk_bytes: Optional[int] = None,
    share_prefix: bool = True,
    packed: bool = False,
) -> Float[Tensor, "batch seq"]:
    """log pi(input_ids[b, t] | input_ids[b, :t]) where completion_mask, else 0; differentiable.

    Position ids follow the attention mask (cumsum - 1), as ``generate`` does, so left- or
    right-padded rows give the same values. Works with any ``transformers`` causal LM; models
    with a non-linear head (soft-capping, logit scaling) fall back to full logits. With
    ``share_prefix``, rows that share a prompt run it once (see prefix.py; Llama-like models). With
    ``packed``, the rows' real tokens run as one sequence with per-row positions (no padded token is
    computed; transformers' packed-sequence mask keeps the rows apart), same values.
    """
    model = unwrap(model)  # a PeftModel: the transformers model inside, adapters active
    shared = _shared_prompts(model, input_ids, attention_mask, completion_mask) if share_prefix else None
    if shared is not None:  # each distinct prompt once, its KV gathered per row
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return prompt_pass_logprobs(model, PromptPass(*shared), rows, completion_mask, temperature=temperature, chunk_bytes=chunk_bytes)
    split = _split_head(model)
    run = split[0] if split is not None else model  # the trunk (last hidden states), or the whole model (logits)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
    if packed:  # positions restart per row; with no attention mask and no cache, transformers builds the packed-sequence
        # mask from the restarts (masking_utils.find_packed_sequence_indices). A row's first real token is never
        # output (Rollout checks), so each target's predictor is in its own row.
        flat_ids = input_ids[attention_mask][None]
        out = run(input_ids=flat_ids, position_ids=position_ids[attention_mask][None], use_cache=False)
        at = completion_mask[attention_mask].nonzero().squeeze(1)
        states, targets = _states(out, split)[0, at - 1], flat_ids[0, at]
    else:
        target_mask = completion_mask[:, 1:]
        out = run(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=position_ids, use_cache=False)  # no KV to keep
        states, targets = _states(out, split)[:, :-1][target_mask], input_ids[:, 1:][target_mask]
    if split is not None:
        logp = linear_logprobs(states, split[1].weight, split[1].bias, targets, temperature=temperature, chunk_bytes=chunk_bytes)
    else:
        logp = logits_logprobs(states, targets, temperature)
    return on_mask(completion_mask, logp)


def _states(out, split) -> Tensor:
    """What the head reads: the trunk's last hidden states, or the model's own logits (no split head)."""
    return out.last_hidden_state if split is not None else out.logits


def _shared_prompts(model: nn.Module, input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"],
                    completion_mask: Bool[Tensor, "batch seq"]) -> "tuple[nn.Module, PrefixPlan] | None":
    """(trunk, plan) where rows share prompts and the model can run them once (prefix.py), else None."""
    split = _split_head(model)
    if split is None or not supports_shared_prefix(model):
        return None
    plan = plan_shared_prefix(input_ids, attention_mask, completion_mask)
    return (split[0], plan) if plan is not None else None


def prompt_pass(model: nn.Module, input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"],
                completion_mask: Bool[Tensor, "batch seq"], *, max_tokens: Optional[int] = None) -> Optional[PromptPass]:
    """The batch's distinct prompts run once for all its micro-batches (see prefix.py), or None
    where ``completion_logprobs`` must run per micro-batch: no two rows share a prompt, the model
    is not Llama-like, or the prompts alone exceed ``max_tokens`` padded tokens."""
    model = unwrap(model)
    shared = _shared_prompts(model, input_ids, attention_mask, completion_mask)
    if shared is None or (max_tokens is not None and shared[1].prefix_ids.numel() > max_tokens):
        return None
    return PromptPass(*shared, split=True)


def suffix_lengths(prompts: PromptPass) -> Int[Tensor, " batch"]:
    """Tokens each row adds after its prompt: the padded size of its part of a micro-batch."""
    return prompts.plan.suffix_mask.sum(-1)


def prompt_pass_logprobs(model: nn.Module, prompts: PromptPass, rows: Int[Tensor, " rows"],
                         completion_mask: Bool[Tensor, "rows seq"], *, temperature: float = 1.0,
                         chunk_bytes: Optional[int] = None) -> Float[Tensor, "rows seq"]:
    """``completion_logprobs`` for ``rows`` of the batch ``prompts`` was made from, laid out on
    ``completion_mask`` (those rows' completion positions, any column window); differentiable."""
    hidden, completion = prompts.hidden(rows)
    head = unwrap(model).get_output_embeddings()
    targets = prompts.plan.suffix_ids[rows, : completion.shape[1]][completion]
    logp = linear_logprobs(hidden[completion], head.weight, head.bias, targets, temperature=temperature, chunk_bytes=chunk_bytes)
    if logp.numel() != int(completion_mask.sum()):
        raise ValueError(f"prompt_pass_logprobs: {logp.numel()} completion tokens in the prompt plan, "
                         f"{int(completion_mask.sum())} in completion_mask")
    return on_mask(completion_mask, logp)


class TransformersAdapter(ModelAdapter):
    """Runs any ``transformers`` PreTrainedModel (or a PEFT model around one): the chunked head,
    and the batch's distinct prompts once for all micro-batches (Llama-family models, when they
    fit in ``plan.max_tokens``; micro-batches are then cut by completion length)."""

    def accepts(self, model: nn.Module) -> bool:
        """True for transformers models, LoRA-wrapped or not."""
        return isinstance(model, PreTrainedModel) or is_peft(model)

    def passes(self, model: nn.Module, rollout: Rollout, plan, keep_groups: bool
               ) -> Iterator[tuple[Int[Tensor, " rows"], int, int, Rollout, Float[Tensor, "rows cols"]]]:
        """See :class:`~unified_rl.protocols.ModelAdapter`; the prompt pass's own backward runs when
        the last micro-batch is done."""
        prompts = prompt_pass(model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask,
                              max_tokens=plan.max_tokens) if plan.share_prefix else None
        lengths = suffix_lengths(prompts) if prompts is not None else None
        for idx, lo, hi, mb in micro_batch_views(rollout, plan.max_tokens, keep_groups, lengths):
            if prompts is not None:
                logp = prompt_pass_logprobs(model, prompts, idx, mb.completion_mask, temperature=rollout.temperature,
                                            chunk_bytes=plan.chunk_bytes)
            else:
                logp = completion_logprobs(model, mb.input_ids, mb.attention_mask, mb.completion_mask, temperature=rollout.temperature,
                                           chunk_bytes=plan.chunk_bytes, share_prefix=plan.share_prefix, packed=plan.packed)
            yield idx, lo, hi, mb, logp
        if prompts is not None:
            prompts.finish()

    def head_states(self, model: nn.Module, mb: Rollout) -> tuple[Tensor, Any, int]:
        """The trunk's last hidden states at the output positions and the linear head (LoRA: the
        adapters active); a model whose head is not linear gives its logits, with the identity."""
        inner = unwrap(model)
        split = _split_head(inner)
        position_ids = (mb.attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
        run = split[0] if split is not None else inner
        out = run(input_ids=mb.input_ids, attention_mask=mb.attention_mask.long(), position_ids=position_ids, use_cache=False)
        states = _states(out, split)[:, :-1][mb.completion_mask[:, 1:]]
        if split is None:
            return states, lambda x: x, states.shape[-1]
        head = split[1]
        return states, lambda x: F.linear(x, head.weight, head.bias), head.weight.shape[0]
