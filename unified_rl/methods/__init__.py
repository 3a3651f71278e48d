"""Training methods as compositions, and the one registry of method names.

Each preset returns a :class:`Method` -- (data source, reward, coefficient) -- whose coefficient
is a ``chain`` with the method's equation in its docstring, and whose data source is a recipe
(``unified_rl.data.recipes``) the Trainer builds on the run's rows and sampler. A method has one
name everywhere: ``Method.name``, its chain's name, the CLI's ``--method`` and the docs.

* ``paper``: the six methods of DeepSeekMath §5.2 (and GRPO with process supervision);
* ``variants``: the GRPO family of 2025-26 (Dr. GRPO, DAPO, BNPO, GSPO, LUSPO, CISPO, SAPO, RLOO, REINFORCE++);
* ``preference``: IPO, hinge, SimPO, ORPO and online DPO beside DPO;
* ``distillation``: GKD and on-policy distillation from a teacher, over the vocabulary or on the sampled tokens (opd).
"""

from .distillation import distill, gkd, opd
from .method import Method
from .paper import dpo, grpo, grpo_process, online_rft, ppo, rft, sft
from .preference import hinge, ipo, kto, online_dpo, orpo, simpo
from .registry import REGISTRY, Entry, build, register, with_sampler_correction
from .variants import bnpo, cispo, dapo, dr_grpo, gspo, luspo, reinforce_pp, rloo, sapo

__all__ = ["Method", "sft", "rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process", "dr_grpo", "dapo", "bnpo", "gspo", "luspo", "cispo",
           "sapo", "rloo", "reinforce_pp", "ipo", "hinge", "simpo", "orpo", "online_dpo", "kto", "gkd", "distill", "opd", "REGISTRY", "Entry", "register", "build", "with_sampler_correction"]
