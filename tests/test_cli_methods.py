"""Every registered method trains through the real ``unified-rl train --method NAME`` entry point:
RL methods on the embedded task, preference methods on a chosen/rejected file."""

import json

import pytest

from unified_rl.apps.cli import main
from unified_rl.methods import REGISTRY

PREFERENCE = {"dpo", "ipo", "hinge", "simpo"}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_runs_from_the_command_line(name, tmp_path):
    args = ["train", "--method", name, "--steps", "2", "--questions-per-step", "2", "--group-size", "2", "--max-new-tokens", "48",
            "--out", str(tmp_path / "o"), "--no-progress"]
    if name in PREFERENCE:
        (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps({"prompt": f"{i}+1=", "chosen": f"#{i + 1}", "rejected": f"#{i}"})
                                                        for i in range(6)) + "\n")
        args += ["--data", str(tmp_path / "pairs.jsonl"), "--format", "preference"]
    assert main(args) == 0
    lines = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "loss" in m]
    assert len(steps) == 2 and all(m["phase"] == name for m in steps)
    assert ("dpo/accuracy" in steps[0]) == (name in PREFERENCE)
