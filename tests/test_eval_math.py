"""``unified-rl eval --reward math``: math-verify's equivalence, through the real command. On the
arithmetic task, where the marker reader applies too, the two judges agree exactly; an answer
math-verify cannot parse is counted as unverifiable, never as wrong."""

import json

import pytest
from safetensors.torch import load_file

pytest.importorskip("math_verify")

from unified_rl.apps.cli import main  # noqa: E402
from unified_rl.apps.demo import BENCHMARK_START  # noqa: E402
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer  # noqa: E402
from unified_rl.hf import save_model, tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The benchmarks' shipped SFT start (it solves about half of these problems) as a model folder."""
    where = tmp_path_factory.mktemp("eval")
    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=0)
    model.load_state_dict(load_file(BENCHMARK_START))
    save_model(model, tok, str(where / "model"))
    return where


def _eval(folder, rows, capsys, *extra):
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--model", str(folder / "model"), "--data", str(folder / "rows.jsonl"), "--n", str(len(rows)), "--k", "1,4",
                 *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_math_verify_agrees_with_the_answer_reader_where_both_apply(trained, capsys):
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in ArithmeticTask(seed=3).eval_rows(32)]
    exact, math = _eval(trained, rows, capsys), _eval(trained, rows, capsys, "--reward", "math")
    assert 0 < exact["greedy_accuracy"] < 1 and math["greedy_accuracy"] == exact["greedy_accuracy"]
    assert {k: v["pass"] for k, v in math["at_k"].items()} == {k: v["pass"] for k, v in exact["at_k"].items()}
    assert math["unverifiable_greedy"] == 0 and math["unverifiable_samples"] == 0


def test_an_answer_math_verify_cannot_read_is_unverifiable_not_wrong(trained, capsys):
    rows = [{"prompt": r["prompt"], "answer": r["answer"] if i % 2 else "???"}
            for i, r in enumerate(ArithmeticTask(seed=3).eval_rows(8))]
    out = _eval(trained, rows, capsys, "--reward", "math")
    assert out["unverifiable_greedy"] == 4 and out["unverifiable_samples"] == 16
    with pytest.raises(SystemExit):
        main(["eval", "--reward", "exact"])  # a choice argparse refuses
    assert main(["eval", "--reward", "math", "--n", "2"]) == 2 and "no effect without --data" in capsys.readouterr().err
