"""The demo's shipped SFT start: the file is what its record says (digest, settings, SFT metrics),
it loads as safetensors into the embedded model, and it is used only where the settings fit."""

import dataclasses
import hashlib
import json

from unified_rl.apps.demo import START, START_SFT_FIELDS, DemoSettings, sft_start, shipped_start_fits


def test_the_shipped_start_is_what_its_record_says():
    record = json.load(open(START.replace(".safetensors", ".json")))
    assert hashlib.sha256(open(START, "rb").read()).hexdigest() == record["sha256"]
    assert record["settings"] == {k: getattr(DemoSettings(), k) for k in START_SFT_FIELDS}
    sft_steps = [m for m in record["history"] if m.get("phase") == "sft" and "loss" in m]
    assert len(sft_steps) == DemoSettings().sft_steps and sft_steps[-1]["loss"] < sft_steps[0]["loss"] / 10


def test_the_shipped_start_loads_and_scores_what_was_recorded():
    model, tok, train_rows, eval_rows, sft = sft_start(DemoSettings(), progress=False)
    assert sft.step_count == 300 and len(eval_rows) == 256
    record = json.load(open(START.replace(".safetensors", ".json")))
    # Greedy decoding of the same weights: equal on the CPU that wrote it; another CPU may flip a near-tie or two.
    assert abs(sft.evaluate() - record["accuracy"]) <= 2 / 256


def test_the_shipped_start_is_used_only_where_it_fits():
    assert shipped_start_fits(DemoSettings())
    assert not shipped_start_fits(DemoSettings.quick())
    assert not shipped_start_fits(dataclasses.replace(DemoSettings(), sft_lr=3e-4))
    assert shipped_start_fits(dataclasses.replace(DemoSettings(), grpo_steps=10, rl_seed=3))  # the RL phase may change
