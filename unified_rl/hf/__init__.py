"""The one seam to transformers: loading, the log-prob adapter (chunked head, prompts once per
batch), the samplers (static-cache decoder, ``generate``), and value / reward model builders.

Importing this package registers :class:`TransformersAdapter` with the engine; a distributed
wrapper, PEFT or a vLLM sampler plugs in here, never into the core.
"""

from .. import engine
from ..critic import register_critic_builder
from .distributed_adapter import DistributedAdapter
from .distributed import LogprobModule, ddp, decoder_layers, fsdp, full_state, gathered, init_process_group, launched_by_torchrun, leave_process_group, shard, shard_trained, sharded
from .lora import adapters_off, add_lora, is_peft, load_policy_state, merged, policy_state, trainable, unwrap
from .logprobs import TransformersAdapter, completion_logprobs, prompt_pass
from .models import activation_checkpointing, enable_activation_checkpointing, build_qwen2, check_teacher, check_tokenizer, check_vocabulary, load_model, load_tokenizer, qwen2_config, save_model, tiny_llama
from .reference import BaseModel, BaseModelAdapter, Reference
from .reward_models import reward_model_from_policy, tiny_reward_model
from .sampling import SAMPLERS, HFSampler, StaticCacheSampler, generate, make_sampler
from .value import ValueModel, critic_for, value_model_from_policy

engine.register_adapter(TransformersAdapter())
engine.register_adapter(BaseModelAdapter())
engine.register_adapter(DistributedAdapter())
register_critic_builder(critic_for)

__all__ = ["TransformersAdapter", "completion_logprobs", "prompt_pass", "build_qwen2", "check_teacher", "check_tokenizer", "check_vocabulary", "load_model", "load_tokenizer", "save_model",
           "qwen2_config", "tiny_llama", "reward_model_from_policy", "tiny_reward_model", "SAMPLERS", "HFSampler", "StaticCacheSampler",
           "generate", "make_sampler", "ValueModel", "critic_for", "value_model_from_policy", "adapters_off", "add_lora", "is_peft", "load_policy_state",
           "merged", "policy_state", "trainable", "unwrap", "BaseModel", "BaseModelAdapter", "Reference", "activation_checkpointing", "enable_activation_checkpointing",
           "DistributedAdapter", "LogprobModule", "ddp", "decoder_layers", "fsdp", "full_state", "gathered", "init_process_group", "launched_by_torchrun", "leave_process_group",
           "shard", "shard_trained", "sharded"]
