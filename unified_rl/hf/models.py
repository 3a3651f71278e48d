"""Model builders and loaders. Nothing here downloads anything: tiny models are built from a
config; real ones load from a local folder, safetensors only, ``trust_remote_code`` off unless asked."""

import json
import os
from typing import Any, Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM


def tiny_llama(vocab_size: int, *, hidden: int = 128, layers: int = 4, heads: int = 4, intermediate: int = 384,
               max_positions: int = 128, seed: int = 0, tie: bool = False) -> LlamaForCausalLM:
    """The embedded default: a ~0.86M-parameter Llama (4 layers, width 128) for a char vocabulary."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
                      tie_word_embeddings=tie, pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def qwen2_config(vocab_size: int = 151_936, **overrides) -> Qwen2Config:
    """A Qwen2-0.5B-shaped config (24 layers, width 896, 14 heads / 2 KV heads); override any field."""
    fields = dict(vocab_size=vocab_size, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1_000_000.0)
    fields.update(overrides)
    return Qwen2Config(**fields)


def build_qwen2(config: Qwen2Config, seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 model from ``config``."""
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def load_model(path: str, *, trust_remote_code: bool = False, dtype: Optional[torch.dtype] = None) -> PreTrainedModel:
    """Any local ``AutoModelForCausalLM`` folder; weights must be safetensors (never pickle)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model path {path!r} is not a local folder (nothing is downloaded)")
    files = os.listdir(path)
    if "config.json" not in files:
        if "adapter_config.json" in files:
            base = json.load(open(os.path.join(path, "adapter_config.json"))).get("base_model_name_or_path")
            raise ValueError(f"model folder {path!r} holds a LoRA adapter (adapter_config.json), not a model: give its base model "
                             f"({base!r} when it was saved) as --model, or save the adapter merged into it (train --merge)")
        raise ValueError(f"model folder {path!r} has no config.json: not a transformers model folder")
    if not any(f.endswith(".safetensors") for f in files):
        raise ValueError(f"model folder {path!r} has no .safetensors weights; pickled weights are never loaded")
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code,
                                                 local_files_only=True, dtype=dtype)
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            bad = int((~torch.isfinite(p)).sum())
            raise ValueError(f"model folder {path!r}: parameter {name} holds {bad} NaN or infinite value(s); its weights are damaged")
    return model


def load_tokenizer(path: str, *, trust_remote_code: bool = False, pad_token: Optional[str] = None):
    """A tokenizer from a local folder, checked for pad and eos tokens; ``pad_token``: an existing
    token to pad with (see :func:`set_pad_token`), for a tokenizer that has none."""
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    if pad_token is not None:
        set_pad_token(tok, pad_token)
    check_tokenizer(tok)
    return tok


def set_pad_token(tok: Any, pad_token: str) -> None:
    """Make an existing token of ``tok`` its pad token (nothing is added to the vocabulary, so the
    model's embeddings stay as they are); a text that is not one token is an error."""
    if pad_token not in tok.get_vocab():
        ids = tok(pad_token, add_special_tokens=False).input_ids
        raise ValueError(f"--pad-token {pad_token!r} is not a token of this tokenizer (it encodes to {len(ids)} tokens); "
                         f"use an existing one such as its eos token {tok.eos_token!r}")
    tok.pad_token = pad_token


def check_vocabulary(model: Any, tok: Any) -> None:
    """Every token id of ``tok`` has a row in ``model``'s input embeddings (a tokenizer that added
    a token, e.g. a pad token it lacked, indexes past them)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tok) > rows:
        beyond = {i: t for t, i in tok.get_vocab().items() if i >= rows}
        named = ", ".join(f"{i} {t!r}" for i, t in sorted(beyond.items())[:3])
        pad = " (the pad token: pass --pad-token with one of the model's own tokens, e.g. its eos token)" if tok.pad_token_id in beyond else ""
        raise ValueError(f"the tokenizer has {len(tok)} tokens but the model's embeddings have {rows} rows: token(s) {named} have none"
                         f"{pad}; use the model's own tokenizer or resize the embeddings")


def check_teacher(student: Any, student_tok: Any, teacher: Any, teacher_tok: Any) -> None:
    """A teacher distillation can compare with the student token by token: the same tokenizer (every
    token at the same id), and heads that differ at most by padding rows past its tokens (the
    engine drops or zero-fills those: ``vocabulary_pass.fit_vocabulary``). One-line errors otherwise."""
    mine, theirs = student_tok.get_vocab(), teacher_tok.get_vocab()
    if mine != theirs:
        token = next((t for t in sorted(set(mine) | set(theirs)) if mine.get(t) != theirs.get(t)), None)
        at = lambda ids: f"id {ids[token]}" if token in ids else "absent"  # noqa: E731
        raise ValueError(f"the teacher's tokenizer differs from the student's: token {token!r} is {at(mine)} in the student's and "
                         f"{at(theirs)} in the teacher's; distillation compares the two distributions token by token, so both must "
                         "use one tokenizer")
    rows = [m.get_output_embeddings().weight.shape[0] for m in (student, teacher)]
    if min(rows) < len(student_tok):
        raise ValueError(f"the student's head has {rows[0]} rows and the teacher's {rows[1]}, but the tokenizer has {len(student_tok)} "
                         "tokens: a head must have a row for every token")


def check_tokenizer(tok) -> None:
    """Raise if the tokenizer has no pad or no eos token."""
    if tok.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tok).__name__} has no pad token; set tokenizer.pad_token (e.g. to its eos token "
                         f"{tok.eos_token!r}) first, or pass --pad-token {tok.eos_token!r} on the command line")
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tok).__name__} has no eos token; completions could never end")


def save_model(model: Any, tokenizer: Any, folder: str, state_dict: Optional[dict] = None) -> str:
    """``model`` and ``tokenizer`` as a transformers folder (safetensors), without transformers'
    "Writing model shards" progress bar; returns the folder. ``state_dict``: the weights to write
    instead of the model's own (e.g. an FSDP2 model's gathered ones, ``full_state``)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(folder)
    finally:
        if was:
            hf_logging.enable_progress_bar()
    return folder


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute each decoder layer's activations in the backward (non-reentrant checkpointing):
    less memory, the same gradient. Works on a LoRA model too (its transformers model inside)."""
    from .lora import unwrap

    inner = unwrap(model)
    if hasattr(type(inner), "activation_checkpointing_enable"):  # transformers >= 5.x's name
        inner.activation_checkpointing_enable({"use_reentrant": False})
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def activation_checkpointing(model: Any) -> bool:
    """Whether ``model`` (or the transformers model inside a LoRA model) checkpoints its layers."""
    from .lora import unwrap

    inner = unwrap(model)
    flag = "is_activation_checkpointing" if hasattr(type(inner), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(inner, flag, False))
