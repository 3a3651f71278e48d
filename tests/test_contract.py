"""The Protocols are the contract: checked where a plug-in enters, never probed afterwards."""

import copy

import pytest
import torch

import unified_rl as url
import unified_rl.coefficients as C
from unified_rl.apps.recipe import method_settings
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
from unified_rl.config import TrainConfig
from unified_rl.hf import HFSampler, StaticCacheSampler, tiny_llama
from unified_rl.loop import Trainer

TOK = char_tokenizer()
ROWS = ArithmeticTask().train_rows(32)


def has_seven(prompts, completions, **_):
    return [float("7" in c[:6]) for c in completions]


class MeanBaseline(url.GradientCoefficient):
    """Written only against the Protocol: GC = r - mean(r), one token mean over the batch."""

    needs = frozenset({"rewards"})

    def prepare(self, rollout):
        return rollout.replace(weights=rollout.completion_mask.double() / max(rollout.num_completion_tokens, 1))

    def __call__(self, rollout, logprobs):
        a = (rollout.rewards - rollout.rewards.mean()).to(logprobs.dtype)
        return torch.where(rollout.completion_mask, a[:, None], torch.zeros_like(logprobs))


def test_a_third_party_coefficient_trains_through_the_trainer():
    model = tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64)
    start = copy.deepcopy(model.state_dict())
    cfg = TrainConfig(steps=3, questions_per_step=4, lr=1e-2, max_new_tokens=8, out_dir=None)
    method = url.Method("mean_baseline", MeanBaseline(), data_source=url.data.Sampled(4))
    trainer = Trainer(model, TOK, method, ROWS, cfg, reward=url.rewards.FromCallable(has_seven))
    history = trainer.run(progress=False)
    assert len(history) == 3 and trainer.reference is None  # nothing reads ref_logprobs: no reference copy
    assert sum(float((p - start[k]).abs().sum()) for k, p in model.state_dict().items()) > 0
    assert trainer.checkpointer.state_dict()["coefficient"] == {}  # the Protocol's default hooks


def test_a_structural_coefficient_without_the_hooks_is_named():
    class Bare:
        needs = frozenset()
        couples_group = False

        def prepare(self, rollout):
            return rollout

        def __call__(self, rollout, logprobs):
            return logprobs

    with pytest.raises(TypeError, match=r"Bare does not satisfy url.GradientCoefficient: no load_state_dict, metrics, sampled, state_dict, vocabulary "
                                        r"\(subclass url.GradientCoefficient"):
        url.protocols.check_coefficient(Bare(), "method 'bare': coefficient")  # what Method and Trainer call


def test_needs_are_validated_when_a_piece_is_built():
    class Misspelt(C.Term):
        needs = frozenset({"old_logprob"})
        label = "misspelt()"

    with pytest.raises(ValueError, match=r"piece misspelt\(\): needs names 'old_logprob', which is not a Rollout field"):
        C.chain(C.group_normalized(), Misspelt(), aggregation=C.sequence_mean(), name="bad")

    class MisspeltCoefficient(MeanBaseline):
        needs = frozenset({"reward"})

    with pytest.raises(ValueError, match=r"needs names 'reward', which is not a Rollout field"):
        url.Method("bad", MisspeltCoefficient(), data_source=url.data.Sampled(2))


def test_a_method_that_reads_rewards_needs_a_reward():
    model = tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64)
    with pytest.raises(ValueError, match=r"method 'grpo' reads rewards but no reward function was given"):
        Trainer(model, TOK, url.methods.grpo(), ROWS, TrainConfig())


