"""Every method trains through the same loop on a tiny transformers model: the loss is finite,
parameters move, and for RFT / Online RFT / GRPO the policy's own reward rises."""

import copy
import dataclasses

import pytest
import torch

from unified_rl import methods
from unified_rl.apps.recipe import method_settings
from unified_rl.config import TrainConfig
from unified_rl.data import Encoder
from unified_rl.hf.sampling import generate
from unified_rl.loop import Trainer
from unified_rl.rewards import FromCallable, ProcessReward
from helpers import ROWS, TOK, has_seven, registered, seven_steps, small_model, teacher_for

def policy_reward(model, n=64):
    """Mean reward of the policy's own samples on fixed prompts (fixed sampling seed)."""
    enc = Encoder(TOK)
    gen = generate(model, [enc.prompt(r) for r in ROWS[:16]], group_size=n // 16, max_new_tokens=6, eos_id=1, pad_id=0,
                   generator=torch.Generator().manual_seed(123))
    return sum(has_seven(None, [TOK.decode(c, skip_special_tokens=True) for c in gen.completion_ids])) / n


from unified_rl.methods import REGISTRY  # noqa: E402

PREFERENCE = ("dpo", "ipo", "hinge", "simpo", "orpo", "online_dpo")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_trains_through_the_loop(name):
    model = small_model()
    start = copy.deepcopy(model.state_dict())
    cfg = TrainConfig(steps=3, questions_per_step=4, lr=1e-3, max_new_tokens=40, mu=2 if name == "ppo" else 1)
    reward = None if name == "sft" else ProcessReward(TOK, seven_steps) if name == "grpo_process" else FromCallable(has_seven)
    method = registered(name, max_new_tokens=40, group_size=4)
    trainer = Trainer(model, TOK, method, ROWS, cfg, reward=reward, **teacher_for(method))
    history = trainer.run(progress=False)
    assert len(history) == 3
    for m in history:
        assert all(v == v and abs(v) != float("inf") for v in m.values() if isinstance(v, float)), m
    moved = sum(float((p - start[k]).abs().sum()) for k, p in model.state_dict().items())
    assert moved > 0
    if name == "ppo":
        assert "value/loss" in history[-1]
    if name in PREFERENCE:
        assert "dpo/accuracy" in history[-1]


@pytest.mark.parametrize("name", ["rft", "online_rft", "grpo", "dr_grpo", "dapo", "bnpo", "gspo", "luspo", "cispo", "sapo", "rloo",
                                  "reinforce_pp"])
def test_reward_rises_over_a_short_run(name):
    model = small_model(seed=1)
    before = policy_reward(model)
    cfg = TrainConfig(steps=25, questions_per_step=8, lr=3e-3, max_new_tokens=6)
    Trainer(model, TOK, registered(name, max_new_tokens=6, group_size=8, beta=0.0), ROWS, cfg, reward=FromCallable(has_seven)).run(progress=False)
    after = policy_reward(model)
    assert after > before + 0.1, (before, after)


def test_iterative_grpo_resets_reference_and_retrains_reward_model():
    from unified_rl.apps.tasks import extract_answer
    from unified_rl.hf import tiny_reward_model
    from unified_rl.rewards import ModelReward, OutcomeReward

    model = small_model()
    rm = ModelReward(tiny_reward_model(len(TOK), hidden=32, layers=1), TOK, labeler=OutcomeReward(extract_answer))
    cfg = TrainConfig(steps=2, iterations=3, questions_per_step=4, lr=1e-3, max_new_tokens=40)
    trainer = Trainer(model, TOK, methods.grpo(group_size=4), ROWS, cfg, reward=rm)
    trainer.run(progress=False)
    assert trainer.iteration == 3
    assert len(rm.history) == 2 * 2 * 16  # two finished iterations of 2 steps x 16 samples went to the reward model
    # pi_ref <- pi_theta at the start of each iteration: the first step of each has KL exactly 0
    kl = [m["kl/k3"] for m in trainer.history]
    assert kl[0] == kl[2] == kl[4] == 0.0 and kl[1] > 0 and kl[3] > 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"grpo: group_size \(G\) must be >= 2"):
        methods.build("grpo", group_size=1)
    with pytest.raises(ValueError, match=r"config field 'lr' = -0.1: must be a finite number > 0"):
        TrainConfig(lr=-0.1)
    with pytest.raises(ValueError, match=r"config field 'schedule' = 'cosin': choose one of constant, cosine, linear"):
        TrainConfig(schedule="cosin")
    with pytest.raises(ValueError, match=r"config field 'beta' = -1: must be a finite number >= 0"):
        method_settings({"method": "grpo", "beta": -1})
    with pytest.raises(ValueError, match=r"method 'reinforce': unknown method"):
        method_settings({"method": "reinforce"})
    with pytest.raises(ValueError, match=r"unknown field 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().optim.lr = 1.0  # a part is frozen: a run's settings cannot drift under it


def test_no_learning_signal_is_said_out_loud(caplog):
    """An untrained model on a reward it never earns: every group's rewards are equal, step after
    step; the Trainer says so once, after NO_SIGNAL_STEPS steps, and logs the fraction per step."""
    import logging

    from unified_rl.step_metrics import NO_SIGNAL_STEPS

    cfg = TrainConfig(steps=NO_SIGNAL_STEPS + 2, questions_per_step=2, max_new_tokens=4)
    never = FromCallable(lambda prompts, completions, **_: [0.0] * len(completions))
    trainer = Trainer(small_model(), TOK, methods.grpo(beta=0.0, group_size=2), ROWS, cfg, reward=never)
    with caplog.at_level(logging.WARNING, logger="unified_rl"):
        history = trainer.run(progress=False)
    warnings = [r.message for r in caplog.records if "nothing is learnt" in r.message]
    assert len(warnings) == 1 and warnings[0].startswith(f"step {NO_SIGNAL_STEPS}:") and "[0.0]" in warnings[0]
    assert all(m["reward/groups_with_signal"] == 0.0 for m in history)
    mixed = FromCallable(lambda prompts, completions, **_: [float(i % 2) for i in range(len(completions))])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unified_rl"):
        history = Trainer(small_model(), TOK, methods.grpo(beta=0.0, group_size=2), ROWS, cfg, reward=mixed).run(progress=False)
    assert not [r for r in caplog.records if "nothing is learnt" in r.message]
    assert all(m["reward/groups_with_signal"] == 1.0 for m in history)


def test_a_method_setting_has_one_home():
    """The first-hour trap of two places for one number is gone: the run's configuration refuses the
    method's settings, and a recipe's settings reach the method's pieces (or are refused by name)."""
    for key in ("method", "group_size", "beta", "epsilon", "dpo_beta"):
        with pytest.raises(ValueError, match=f"config: '{key}' belongs to the method, not the run"):
            TrainConfig(**{key: 1})
    dapo = methods.build("dapo", group_size=4, beta=0.01, epsilon=0.1)
    clip, kl = dapo.coefficient.terms
    assert (clip.epsilon_low, kl.beta, dapo.data_source.samples_per_question) == (0.1, 0.01, 4)
    assert methods.build("ipo", dpo_beta=0.5).coefficient.terms[0].beta == 0.5
    with pytest.raises(ValueError, match=r"method 'gspo' has no setting 'dpo_beta' \(it takes group_size, beta, epsilon\)"):
        methods.build("gspo", dpo_beta=0.5)
    with pytest.raises(ValueError, match=r"method 'sft' has no setting 'group_size' \(it takes none\)"):
        methods.build("sft", group_size=4)
