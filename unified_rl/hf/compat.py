"""transformers renamed ``past_key_values`` to ``cache`` (5.24 warns, 5.40 removes the old name);
these helpers speak whichever name the installed version uses."""

import inspect
from typing import Any

from transformers import LlamaModel

# A model's forward takes its KV cache under this keyword.
CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned, under either name."""
    return getattr(out, "cache") if CACHE_KWARG == "cache" else out.past_key_values
