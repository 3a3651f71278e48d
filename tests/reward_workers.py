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


def exiting_reward(prompts, completions, **_):
    """Calls sys.exit on a completion that says 'bad' (an error of that sample, not a silent timeout)."""
    import sys

    if completions and "bad" in completions[0]:
        sys.exit(3)
    return [0.5 for _ in completions]


def deaf_reward(prompts, completions, **_):
    """On 'deaf', blocks SIGALRM and sleeps: a call stuck where the timeout's alarm cannot reach it."""
    import signal

    if completions and "deaf" in completions[0]:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    return [1.0 for _ in completions]


_STARTED = []


def slow_start_reward(prompts, completions, **_):
    """The first call in a process takes 2 s (a heavy import); the others are instant."""
    if not _STARTED:
        time.sleep(2.0)
        _STARTED.append(True)
    return [1.0 for _ in completions]
