"""The flawed teacher: its error is the stated one and only there, the share of flawed solutions is
fixed by a seed, affected steps are counted as reached only after a right prefix, the design's splits
stay disjoint (and the figures' splits and shipped start unchanged), and the experiment runs end to end."""

import json
import os

import pytest

from unified_rl.apps.tasks import ArithmeticTask
from unified_rl.apps.tasks.arithmetic import parse_problem
from unified_rl.apps.tasks.splits import ChainSplits
from unified_rl.apps.tasks.teacher import Flaw, affected_step_errors, teach


def test_the_teacher_writes_large_products_ten_high_and_carries_them():
    p = parse_problem("6*8-5=")
    assert Flaw().solution(p) == ("6*8=58;58-5=53;#53", 53) and Flaw().affected(p)
    small = parse_problem("3*4+2=")  # 12 < 40: the teacher is right
    assert Flaw().solution(small) == (small.solution, small.answer) and not Flaw().affected(small)
    twice = parse_problem("9*5*1=")  # 45 -> 55; then 55*1 = 55 >= 40 -> 65
    assert Flaw().solution(twice) == ("9*5=55;55*1=65;#65", 65)


def test_a_fixed_share_of_solutions_is_flawed_and_the_rest_untouched():
    rows = ArithmeticTask(2, 3).train_rows(3000)
    taught = teach(rows, 0.6, seed=0)
    assert taught == teach(rows, 0.6, seed=0) and taught != teach(rows, 0.6, seed=1)
    flaw, affected = Flaw(), [Flaw().affected(parse_problem(r["prompt"])) for r in rows]
    changed = [t != r for t, r in zip(taught, rows)]
    assert not any(c and not a for c, a in zip(changed, affected))  # only affected problems change
    share = sum(changed) / sum(affected)
    assert 0.55 < share < 0.65
    for t, r, c in zip(taught, rows, changed):
        if c:
            completion, answer = flaw.solution(parse_problem(r["prompt"]))
            assert t["completion"] == completion and t["answer"] == str(answer) != r["answer"]


def test_affected_steps_count_only_after_a_right_prefix():
    assert affected_step_errors("6*8-5=", "6*8=58;58-5=53;#53") == (1, 1)
    assert affected_step_errors("6*8-5=", "6*8=48;48-5=43;#43") == (1, 0)
    assert affected_step_errors("2+4*8=", "2+4=7;7*8=56;#56") == (0, 0)  # a wrong first step: the affected one is never reached
    assert affected_step_errors("2+4*8=", "2+4=6;6*8=48;#48") == (1, 0)
    assert affected_step_errors("2+4*8=", "2+4=6") == (0, 0)  # stopped before it


def test_the_design_s_splits_are_disjoint_and_leave_the_figures_as_they_were():
    plain = ChainSplits(sft_size=200, validation_size=50, rl_size=300, eval_size=100, sft_long_size=20)
    flawed = ChainSplits(sft_size=200, validation_size=50, rl_size=300, eval_size=100, sft_long_size=20, teacher_share=0.6, fresh_size=110)
    a, b = plain.build(), flawed.build()
    assert [r["prompt"] for r in a["sft"]] == [r["prompt"] for r in b["sft"]] and a["rl"] == b["rl"] and a["eval_in"] == b["eval_in"]
    prompts = {k: {r["prompt"] for r in v} for k, v in b.items()}
    names = list(prompts)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not prompts[x] & prompts[y], (x, y)
    assert len(b["fresh"]) == 110 and sum(len(parse_problem(r["prompt"]).ops) == 4 for r in b["fresh"]) == 10
    assert all(r["answer"] == str(parse_problem(r["prompt"]).answer) for r in b["rl"] + b["eval_short"])


def test_the_figures_start_key_is_unchanged():
    from unified_rl.apps.demo import DemoSettings, shipped_start_fits

    assert shipped_start_fits(DemoSettings(flawed_teacher=False))


@pytest.mark.slow
def test_the_experiment_runs_end_to_end(tmp_path):
    from unified_rl.apps.experiments import run_experiment

    text = run_experiment("flawed-teacher", str(tmp_path), quick=True, progress=False)
    record = json.loads((tmp_path / "results.json").read_text())
    assert "affected / unaffected" in text and record["runs"] == 1
    assert set(record["accuracy"]) == {f"{a}|{s}" for a in ("start", "control", "rft", "online_rft", "grpo", "grpo_process")
                                       for s in ("eval_short", "eval_in", "eval_hard")}
    assert record["environment"]["cpu_flags"] is not None


RESULTS = os.path.join(os.path.dirname(__file__), "..", "docs", "results")


def _recorded(name: str):
    """A results folder's record and scores, after checking every recorded accuracy against the scores."""
    import numpy as np

    folder = os.path.join(RESULTS, name)
    record = json.loads(open(os.path.join(folder, "results.json")).read())
    scores = np.load(os.path.join(folder, "scores.npz"))
    for key, acc in record["accuracy"].items():
        correct, affected = scores[f"{key}|correct"], scores[f"{key}|affected"].astype(bool)
        assert acc["affected"] == pytest.approx(100 * correct[affected].mean(), abs=1e-9)
        assert acc["unaffected"] == pytest.approx(100 * correct[~affected].mean(), abs=1e-9)
    return record, scores


