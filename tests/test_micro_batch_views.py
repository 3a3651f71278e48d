"""Micro-batch views: the same rows, columns and values as ``select(rows).columns(lo, hi)`` of the
checked rollout, empty ones left out, and nothing read back from the device per micro-batch."""

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import random_rollout
from unified_rl import batching

READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default, torch.ops.aten.nonzero.default}


class _Reads(TorchDispatchMode):
    """Counts the ops that make a GPU wait for its queue: a scalar read back, a truth value, a nonzero."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READS:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@given(seed=st.integers(0, 10_000), allow_empty=st.booleans(), max_tokens=st.sampled_from([None, 1, 7, 20, 60]),
       keep_groups=st.booleans())
@settings(max_examples=40, deadline=None)
def test_views_are_the_checked_rows_and_columns(seed, allow_empty, max_tokens, keep_groups):
    r = random_rollout(seed, n_groups=3, group_size=3, allow_empty=allow_empty)
    r = r.replace(texts=tuple({"prompt": f"q{i}", "completion": f"o{i}"} for i in range(r.batch_size)))
    seen = []
    for idx, lo, hi, view in batching.micro_batch_views(r, max_tokens, keep_groups):
        rows = idx.tolist()
        sel = r.select(rows)
        assert (lo, hi) == sel.used_columns()
        want = sel.columns(lo, hi)
        assert view.num_completion_tokens > 0 and view.texts == want.texts and view.temperature == want.temperature
        for name, value in want.fields().items():
            assert torch.equal(getattr(view, name), value), name
        view.replace()  # the unchecked view passes the checks
        seen += rows
    with_output = {i for i in range(r.batch_size) if r.completion_mask[i].any()}
    assert len(seen) == len(set(seen)) and with_output <= set(seen)  # every row with an output token, each row at most once


def test_nothing_is_read_back_per_micro_batch():
    r = random_rollout(3, n_groups=4, group_size=3)
    views = batching.micro_batch_views(r, 12, False)
    with _Reads() as first:
        next(views)  # one read of the cut's inputs for the whole batch (a tolist, which dispatches none on CPU)
    with _Reads() as rest:
        n = 1 + sum(1 for _ in views)
    assert n >= 3 and rest.ops == [] and first.ops == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_device_sync_between_micro_batches_on_a_gpu():
    r = random_rollout(3, n_groups=4, group_size=3).to("cuda")
    views = batching.micro_batch_views(r, 12, False)
    next(views)
    torch.cuda.set_sync_debug_mode("error")
    try:
        n = 1 + sum(1 for _ in views)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert n >= 3
