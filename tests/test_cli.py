"""The command line: the quick demo end to end, and errors before any model is loaded."""

import json
import math
import os

import pytest

from unified_rl.apps.cli import main


def test_quick_demo_writes_metrics_plot_and_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    for name in ("metrics.jsonl", "metrics.csv", "plot.png", "summary.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    splits, strata = ("eval_short", "eval_in"), ("affected", "unaffected")
    assert set(summary["splits"]) == set(splits)
    for arm in ("start", "control", "grpo"):
        assert all(0.0 <= summary["accuracy"][arm][sp][k] <= 100.0 for sp in splits for k in strata)
        assert all(0.0 <= summary["affected_step_error"][arm][sp] <= 100.0 for sp in splits)
    for sp in splits:
        assert sum(summary["eval_problems"][sp].values()) == 16
        for k in strata:
            gain, lo, hi = summary["grpo_minus_control_points"][sp][k]
            assert lo <= gain <= hi
            assert abs(gain - (summary["accuracy"]["grpo"][sp][k] - summary["accuracy"]["control"][sp][k])) < 1e-9
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {m["phase"] for m in lines} == {"control", "grpo"}
    grpo = [m for m in lines if m["phase"] == "grpo" and "reward/mean" in m]
    assert len(grpo) == 4 and all(k in grpo[0] for k in ("kl/k3", "gc/abs_mean", "gc/frac_clipped", "tokens_per_s", "reward/mean"))
    printed = capsys.readouterr().out
    assert "GRPO - control" in printed and "95% CI" in printed and "error on affected steps" in printed
    # the saved model and tokenizer load back with the standard Auto classes, and eval runs on them
    assert main(["eval", "--model", str(out / "model"), "--n", "8", "--k", "1,2", "--max-new-tokens", "40"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--method", "grpo", "--group-size", "1"], "grpo: group_size (G) must be >= 2 for group-relative advantages, got 1"),
        (["train", "--method", "grpo", "--lr=-1e-5"], "config field 'lr' = -1e-05: must be a finite number > 0"),
        (["train", "--method", "grpo", "--beta=-0.1"], "config field 'beta' = -0.1: must be a finite number >= 0"),
        (["train", "--method", "reinforce"], "method 'reinforce': unknown method (did you mean 'reinforce_pp'?)"),
        (["train", "--method", "sft", "--group-size", "4"], "method 'sft' has no setting 'group_size' (it takes none)"),
        (["train", "--method", "sft", "--data", "missing.jsonl"], "missing.jsonl: no such file"),
        (["train", "--method", "sft", "--model", "no/such/dir"], "is not a local folder"),
    ],
)
def test_train_errors_are_clear(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o"), "--no-progress", "--steps", "1"]) == 2
    assert message in capsys.readouterr().err


def test_config_file_with_unknown_field(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('lr = 1e-4\nlearning_rate = 3\n')
    assert main(["train", "--method", "sft", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "unknown field(s) ['learning_rate']" in capsys.readouterr().err


def test_pickled_weights_are_never_loaded(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    assert main(["eval", "--model", str(tmp_path), "--n", "1", "--k", ""]) == 2
    assert "pickled weights are never loaded" in capsys.readouterr().err
    assert os.path.exists(tmp_path / "pytorch_model.bin")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["figure5", "process-vs-outcome", "figure6", "figure7", "grpo-vs-ppo-cost", "rl-vs-sft", "calculator",
                                  "figure5-teacher"])
def test_every_experiment_runs_at_quick_size(name, tmp_path):
    out = tmp_path / name
    assert main(["experiment", name, "--quick", "--out", str(out), "--no-progress"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert "results.md" in files and "metrics.jsonl" in files and any(f.endswith(".png") for f in files), files
    text = (out / "results.md").read_text()
    assert text.startswith(f"# {name}\n") and "|---" in text and "size: quick" in text
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    named = ("method",) if name == "grpo-vs-ppo-cost" else ("phase", "step")  # a row per method; else every arm's steps, named
    assert steps and all(all(k in m for k in named) for m in steps)
    numbers = [v for m in steps for v in m.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    if name in ("figure5", "process-vs-outcome", "figure6", "figure7"):  # a paper claim: an interval and a verdict per row
        assert "95% CI" in text and ("reproduced" in text or "inconclusive" in text), text
    if name == "figure5-teacher":  # RFT's batch: Online RFT's mean number of correct samples per update, run by run
        record = json.loads((out / "results.json").read_text())
        for run, batch in zip(sorted({m["seed"] for m in steps}), record["rft_batch"]):
            online = [m["reward/mean"] * 2 * 2 for m in steps if m["phase"] == "online_rft" and m["seed"] == run and "reward/mean" in m]
            assert batch == max(1, round(sum(online) / len(online)))
        assert "inconclusive" in text or "reproduced" in text
    if name != "grpo-vs-ppo-cost":
        def finite_numbers(x):
            return [x] if isinstance(x, float) else [v for y in (x.values() if isinstance(x, dict) else x if isinstance(x, list) else [])
                                                      for v in finite_numbers(y)]
        record = json.loads((out / "results.json").read_text())
        assert finite_numbers(record) and all(math.isfinite(v) for v in finite_numbers(record)), sorted(record)
        machine = {"cpu", "cpu_flags", "torch_cpu_capability", "cpus", "torch_threads", "torch", "transformers", "python", "commit"}
        assert machine <= set(record["environment"]), sorted(record["environment"])  # what a result was measured on
    if name == "figure5":  # the lr tuning ran first, into its sibling folder, and figure5 read its chosen lrs
        tuning = json.loads((tmp_path / "figure5-lr" / "results.json").read_text())
        assert json.loads((out / "results.json").read_text())["chosen_lr"] == tuning["chosen_lr"]
        assert (tmp_path / "figure5-lr" / "figure5-lr.png").exists()


def test_unknown_experiment(capsys, tmp_path):
    assert main(["experiment", "figure-9", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'figure-9'" in capsys.readouterr().err


def test_the_experiment_help_names_exactly_the_experiments_there_are(capsys):
    from unified_rl.apps.experiments import EXPERIMENTS

    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert " | ".join(EXPERIMENTS) in " ".join(capsys.readouterr().out.split())
