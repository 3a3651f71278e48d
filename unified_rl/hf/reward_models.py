"""Reward-model builders for transformers: sequence classifiers with one logit."""

import copy

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification


def tiny_reward_model(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> LlamaForSequenceClassification:
    """A small Llama sequence classifier (one logit) for the embedded task."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, num_labels=1, pad_token_id=0, max_position_embeddings=128,
                      use_cache=False)
    return LlamaForSequenceClassification(cfg)


def reward_model_from_policy(policy: nn.Module) -> nn.Module:
    """A sequence classifier (one logit) of the policy's architecture, its trunk initialised from the
    policy's (as reward models are initialised from the SFT model in the paper); a fresh head."""
    cfg = copy.deepcopy(policy.config)
    cfg.num_labels = 1
    cfg.use_cache = False  # a classifier scores whole sequences: a KV cache would only cost time
    if cfg.pad_token_id is None:
        raise ValueError("reward_model_from_policy: the policy config has no pad_token_id (needed to find each sequence's last token)")
    clf = AutoModelForSequenceClassification.from_config(cfg)
    clf.base_model.load_state_dict(policy.base_model.state_dict())
    weight = next(policy.parameters())
    return clf.to(device=weight.device, dtype=weight.dtype)
