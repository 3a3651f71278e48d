"""jaxtyping aliases and the axis vocabulary used across unified_rl.

Axis names (see docs/notation.md):

* ``batch`` -- sequences in a rollout (one question may own several: a GRPO group, a DPO pair)
* ``seq``   -- token positions; every per-token tensor is aligned with ``input_ids``
* ``vocab`` -- vocabulary entries
* ``hidden``-- model width
* ``tokens``-- completion tokens gathered from a ``[batch, seq]`` layout (flattened, ragged)
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

TokenIds = Int[Tensor, "batch seq"]
TokenMask = Bool[Tensor, "batch seq"]
TokenFloat = Float[Tensor, "batch seq"]
SeqFloat = Float[Tensor, "batch"]
SeqInt = Int[Tensor, "batch"]
SeqBool = Bool[Tensor, "batch"]

__all__ = ["Bool", "Float", "Int", "Tensor", "TokenIds", "TokenMask", "TokenFloat", "SeqFloat", "SeqInt", "SeqBool"]
