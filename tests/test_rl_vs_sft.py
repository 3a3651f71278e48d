"""The RL-vs-SFT task design and its experiment: the splits are what they claim, and SFT starts are saved
with their record and reused."""

import json
import os

from unified_rl.apps.experiments.rl_vs_sft import RLvsSFT, run
from unified_rl.apps.tasks import parse_problem
from unified_rl.apps.tasks.splits import ChainSplits


def test_the_splits_are_disjoint_and_of_their_lengths():
    splits = ChainSplits(sft_size=400, validation_size=100, rl_size=400, eval_size=400).build()
    prompts = {name: {r["prompt"] for r in rows} for name, rows in splits.items()}
    names = list(prompts)
    for i, a in enumerate(names):
        assert len(prompts[a]) == len(splits[a])  # distinct within a split
        for b in names[i + 1:]:
            assert prompts[a].isdisjoint(prompts[b]), (a, b)
    lengths = {name: {len(parse_problem(p).ops) for p in ps} for name, ps in prompts.items()}
    assert lengths == {"sft": {2, 3}, "validation": {2, 3}, "rl": {3, 4, 5}, "eval_in": {3, 4, 5}, "eval_hard": {5, 6}}
    assert all("completion" in r for r in splits["sft"]) and not any("completion" in r for r in splits["rl"])  # RL: answers only
    for r in splits["rl"][:50]:
        assert r["answer"] == str(parse_problem(r["prompt"]).answer)


def test_a_few_longer_worked_solutions_join_the_sft_split_only():
    base = ChainSplits(sft_size=200, validation_size=50, rl_size=200, eval_size=200)
    splits = ChainSplits(sft_size=200, validation_size=50, rl_size=200, eval_size=200, sft_long_size=30).build()
    lengths = [len(parse_problem(r["prompt"]).ops) for r in splits["sft"]]
    assert len(lengths) == 230 and lengths.count(4) == 30 and set(lengths[:200]) == {2, 3}
    assert all("completion" in r for r in splits["sft"])
    assert splits["validation"] == base.build()["validation"] and {len(parse_problem(r["prompt"]).ops) for r in splits["validation"]} == {2, 3}
    everything = [r["prompt"] for rows in splits.values() for r in rows]
    assert len(everything) == len(set(everything))  # still disjoint


def test_sft_starts_are_saved_with_their_record_and_reused(tmp_path):
    size = RLvsSFT.quick()
    os.makedirs(tmp_path / "a")
    first = run(str(tmp_path / "a"), size, starts_dir=str(tmp_path / "starts"))
    saved = sorted((tmp_path / "starts").iterdir())
    assert [p.suffix for p in saved] == [".json", ".safetensors"]
    record = json.loads(saved[0].read_text())
    assert record["settings"]["seed"] == 0 and set(record["environment"]) >= {"cpu", "torch", "transformers", "python"}
    assert record["chosen_step"] in {c["step"] for c in record["curve"]}
    assert max(c["validation_accuracy"] for c in record["curve"]) == record["validation_accuracy"]
    stamp = saved[1].stat().st_mtime_ns
    os.makedirs(tmp_path / "b")
    second = run(str(tmp_path / "b"), size, starts_dir=str(tmp_path / "starts"))
    assert saved[1].stat().st_mtime_ns == stamp  # loaded, not trained again
    assert record["sha256"][:12] in first and record["sha256"][:12] in second
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["environment"]["cpu"] and set(results["results"]) == {"eval_in", "eval_hard"}
    for split in results["results"].values():
        for d, lo, hi in split["difference"].values():
            assert lo <= d <= hi