def test_one_registry_one_name_per_method():
    import subprocess
    import sys

    assert list(url.methods.REGISTRY) == ["sft", "rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process", "dr_grpo", "dapo", "bnpo",
                                          "gspo", "luspo", "cispo", "sapo", "rloo", "reinforce_pp", "ipo", "hinge", "simpo", "orpo", "online_dpo", "kto", "gkd", "distill", "opd"]
    from unified_rl.names import METHODS

    assert url.methods.REGISTRY is METHODS  # one table, read without torch by the command line:
    code = "import sys, unified_rl.names as n; print(len(n.METHODS), 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == ["25", "False"]
    for name in url.methods.REGISTRY:
        method = url.methods.build(name, max_new_tokens=48)
        assert method.name == name == method.coefficient.name
    with pytest.raises(ValueError, match="registered already"):
        url.methods.register("grpo", url.methods.grpo, "again")
    with pytest.raises(ValueError, match=r"'online-rft': unknown method \(did you mean 'online_rft'\?\)"):
        method_settings({"method": "online-rft"})


def test_every_registered_method_is_in_the_docs():
    import os

    docs = os.path.join(os.path.dirname(__file__), "..", "docs")
    text = open(os.path.join(docs, "paradigm.md")).read() + open(os.path.join(docs, "training.md")).read()
    for name in url.methods.REGISTRY:
        assert f"`{name}`" in text, name


def test_the_rollout_records_its_temperature_and_the_engine_reads_it():
    model = tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64).double()
    sampler = StaticCacheSampler(TOK.eos_token_id, TOK.pad_token_id)
    source = url.data.SampledSource(ROWS, url.data.Encoder(TOK), sampler, samples_per_question=2, max_new_tokens=6, temperature=0.7)
    r = source.sample(model, 2)
    assert r.temperature == 0.7
    # the sampler's recorded log-probs are the engine's at the rollout's temperature
    torch.testing.assert_close(url.engine.logprobs(model, r).double(), r.old_logprobs.double(), rtol=1e-5, atol=1e-5)
    hot = url.engine.logprobs(model, r.replace(temperature=1.0)).double()
    assert float((hot - r.old_logprobs.double()).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="Rollout.temperature: expected a finite number > 0"):
        r.replace(temperature=0.0)


@pytest.mark.parametrize("name", ["static", "hf"])
def test_both_samplers_record_the_policys_logprobs_and_repeat(name):
    model = tiny_llama(len(TOK), hidden=32, layers=2, heads=2, intermediate=64, seed=3).double()
    sampler = {"static": StaticCacheSampler, "hf": HFSampler}[name](TOK.eos_token_id, TOK.pad_token_id)
    enc = url.data.Encoder(TOK)
    prompts = [enc.prompt(r) for r in ROWS[:3]]
    gen = sampler.sample(model, prompts, 4, 10, 0.9, torch.Generator().manual_seed(5))
    again = sampler.sample(model, prompts, 4, 10, 0.9, torch.Generator().manual_seed(5))
    assert gen.completion_ids == again.completion_ids and len(gen.completion_ids) == 12
    assert all(len(c) == len(lp) and 1 <= len(c) <= 10 for c, lp in zip(gen.completion_ids, gen.logprobs))
    r = url.data.to_rollout(gen.prompt_ids, gen.completion_ids, pad_id=TOK.pad_token_id, logprobs=gen.logprobs, temperature=0.9)
    torch.testing.assert_close(url.engine.logprobs(model, r).double(), r.old_logprobs.double(), rtol=1e-5, atol=1e-5)
    greedy = sampler.sample(model, prompts, 1, 10, 0.0, None)
    other = StaticCacheSampler(TOK.eos_token_id, TOK.pad_token_id, fast_decode=False).sample(model, prompts, 1, 10, 0.0, None)
    assert greedy.completion_ids == other.completion_ids


def test_the_hf_sampler_trains_through_the_trainer():
    model = tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64)
    cfg = TrainConfig(steps=2, questions_per_step=2, max_new_tokens=6, sampler="hf")
    trainer = Trainer(model, TOK, url.methods.grpo(beta=0.0, group_size=2), ROWS, cfg, reward=url.rewards.FromCallable(has_seven))
    assert isinstance(trainer.sampler, HFSampler)
    assert len(trainer.run(progress=False)) == 2


