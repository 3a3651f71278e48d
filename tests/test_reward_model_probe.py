"""The reward-model probe's labels (benchmarks/reward_model_probe.py), which docs/results.md's
ceiling and error counts rest on: a correct solution is labelled correct at every character, an
error marks the character where it starts, and a hard example's label is the rule's."""

import os
import random
import sys

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unified_rl.apps.tasks import extract_answer, parse_problem
from unified_rl.apps.tasks.arithmetic import random_problem

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from reward_model_probe import first_errors, hard_example, local_char_labels  # noqa: E402

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=200, deadline=None)
@given(seeds)
def test_the_rules_worked_solution_is_right_at_every_character(seed):
    p = random_problem(random.Random(seed), 2, 6)
    assert local_char_labels(p.prompt, p.solution) == [True] * len(p.solution)


@settings(max_examples=200, deadline=None)
@given(seeds, st.data())
def test_a_wrong_result_is_marked_from_its_first_wrong_digit_and_the_steps_after_it_are_judged_on_what_was_written(seed, data):
    p = random_problem(random.Random(seed), 2, 6)
    steps = p.steps()
    j = data.draw(st.integers(0, len(steps) - 1))
    a, value = steps[j].split("=")
    wrong = data.draw(st.integers(0, 99).filter(lambda v: v != int(value)))
    # the error is carried on: later steps compute from the wrong value, correctly
    prev, written = wrong, steps[:j] + [f"{a}={wrong}"]
    for op, b in p.ops[j + 1:]:
        new = {"+": prev + b, "-": prev - b, "*": prev * b}[op]
        written.append(f"{prev}{op}{b}={new}")
        prev = new
        assume(new >= 0)  # the probe reads unsigned results only: a step after a negative one is marked wrong (after an error anyway)
    completion = "".join(s + ";" for s in written) + f"#{prev}"
    labels = local_char_labels(p.prompt, completion)
    start = sum(len(s) + 1 for s in steps[:j]) + len(a) + 1  # the step's result
    first_bad = next(k for k, (x, y) in enumerate(zip(str(wrong) + ";", value + ";")) if x != y)
    assert labels.index(False) == start + first_bad
    end_of_step = start + len(str(wrong))  # its ';'
    assert not any(labels[start + first_bad: end_of_step + 1]) and all(labels[end_of_step + 1:])
    assert first_errors([(p.prompt, completion, 0.0)]).endswith("a step's result 1")


@settings(max_examples=300, deadline=None)
@given(seeds)
def test_a_hard_examples_label_is_the_rules(seed):
    rng = random.Random(seed)
    prompt = random_problem(rng, 4, 5).prompt
    p, c, y = hard_example(prompt, rng)
    assert p == prompt and y == float(extract_answer(c) == str(parse_problem(p).answer))


def test_stopping_a_step_early_is_wrong_at_the_answer():
    labels = local_char_labels("1+2+3=", "1+2=3;#3")
    assert labels == [True] * 6 + [False, False]
