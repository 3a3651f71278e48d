"""The paper figures' set-up (``apps/experiments/design.py``): the splits are what they claim, RFT's fixed pool
holds only correct samples of the frozen start and counts what it drew, the verdict reads the
interval, and a reward model's agreement with the rule on the policy's samples is measured."""

import dataclasses

import numpy as np
import torch

from unified_rl.apps.experiments.design import Design, build_data, collect_pool, verdict
from unified_rl.apps.demo import DemoSettings, sft_start
from unified_rl.apps.tasks import char_tokenizer, extract_answer, parse_problem
from unified_rl.apps.tasks.splits import ChainSplits
from unified_rl.data import Encoder, SampledSource
from unified_rl.hf import make_sampler, tiny_reward_model
from unified_rl.rewards import ModelReward, OutcomeReward


def _small() -> Design:
    d = Design.quick()
    splits = ChainSplits(sft_size=64, validation_size=32, rl_size=600, eval_size=300, sft_long_size=8)
    return dataclasses.replace(d, starts=dataclasses.replace(d.starts, splits=splits), validation_size=50)


def test_rl_validation_and_eval_are_of_the_rl_lengths_and_disjoint():
    d = _small()
    data = build_data(d)
    ops = {name: {len(parse_problem(r["prompt"]).ops) for r in rows} for name, rows in data.items()}
    assert ops["rl"] == ops["validation"] == ops["eval_in"] == {4, 5} and ops["eval_hard"] == {5, 6}
    assert ops["sft"] == {2, 3, 4} and ops["validation_sft"] == {2, 3}
    assert len(data["validation"]) == 50 and not any("completion" in r for r in data["rl"] + data["validation"])
    prompts = [r["prompt"] for rows in data.values() for r in rows]
    assert len(prompts) == len(set(prompts))


