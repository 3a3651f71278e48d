"""``--data`` reads a local JSONL, JSON, CSV or Parquet file or a folder of them through the
``datasets`` library, with ``--split`` and column mapping; bad rows name the file and row; in
Python a ``datasets.Dataset`` works wherever rows do."""

import json

import datasets
import pytest

from unified_rl.apps.cli import main
from unified_rl.config import TrainConfig
from unified_rl.data.files import load_table
from unified_rl.loop import Trainer
from unified_rl.methods import grpo
from unified_rl.rewards import FromCallable
from helpers import TOK, has_seven, small_model

RL = ["--steps", "1", "--questions-per-step", "2", "--group-size", "2", "--max-new-tokens", "24", "--no-progress"]


def test_csv_with_mapped_columns_trains_grpo(tmp_path):
    (tmp_path / "q.csv").write_text("id,question_text,gold\n" + "".join(f"{i},{i}+1=,{i + 1}\n" for i in range(6)))
    rows = load_table(str(tmp_path / "q.csv"), rename={"question_text": "prompt", "gold": "answer"})
    assert rows[2]["answer"] == "3" and rows[2].origin.endswith("q.csv, row 2")  # a CSV number is read as its text
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "q.csv"), "--prompt-column", "question_text",
                 "--answer-column", "gold", "--out", str(tmp_path / "o"), *RL]) == 0


def test_parquet_prompt_completion_trains_sft(tmp_path):
    rows = [{"prompt": f"{i}+1=", "completion": f"{i}+1={i + 1};#{i + 1}"} for i in range(6)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "sft.parquet"))
    sft = ["--steps", "1", "--questions-per-step", "2", "--max-new-tokens", "24", "--no-progress"]  # RL's, without groups
    assert main(["train", "--method", "sft", "--data", str(tmp_path / "sft.parquet"), "--out", str(tmp_path / "o"), *sft]) == 0


def test_a_folder_s_split(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n in (("train", 5), ("test", 3)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"prompt": f"{len(split)}{i}+1=", "answer": "1"}) + "\n" for i in range(n)))
    assert len(load_table(str(folder))) == 5 and len(load_table(str(folder), split="test")) == 3
    with pytest.raises(ValueError, match=r"no split 'validation' \(has test, train"):
        load_table(str(folder), split="validation")
    assert main(["train", "--method", "grpo", "--data", str(folder), "--split", "test", "--out", str(tmp_path / "o"), *RL]) == 0


def test_bad_rows_name_the_file_and_row(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("prompt,answer\n1+1=,2\n,3\n")
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o"), *RL]) == 2
    err = capsys.readouterr().err
    assert "bad.csv, row 1: column 'prompt'" in err and not (tmp_path / "o").exists()
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "bad.csv"), "--prompt-column", "text", "--out", str(tmp_path / "o"), *RL]) == 2
    assert "no column 'text' to read (columns: prompt, answer)" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hello")
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o"), *RL]) == 2
    assert "unknown file type '.txt'" in capsys.readouterr().err


def test_a_datasets_dataset_works_wherever_rows_do():
    rows = datasets.Dataset.from_list([{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(8)])
    cfg = TrainConfig(steps=2, questions_per_step=2, max_new_tokens=6)
    history = Trainer(small_model(), TOK, grpo(group_size=2), rows, cfg, reward=FromCallable(has_seven)).run(progress=False)
    assert len(history) == 2


def test_a_csv_keeps_the_user_s_text(tmp_path):
    """No type inference: answers stay the text written (an exact-match reward compares text)."""
    (tmp_path / "q.csv").write_text('prompt,answer\n1+2=,3\n40+2=,42\nx,NA\ny,True\nz,123456789012345678901234567890\nw,007\nv,\n')
    rows = load_table(str(tmp_path / "q.csv"))
    assert [r["answer"] for r in rows] == ["3", "42", "NA", "True", "123456789012345678901234567890", "007", ""]


@pytest.mark.parametrize("name,content,said", [
    ("bad.json", '[{"prompt": "a", "answer": "1"},\n {"prompt": "b",, "answer": "2"}]\n', "bad.json, line 2, column 17: not valid JSON"),
    ("lines.json", '{"prompt": "a", "answer": "1"}\n{"prompt": "b" "answer": "2"}\n', "lines.json, line 2: not valid JSON at column 16"),
    ("latin.csv", b"prompt,answer\ncaf\xe9=,1\n", "latin.csv, line 2: not UTF-8"),
    ("latin.json", b'[{"prompt": "caf\xe9", "answer": "1"}]', "latin.json, line 1: not UTF-8"),
    ("empty.csv", "prompt,answer\n", "empty.csv: zero rows"),
    ("nothing.csv", "", "nothing.csv: empty (no header line)"),
])
def test_a_file_datasets_cannot_read_is_one_line_with_its_line(tmp_path, capsys, name, content, said):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["train", "--method", "grpo", "--data", str(path), "--out", str(tmp_path / "o"), *RL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and said in err and not (tmp_path / "o").exists(), err


def test_zero_row_parquet_and_mixed_folders_are_one_line(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), tmp_path / "none.parquet")
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o"), *RL]) == 2
    assert "none.parquet: zero rows" in capsys.readouterr().err
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "train-a.csv").write_text("prompt,answer\n1+1=,2\n")
    (folder / "train-b.csv").write_text("question,gold\n1+2=,3\n")
    assert main(["train", "--method", "grpo", "--data", str(folder), "--out", str(tmp_path / "o"), *RL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mixed: cannot be read as csv" in err and "An error occurred while generating" not in err, err


def test_a_wrong_column_names_the_flag_that_maps_it(tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": [{"role": "user", "content": "1+1="}], "answer": "2"}) + "\n")
    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt": "1+1=", "solution": "2"}) + "\n")
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "o"), *RL]) == 2
    assert "column 'question' holds a list (chat messages?)" in capsys.readouterr().err
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "q.jsonl"), "--prompt-column", "question", "--out", str(tmp_path / "o"),
                 *RL]) == 2  # mapped: the messages are the prompt, which this tokenizer cannot render
    assert "the row is conversational (lists of messages) but the tokenizer has no chat template" in capsys.readouterr().err
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "o2"), *RL]) == 2
    assert "missing column 'answer' (has ['prompt', 'solution']); on the command line, --answer-column" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.json"])
def test_a_file_larger_than_free_memory_is_one_line(tmp_path, capsys, monkeypatch, name):
    """A data file read whole that would not fit in memory: one line naming it and both sizes,
    before any reading (here the machine is made to report 1 KiB free)."""
    from unified_rl.data import rows

    monkeypatch.setattr(rows, "free_memory", lambda: 1024)
    line = json.dumps({"prompt": "1+1=", "answer": "2"})
    (tmp_path / name).write_text("\n".join([line] * 100) + "\n")
    assert main(["train", "--method", "grpo", "--data", str(tmp_path / name), "--out", str(tmp_path / "o"), *RL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{name}: " in err and "KiB, more than this machine's free memory (1.0 KiB)" in err and "split it" in err, err
