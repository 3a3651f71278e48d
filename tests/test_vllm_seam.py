"""The vLLM sampler's seam, without an engine: the weights it would receive (a LoRA policy's adapters
folded in, nothing changed), the correction the config composes in, and the errors a user meets
before anything starts. The engine itself is tested in test_vllm.py where vLLM installs."""

import copy
import importlib.util

import pytest
import torch

import unified_rl.coefficients as C
from unified_rl.apps.tasks import char_tokenizer
from unified_rl.config import TrainConfig
from unified_rl.hf import add_lora, make_sampler
from unified_rl.hf.vllm_sampler import engine_weights
from unified_rl.methods import build, with_sampler_correction
from helpers import random_rollout, tiny_model, with_policy_logprobs

TOK = char_tokenizer()


def test_engine_weights_of_a_plain_policy_are_its_parameters():
    model = tiny_model(0)
    got = dict(engine_weights(model))
    assert got.keys() == dict(model.named_parameters()).keys()
    assert all(torch.equal(got[k], p) for k, p in model.named_parameters())


def test_engine_weights_fold_lora_adapters_in_and_leave_them_as_they_are():
    base = tiny_model(0)
    names = dict(base.named_parameters()).keys()
    model = add_lora(tiny_model(0), r=2, targets="all-linear")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = dict(engine_weights(model))
    merged = dict(copy.deepcopy(model).merge_and_unload().named_parameters())  # peft's own merge
    assert got.keys() == names == merged.keys()
    for k in names:
        torch.testing.assert_close(got[k], merged[k], rtol=0, atol=1e-12, msg=k)
    assert any(not torch.equal(got[k], p) for k, p in base.named_parameters())  # the adapters count
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing merged in place


def corrected(name="grpo", mode="auto", c_max=2.0, exact=True):
    """The method as the Trainer runs it: with the correction the run's sampling settings ask for."""
    return with_sampler_correction(build(name, max_new_tokens=48), mode, c_max, exact)


def kinds(**kw):
    return [type(t).__name__ for t in corrected(**kw).coefficient.terms]


def test_the_run_composes_the_correction_into_online_methods():
    assert kinds(exact=False) == ["Corrected", "KL"] and kinds() == ["PPOClip", "KL"]  # auto: a sampler that is another engine
    term = corrected(exact=False).coefficient.terms[0]
    assert (term.correction.mode, term.correction.c_max, term.correction.c_min) == ("token_truncate", 2.0, None)
    mask = corrected("ppo", "sequence_mask", 3.0).coefficient.terms[0]
    assert (type(mask).__name__, mask.correction.mode, mask.correction.c_max) == ("Corrected", "sequence_mask", 3.0)
    assert kinds(name="sft", exact=False) == kinds(name="sft")  # offline: nothing to weigh
    twice = with_sampler_correction(corrected(exact=False), "auto", 2.0, False)
    assert twice.coefficient == corrected(exact=False).coefficient  # terms already corrected are left as they are
    with pytest.raises(ValueError, match="method 'dpo': a sampler correction .* does not sample online"):
        corrected("dpo", "token_mask")


def test_the_composed_correction_is_the_hand_built_one():
    """``with_correction`` is a composition: its GC equals the chain written by hand, exactly."""
    auto = corrected(exact=False).coefficient
    hand = C.chain(C.group_normalized(), C.corrected(C.ppo_clip(0.2), C.sampler_correction("token_truncate", c_max=2.0)),
                   C.kl_k3(0.04), aggregation=C.sequence_mean())
    model = tiny_model(1)
    r = with_policy_logprobs(model, random_rollout(3, n_groups=3, group_size=3), 3)
    g = torch.Generator().manual_seed(0)
    r = r.replace(sampler_logprobs=torch.where(r.completion_mask, r.old_logprobs + 0.5 * torch.randn(r.input_ids.shape, generator=g,
                                                                                                       dtype=torch.float64), 0.0))
    logp = r.old_logprobs + 0.01
    a, b = auto.prepare(r), hand.prepare(r)
    assert torch.equal(auto(a, logp), hand(b, logp))
    assert auto.metrics(a, logp, auto(a, logp))["mismatch/frac_corrected"] > 0  # the bound bites on this batch


@pytest.mark.parametrize("field,value,says", [
    ("sampler_correction", "tis", "choose one of auto, none, token_truncate"),
    ("sampler_correction_max", 0, "must be a finite number > 0"),
    ("vllm_gpu_memory_utilization", 1.5, "must be a fraction in (0, 1]"),
    ("vllm_max_model_len", 0, "must be a positive integer"),
    ("vllm_sync_every", 0, "must be a positive integer"),
])
def test_bad_vllm_settings_are_named(field, value, says):
    with pytest.raises(ValueError, match=rf"config field '{field}' = {value!r}: {__import__('re').escape(says)}"):
        TrainConfig(**{field: value})


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_sampler_says_how_to_install_it():
    with pytest.raises(ValueError, match=r"--sampler vllm needs vLLM, which is not installed; pip install \"unified_rl\[vllm\]\""):
        make_sampler("vllm", TOK)
