"""Mixed precision: ``precision="bf16"`` runs matmuls in bfloat16 under ``torch.autocast`` while
weights, gradients, the optimizer and every log-softmax stay fp32 (the usual "bf16 mixed
precision" of TRL, verl and OpenRLHF). On our AVX512-BF16 CPU a GRPO step ran 1.2x (width 128)
to 2.0x (width 512) faster (docs/performance.md); the log-probs it gives differ from fp32 ones
at the 1e-2 level.

On CPU, PyTorch's fused (flash) attention backward is about 2.7x slower in bf16 than in fp32, while
its plain "math" attention in bf16 is faster than either, so passes that will be differentiated
(``backward=True``) select the math kernel on CPU; no-grad passes (sampling, reference
log-probs) keep the fused one, which is faster there. GPUs always keep their fused kernels."""

import contextlib

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .names import PRECISIONS  # noqa: F401  (the table is names.PRECISIONS; re-exported for the engine)


def autocast(model: nn.Module, precision: str, *, backward: bool = False) -> contextlib.AbstractContextManager:
    """A context in which ``model`` computes at ``precision`` ("fp32": no autocast; "bf16");
    ``backward``: the pass inside will be differentiated."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision {precision!r}: choose fp32 or bf16")
    device = next(model.parameters()).device
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    if device.type == "cpu" and backward:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack
