"""Module-level reward functions for the process-pool tests (worker processes import them by name)."""

import time


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def sleepy_reward(prompts, completions, **_):
    """Sleeps a minute on a completion that says 'hang' (a timeout must cut it short)."""
    if "hang" in completions[0]:
        time.sleep(60)
    return [1.0 for _ in completions]


def failing_reward(prompts, completions, **_):
    if "bad" in completions[0]:
        raise ZeroDivisionError("no")
    return [0.5]