@pytest.mark.parametrize("name", [n for n in ("flawed-teacher", "flawed-teacher-full") if os.path.isdir(os.path.join(RESULTS, n))])
def test_the_headline_numbers_recompute_from_the_scores(name):
    """docs/results/flawed-teacher(-full): every accuracy, affected-step error rate and arm - control
    difference (over problems, and over runs where there are several) in results.json follows from
    the committed per-problem scores."""

    from unified_rl.accuracy_stats import paired_difference, run_level_difference

    record, scores = _recorded(name)
    for key in record["accuracy"]:
        assert record["affected_step_error"][key] == pytest.approx(100 * scores[f"{key}|wrong"].sum() / scores[f"{key}|reached"].sum(), abs=1e-9)
    for key, diff in record["minus_control_points"].items():
        arm, split = key.split("|")
        mask = scores[f"control|{split}|affected"][0].astype(bool)
        got = paired_difference(scores[f"control|{split}|correct"][:, mask], scores[f"{arm}|{split}|correct"][:, mask])
        assert diff["affected"]["problems"] == pytest.approx([100 * x for x in got], abs=1e-9)
        if record["runs"] > 1:
            runs = run_level_difference(scores[f"control|{split}|correct"][:, mask], scores[f"{arm}|{split}|correct"][:, mask])
            assert diff["affected"]["runs"] == pytest.approx([100 * x for x in runs], abs=1e-9)


def test_in_the_teacher_design_the_control_learns_from_fresh_demonstrations():
    from unified_rl.apps.experiments.design import arm_trainer, build_data, quick_teacher_design
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.hf import tiny_llama

    d = quick_teacher_design()
    data = build_data(d)
    trainer = arm_trainer("control", tiny_llama(len(char_tokenizer()), seed=0), data, d, 1e-4, seed=0)
    prompts = {s.prompt for s in trainer.source.sample(None, 8).texts}
    assert len(prompts) == 8 and prompts <= {r["prompt"] for r in data["fresh"]}
    assert not prompts & {r["prompt"] for r in data["sft"]}  # not the start's own demonstrations again


def test_the_figures_on_the_teacher_design_are_named_experiments():
    from unified_rl.apps.experiments import EXPERIMENTS

    for name in ("figure5-teacher", "figure6-teacher", "figure7-teacher"):
        for quick in (False, True):
            d = EXPERIMENTS[name].build_size(quick).design
            assert d.starts.splits.teacher_share == 0.6 and d.starts.splits.fresh_size > 0, (name, quick)
        assert EXPERIMENTS[name].build_size(False).design.sft_seeds * EXPERIMENTS[name].build_size(False).design.rl_seeds == 4


@pytest.mark.skipif(not os.path.isdir(os.path.join(RESULTS, "figure5-teacher")), reason="no figure5-teacher results committed")
def test_figure5_on_the_teacher_design_recomputes_from_the_scores():
    """docs/results/figure5-teacher: every accuracy and every claim's two intervals and verdict follow
    from the committed per-problem scores; RFT's batch is what the runs' metrics say Online RFT had."""

    from unified_rl.accuracy_stats import paired_difference, run_level_difference
    from unified_rl.apps.experiments.design import verdict

    folder = os.path.join(RESULTS, "figure5-teacher")
    record, scores = _recorded("figure5-teacher")
    for claim in record["claims"]:
        for key, diff in ((k, v) for k, v in claim.items() if "|" in k):
            split, stratum = key.split("|")
            mask = scores[f"start|{split}|affected"][0].astype(bool)
            mask = mask if stratum == "affected" else ~mask
            x, y = scores[f"{claim['a']}|{split}|correct"][:, mask], scores[f"{claim['b']}|{split}|correct"][:, mask]
            problems, runs = [100 * v for v in paired_difference(x, y)], [100 * v for v in run_level_difference(x, y)]
            assert diff["problems"] == pytest.approx(problems, abs=1e-9) and diff["runs"] == pytest.approx(runs, abs=1e-9)
            wider = problems if problems[2] - problems[1] >= runs[2] - runs[1] else runs
            assert diff["verdict"] == verdict(wider)
    log = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    n = record["settings"]["design"]["questions_per_step"] * record["settings"]["design"]["group_size"]
    for seed, batch in zip(sorted({m["seed"] for m in log}), record["rft_batch"]):
        online = [m["reward/mean"] * n for m in log if m["arm"] == "online_rft" and m["seed"] == seed and "reward/mean" in m]
        assert len(online) == record["settings"]["design"]["steps"] and batch == round(sum(online) / len(online))
    assert record["runs"] == 4 and scores["start|eval_short|correct"].shape == (4, 1024)
