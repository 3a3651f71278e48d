"""Data files fail when they are loaded, one line naming file, line and column or key (reliability, item 3)."""

import pytest

from unified_rl.apps.cli import main
from unified_rl.data import gsm8k_rows, read_jsonl

GOOD = '{"prompt": "1+1=", "completion": "#2"}'


@pytest.mark.parametrize("bad, message", [
    ('{"prompt": "1+1=", "completion": "#2"', r"line 2: not valid JSON at column 38"),
    ('{"prompt": "1+1=", "prompt": "2+2=", "completion": "#4"}', r"line 2: duplicate key 'prompt' in one object"),
    ('{"prompt": "1+1=", "completion": "#2", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", r"line 2: cannot be decoded \(RecursionError"),
    ('{"prompt": "1+1=", "completion": "#2", "n": ' + "9" * 5000 + "}", r"line 2: cannot be decoded \(ValueError"),
    ('{"prompt": "\\ud800", "completion": "#2"}', r"line 2, key 'prompt': text that cannot be encoded as UTF-8 \(a lone surrogate"),
    ('{"prompt": "1+1=", "completion": "#2", "\\udfff": 1}', r"line 2, key '\\udfff': text that cannot be encoded"),
    ('["prompt", "completion"]', r"line 2: expected a JSON object, got list"),
    ('{"prompt": "1+1=", "completion": null}', r"line 2: column 'completion' must be a string, got null"),
])
def test_each_fault_is_one_line_naming_file_and_line(tmp_path, bad, message):
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD + "\n" + bad + "\n" + GOOD + "\n")
    with pytest.raises(ValueError, match=r"d\.jsonl, " + message) as e:
        read_jsonl(str(path), ("prompt", "completion"))
    assert "\n" not in str(e.value)


def test_line_separators_inside_strings_do_not_shift_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a\u2028b\u0085c", "completion": "#2"}\r\n' + GOOD + "\n" + '{"prompt": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"d\.jsonl, line 3: missing column 'completion'"):
        read_jsonl(str(path), ("prompt", "completion"))
    path.write_text('{"prompt": "a\u2028b\u0085c", "completion": "#2"}\r\n' + GOOD + "\n", encoding="utf-8")
    assert read_jsonl(str(path), ("prompt", "completion"))[0]["prompt"] == "a\u2028b\u0085c"


@pytest.mark.parametrize("answer", ["The sum is 4. #### ", "no marker at all", "#### ,"])
def test_gsm8k_errors_name_the_physical_line(tmp_path, answer):
    import json

    path = tmp_path / "g.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n\n' + json.dumps({"question": "q", "answer": answer}) + "\n")
    with pytest.raises(ValueError, match=r"g\.jsonl, line 3, row 2: column 'answer' does not end in '#### N' with a non-empty N"):
        gsm8k_rows(str(path))


def test_the_cli_reports_a_decode_error_in_one_line(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD + "\n" + '{"prompt": "1+1=", "prompt": "x", "completion": "#2"}\n')
    assert main(["train", "--method", "sft", "--data", str(path), "--out", str(tmp_path / "o"), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("line 2: duplicate key 'prompt' in one object") and len(err.splitlines()) == 1


def test_an_over_long_row_late_in_a_file_fails_before_training(tmp_path, capsys):
    rows = [GOOD] * 50 + ['{"prompt": "' + "1+" * 74 + '1=", "completion": "#2"}'] + [GOOD] * 5
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["train", "--method", "sft", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"), "--steps", "1",
                 "--max-prompt-tokens", "64", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("d.jsonl, line 51: column 'prompt' has 150 tokens, over max_prompt_tokens=64"), err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_a_huge_prompt_is_refused_before_it_is_tokenised():
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.data import Encoder, SupervisedSource

    huge = {"prompt": "1" * 10_000_000 + "=", "completion": "#1"}
    with pytest.raises(ValueError, match=r"row 1: column 'prompt' has 10000001 characters, more than max_prompt_tokens=256 tokens can hold"):
        SupervisedSource([{"prompt": "1=", "completion": "#1"}, huge], Encoder(char_tokenizer()))


def test_threads_fit_the_cores_this_process_may_use(monkeypatch):
    import os

    import torch

    from unified_rl import threads

    n, was = threads.available_cpus(), torch.get_num_threads()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    try:
        torch.set_num_threads(n + 3)  # more threads than cores: OMP_NUM_THREADS keeps them ...
        monkeypatch.setenv("OMP_NUM_THREADS", str(n + 3))
        assert threads.fit_threads() == n + 3
        monkeypatch.delenv("OMP_NUM_THREADS")  # ... without it, fit_threads brings them back
        assert threads.fit_threads() == n
    finally:
        torch.set_num_threads(was)


def test_threads_leave_the_cores_that_busy_processes_hold(monkeypatch):
    import subprocess
    import sys
    import time

    import torch

    from unified_rl import threads

    n, was = threads.available_cpus(), torch.get_num_threads()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        assert threads.others_running() >= 2
        monkeypatch.setenv("OMP_NUM_THREADS", str(n))
        torch.set_num_threads(n)
        threads.adapt_threads()  # two calls, as below: were the variable ignored, the load would count
        assert threads.adapt_threads() == n  # the environment fixed the count: nothing adapts
        monkeypatch.delenv("OMP_NUM_THREADS")
        threads.adapt_threads()  # load is taken for load once it lasts two steps
        assert threads.adapt_threads() <= max(1, n - 2) and torch.get_num_threads() <= max(1, n - 2)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    time.sleep(0.3)
    back = threads.adapt_threads()
    torch.set_num_threads(was)
    assert back >= 1