def test_the_rft_pool_is_the_frozen_starts_correct_samples(tmp_path):
    s = DemoSettings(flawed_teacher=False)
    model, _, data, shipped = sft_start(s, str(tmp_path))
    assert shipped
    d = dataclasses.replace(s.design(), steps=3, questions_per_step=4, group_size=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pool, drawn = collect_pool(model, data, d, seed=0)
    assert drawn == 3 * 4 * 4 and 0 < len(pool) < drawn  # the start solves some of these, not all
    answers = {r["prompt"]: r["answer"] for r in data["rl"]}
    for row in pool:
        assert extract_answer(row["completion"]) == answers[row["prompt"]]  # correct by the rule
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the start is not touched
    again, _ = collect_pool(model, data, d, seed=0)
    assert again == pool  # seeded


def test_figure7_never_reads_no_change_detected_as_no_change():
    from unified_rl.apps.experiments.figure7 import _verdicts

    raised = (0.05, 0.02, 0.08)
    assert _verdicts((0.0, -0.05, 0.05), raised)[1].startswith("inconclusive: no change detected")
    assert _verdicts((0.0, -0.01, 0.015), raised)[1].startswith("reproduced: Pass@K unchanged within +-2 points")
    assert _verdicts((0.03, 0.01, 0.05), raised)[1] == "not reproduced: Pass@K rose"
    assert _verdicts((0.0, -0.01, 0.015), (0.0, -0.01, 0.01))[1].startswith("inconclusive: GRPO did not raise Maj@K")


def test_verdicts_read_the_interval():
    assert verdict((0.02, 0.001, 0.04)).startswith("reproduced")
    assert verdict((-0.02, -0.04, -0.001)).startswith("not reproduced")
    assert verdict((0.02, -0.001, 0.04)).startswith("inconclusive")


def test_a_reward_models_agreement_with_the_rule_on_policy_samples_is_logged(tmp_path):
    tok = char_tokenizer()
    policy, _, data, _ = sft_start(DemoSettings(flawed_teacher=False), str(tmp_path))
    src = SampledSource(data["eval_in"][:8], Encoder(tok), make_sampler("static", tok), samples_per_question=4, max_new_tokens=64, seed=0)
    rollout = src.sample(policy, 8)
    rule = OutcomeReward(extract_answer)
    rm = ModelReward(tiny_reward_model(len(tok), hidden=32, layers=1), tok, labeler=rule)
    scored = rm(rollout, rollout.texts)
    labels = rule(rollout, rollout.texts).rewards.tolist()
    assert 0 < sum(labels) < len(labels)  # some correct, some not: agreement is not just a base rate
    rm.observe(scored)
    expected = float(np.mean([(r > 0.5) == (y > 0.5) for r, y in zip(scored.rewards.tolist(), labels)]))
    m = rm.metrics()
    assert m["reward_model/policy_accuracy"] == expected
    assert m["reward_model/policy_label_rate"] == float(np.mean([y > 0.5 for y in labels]))
    assert len(rm.pending) == 32


def test_the_tuning_key_covers_what_the_first_pair_depends_on_and_not_the_seed_counts():
    from unified_rl.apps.experiments.figure5_lr import design_key

    d = Design()
    assert design_key(dataclasses.replace(d, sft_seeds=5, rl_seeds=1)) == design_key(d)
    for change in (dict(lr_grid=(1e-4,)), dict(steps=50), dict(rl_ops=(5, 6)), dict(starts=dataclasses.replace(d.starts, sft_lr=3e-4))):
        assert design_key(dataclasses.replace(d, **change)) != design_key(d), change


def test_process_vs_outcome_rl_questions_and_evaluation_are_5_to_6_steps_and_its_sft_holds_4_to_5():
    from unified_rl.apps.experiments.process_vs_outcome import ProcessVsOutcome

    d = ProcessVsOutcome().design
    d = dataclasses.replace(d, starts=dataclasses.replace(d.starts, splits=dataclasses.replace(d.starts.splits, rl_size=2000, eval_size=300)))
    data = build_data(d)
    ops = {name: {len(parse_problem(r["prompt"]).ops) for r in rows} for name, rows in data.items()}
    assert ops["rl"] == ops["validation"] == ops["eval_in"] == ops["eval_hard"] == {5, 6}
    assert ops["sft"] == {2, 3, 4, 5}
    prompts = [{r["prompt"] for r in data[k]} for k in ("sft", "rl", "validation", "eval_in")]
    assert all(not (a & b) for i, a in enumerate(prompts) for b in prompts[i + 1:])


def test_figure6s_reward_model_is_held_out_on_questions_it_never_trains_on(tmp_path):
    from unified_rl.apps.experiments.figure6 import Figure6, rm_data
    s = DemoSettings(flawed_teacher=False)
    model, _, data, _ = sft_start(s, str(tmp_path))
    f = Figure6(design=dataclasses.replace(s.design(), questions_per_step=4, group_size=4), rm_heldout=8)
    heldout, train = rm_data(model, {"rl": data["rl"][:40]}, f, n=100, seed=0)  # 100 samples of 32 questions: they are revisited
    assert len(heldout) == 8 and len(train) == 100
    assert len({p for p, _, _ in heldout}) == 8 and not {p for p, _, _ in heldout} & {p for p, _, _ in train}
    answers = {r["prompt"]: r["answer"] for r in data["rl"]}
    assert all(y == float(extract_answer(c) == answers[p]) for p, c, y in heldout + train)  # labelled by the rule


def test_figure6_held_out_questions_are_never_rl_questions():
    from unified_rl.apps.experiments.design import build_data
    from unified_rl.apps.experiments.figure6 import Figure6, policy_data

    f = Figure6.quick()
    data = build_data(f.design)
    held_out = {r["prompt"] for r in data["rl"][: f.rm_heldout]}
    assert held_out and not held_out & {r["prompt"] for r in policy_data(data, f)["rl"]}
