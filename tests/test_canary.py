"""The run-time shape checking is really on: a mis-shaped tensor to an annotated function raises.
(With typeguard 3/4, @jaxtyped(typechecker=typechecked) silently checks nothing.)"""

import importlib.metadata

import pytest
import torch

from unified_rl.coefficients import gae_advantages
from unified_rl.lm_head import linear_logprobs


def test_typeguard_is_the_pinned_version():
    assert importlib.metadata.version("typeguard") == "2.13.3"


def test_mis_shaped_call_raises():
    h, w = torch.zeros(5, 4), torch.zeros(7, 4)
    linear_logprobs(h, w, None, torch.zeros(5, dtype=torch.long))  # fine
    with pytest.raises(TypeError):
        linear_logprobs(h, torch.zeros(7, 3), None, torch.zeros(5, dtype=torch.long))  # hidden 4 vs 3
    with pytest.raises(TypeError):
        linear_logprobs(h, w, None, torch.zeros(6, dtype=torch.long))  # tokens 5 vs 6
    mask = torch.ones(2, 6, dtype=torch.bool)
    with pytest.raises(TypeError):
        gae_advantages(torch.zeros(2, 6), torch.zeros(2, 5), mask, 1.0, 1.0)  # seq 6 vs 5
    with pytest.raises(TypeError):
        gae_advantages(torch.zeros(2, 6), torch.zeros(2, 6), mask.long(), 1.0, 1.0)  # Bool expected


def test_a_collection_is_checked_by_its_first_item():
    """conftest checks a list's items by the first one (typeguard 3+'s default strategy), not all of them."""
    from unified_rl.data.rows import check_rows

    rows = [{"prompt": "1+1="}, {"prompt": "2+2="}]
    assert check_rows(rows, ["prompt"]) == rows
    with pytest.raises(TypeError, match="parameter 'rows'"):
        check_rows(["1+1=", {"prompt": "2+2="}], ["prompt"])  # the first row is not a dict
    with pytest.raises(TypeError, match="parameter 'required'"):
        check_rows(rows, [3, "prompt"])  # a column name that is not a str
    with pytest.raises(TypeError):
        check_rows({"prompt": "1+1="}, ["prompt"])  # not a sequence at all


def test_checks_hold_on_every_call_not_only_the_first():
    """conftest keeps each function's signature for typeguard: a function already checked many times
    with good shapes still rejects a bad one, by name."""
    h, w, tokens = torch.zeros(5, 4), torch.zeros(7, 4), torch.zeros(5, dtype=torch.long)
    for _ in range(50):
        linear_logprobs(h, w, None, tokens)
    with pytest.raises(TypeError, match="linear_logprobs"):
        linear_logprobs(h, w, None, torch.zeros(6, dtype=torch.long))
