"""The demo's shipped SFT start: the file is what its record says (digest, settings, validation
curve), it loads as safetensors into the embedded model and scores what was recorded, and it is
used only where the settings ask for it."""

import dataclasses
import hashlib
import json

from unified_rl.apps.demo import SHIPPED, DemoSettings, sft_start, shipped_start_fits
from unified_rl.apps.experiments.design import correct
from unified_rl.apps.experiments.rl_vs_sft import _sft_settings, start_file


def _record(s: DemoSettings) -> tuple[str, dict]:
    path = start_file(s.design().starts, s.seed, SHIPPED)
    return path, json.load(open(path.replace(".safetensors", ".json")))


def test_the_shipped_start_is_what_its_record_says():
    s = DemoSettings()
    path, record = _record(s)
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == record["sha256"]
    assert record["settings"] == json.loads(json.dumps(_sft_settings(s.design().starts, s.seed)))  # the file is named for these
    assert record["settings"]["splits"]["sft_long_size"] == 200 and record["settings"]["sft_steps"] == 1000
    assert record["settings"]["splits"]["teacher_share"] == 0.6  # the demo's start learnt from the flawed teacher
    assert record["chosen_step"] in {c["step"] for c in record["curve"]}
    # converged: agreement with the teacher's own answers, of which the flawed ones (60% of affected problems) are learnt only in part
    assert record["validation_accuracy"] == max(c["validation_accuracy"] for c in record["curve"]) > 0.8


def test_the_shipped_start_loads_and_scores_what_was_recorded(tmp_path):
    s = DemoSettings()
    model, record, data, shipped = sft_start(s, str(tmp_path))
    assert shipped and not (tmp_path / "starts").exists()  # loaded, not trained
    # Greedy decoding of the same weights: equal on the CPU that wrote it; another CPU may flip a near-tie or two.
    accuracy = float(correct(model, data["validation_sft"], s.design()).mean())
    assert abs(accuracy - record["validation_accuracy"]) <= 2 / len(data["validation_sft"])


def test_the_shipped_start_is_used_only_where_it_fits():
    assert shipped_start_fits(DemoSettings())
    assert shipped_start_fits(DemoSettings(flawed_teacher=False))  # the figures' start (correct teacher) is shipped too
    assert not shipped_start_fits(DemoSettings.quick())
    assert not shipped_start_fits(dataclasses.replace(DemoSettings(), seed=1))
    assert shipped_start_fits(dataclasses.replace(DemoSettings(), steps=10, lr=3e-4, rl_seed=3))  # the RL phase may change
