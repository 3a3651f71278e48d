"""Rewards that take time: concurrent calls in order, per-call timeouts that leave the sample
unscored (threads and processes, also when called off the main thread), errors that name the
function and the sample; math-verify answers (boxed, fractions, LaTeX), cached."""

import threading
import time

import pytest
import torch

from reward_workers import deaf_reward, exiting_reward, failing_reward, length_reward, sleepy_reward, slow_start_reward
from unified_rl.rewards import Concurrent, FromCallable
from unified_rl.rollout import Rollout, Sample


def batch(completions, answers=None):
    n = len(completions)
    r = Rollout(torch.ones(n, 3, dtype=torch.long), torch.ones(n, 3, dtype=torch.bool), torch.tensor([[False, True, True]] * n))
    cols = [{"answer": a} for a in answers] if answers else [{} for _ in completions]
    return r, [Sample("q", c, col) for c, col in zip(completions, cols)]


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_concurrent_values_come_back_in_order_and_equal_serial(pool):
    r, texts = batch(["a" * k for k in (5, 1, 9, 3, 7, 2, 8)])
    fn = length_reward
    want = FromCallable(fn)(r, texts)
    reward = Concurrent(fn, workers=3, pool=pool, timeout=30)
    got = reward(r, texts)
    assert torch.equal(got.rewards, want.rewards) and bool(got.scored.all())
    assert reward.metrics() == {"reward/timeouts": 0.0}
    reward.close()


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_call_past_its_timeout_is_unscored_not_zero(pool):
    r, texts = batch(["ok", "hang", "fine", "ok"])
    stuck = threading.Event()

    def thread_hang(prompts, completions, **_):
        if "hang" in completions[0]:
            stuck.wait()  # never set: only the timeout ends this call's wait
        return [1.0]

    reward = Concurrent(thread_hang if pool == "thread" else sleepy_reward, workers=2, timeout=0.5, pool=pool)
    start = time.monotonic()
    out = reward(r, texts)
    assert time.monotonic() - start < 30  # the minute-long (or endless) call was cut short
    assert out.scored.tolist() == [True, False, True, True] and out.rewards[[0, 2, 3]].tolist() == [1.0, 1.0, 1.0]
    assert reward.metrics() == {"reward/timeouts": 1.0}
    stuck.set()
    reward.close()


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_errors_name_the_function_and_the_sample(pool):
    r, texts = batch(["good", "good", "bad"])
    with pytest.raises(RuntimeError, match=r"reward function 'failing_reward' raised on sample 2 .*ZeroDivisionError"):
        Concurrent(failing_reward, pool=pool).__call__(r, texts)


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_sys_exit_in_a_reward_is_an_error_of_its_sample(pool):
    r, texts = batch(["good", "bad", "good"])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"reward function 'exiting_reward' raised on sample 1 .*SystemExit"):
        Concurrent(exiting_reward, pool=pool, timeout=20).__call__(r, texts)
    assert time.monotonic() - start < 15  # said at once, not after the timeout


def test_a_call_stuck_past_its_alarm_costs_only_its_own_sample():
    """A worker deaf to its alarm is replaced; the other samples of the batch are still scored."""
    r, texts = batch(["ok", "deaf", "fine", "ok", "ok"])
    reward = Concurrent(deaf_reward, workers=2, timeout=0.5, pool="process")
    out = reward(r, texts)
    assert out.scored.tolist() == [True, False, True, True, True] and reward.metrics() == {"reward/timeouts": 1.0}
    again = reward(*batch(["ok", "ok"]))  # a fresh pool serves the next batch
    assert bool(again.scored.all())
    reward.close()


def test_worker_start_up_does_not_count_against_a_timeout():
    """Each worker's first call takes 2 s (its imports); a 1 s timeout still scores every sample."""
    reward = Concurrent(slow_start_reward, workers=2, timeout=1.0, pool="process")
    out = reward(*batch(["a", "b", "c"]))
    assert bool(out.scored.all()) and reward.metrics() == {"reward/timeouts": 0.0}
    reward.close()


def test_process_pool_needs_a_module_level_function_and_bad_settings_are_errors():
    with pytest.raises(ValueError, match="module-level function"):
        Concurrent(lambda p, c, **_: [1.0], pool="process")
    with pytest.raises(ValueError, match="pool must be one of"):
        Concurrent(length_reward, pool="gpu")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Concurrent(length_reward, timeout=0)


math_verify = pytest.importorskip("math_verify")

from unified_rl.rewards import math_reward, verify_answer  # noqa: E402

CASES = [  # (completion, reference, expected)
    ("so the answer is \\boxed{72}.", "72", 1.0),
    ("The result is $0.5$", "\\frac{1}{2}", 1.0),
    ("answer: \\boxed{\\dfrac{3}{4}}", "3/4", 1.0),
    ("we get $(x+1)^2$", "x^2+2x+1", 1.0),
    ("It is \\boxed{6}.", "5", 0.0),
    ("I do not know", "72", 0.0),  # no answer: wrong, not unscored
]


def test_math_verify_judges_boxed_fractions_and_latex():
    got = verify_answer(["q"] * len(CASES), [c for c, _, _ in CASES], answer=[a for _, a, _ in CASES])
    assert got == [e for _, _, e in CASES]
    assert verify_answer(["q"], [[{"role": "assistant", "content": "\\boxed{7}"}]], answer=["7"]) == [1.0]  # messages


def test_math_reward_works_off_the_main_thread_with_its_own_timeout_and_caches():
    calls = []

    def counting(prompts, completions, **columns):
        calls.append(completions[0])
        return verify_answer(prompts, completions, **columns)

    reward = math_reward(pool="thread", workers=2, timeout=20)
    reward.calls.fn = counting
    r, texts = batch([c for c, _, _ in CASES] * 2, [a for _, a, _ in CASES] * 2)  # every answer twice
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=reward(r, texts)))
    worker.start()
    worker.join(120)
    out = result["out"]
    assert out.rewards.tolist() == [e for _, _, e in CASES] * 2 and bool(out.scored.all())
    assert sorted(calls) == sorted(c for c, _, _ in CASES)  # each distinct (answer, completion) verified once
    reward(r, texts)
    assert len(calls) == len(CASES)  # the second batch came from the cache
    assert reward.metrics() == {"reward/timeouts": 0.0, "reward/unverifiable": 0.0}


def test_math_reward_in_processes_and_unverifiable_references():
    reward = math_reward(workers=2, timeout=20)
    r, texts = batch(["\\boxed{72}", "\\boxed{1}", "\\boxed{2}"], ["72", "\\frac{", "\\frac{1}{2}"])
    out = reward(r, texts)
    assert out.scored.tolist() == [True, False, True] and out.rewards[[0, 2]].tolist() == [1.0, 0.0]
    assert reward.metrics()["reward/unverifiable"] == 1.0
    reward.close()
    with pytest.raises(ValueError, match="sample 0 .* has no 'answer'"):
        reward(*batch(["\\boxed{1}"], [""]))
