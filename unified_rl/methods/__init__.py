"""Training methods as compositions, and the one registry of method names.

Each preset returns a :class:`Method` -- (data source, reward, coefficient) -- whose coefficient
is a ``chain`` with the method's equation in its docstring, and whose data source is a recipe
(``unified_rl.data.recipes``) the Trainer builds on the run's rows and sampler. A method has one
name everywhere: ``Method.name``, its chain's name, the CLI's ``--method`` and the docs.

* ``paper``: the six methods of DeepSeekMath §5.2 (and GRPO with process supervision);
* ``variants``: the GRPO family of 2025-26 (Dr. GRPO, DAPO, BNPO, GSPO, LUSPO, CISPO, SAPO, RLOO, REINFORCE++);
* ``preference``: IPO, hinge and SimPO beside DPO.
"""

from .method import Method
from .paper import dpo, grpo, grpo_process, online_rft, ppo, rft, sft
from .preference import hinge, ipo, simpo
from .registry import REGISTRY, Entry, build, register, with_sampler_correction
from .variants import bnpo, cispo, dapo, dr_grpo, gspo, luspo, reinforce_pp, rloo, sapo

_PAIRS = {"group_size": "samples_per_question", "dpo_beta": "beta", "beta": None}  # a pair method's beta is the recipe's dpo_beta
_SAMPLES = {"group_size": "samples_per_question"}

register("sft", sft, "supervised fine-tuning, GC = 1")
register("rft", rft, "rejection sampling from the frozen SFT model, GC = 1[correct]", _SAMPLES)
register("online_rft", online_rft, "rejection sampling from the current policy", _SAMPLES)
register("dpo", dpo, "direct preference optimisation on sampled pairs", _PAIRS)
register("ppo", ppo, "clipped surrogate, GAE with a value model, KL in the reward")
register("grpo", grpo, "group-normalised outcome reward, clip, k3 KL")
register("grpo_process", grpo_process, "GRPO with process supervision (normalised step rewards)")
register("dr_grpo", dr_grpo, "Dr. GRPO: no std division, w = 1/(B L_max)")
register("dapo", dapo, "DAPO: clip-higher, token mean over the batch")
register("bnpo", bnpo, "token mean over the batch")
register("gspo", gspo, "GSPO: one clipped ratio per sequence (geometric mean)")
register("luspo", luspo, "LUSPO: GSPO's ratio, summed over tokens")
register("cispo", cispo, "CISPO: stop-gradient clipped IS weight, every token kept")
register("sapo", sapo, "SAPO: a soft sigmoid gate in place of the clip")
register("rloo", rloo, "RLOO: leave-one-out baseline, k1 KL in the reward, sequence ratio")
register("reinforce_pp", reinforce_pp, "REINFORCE++: per-token KL in the reward, returns whitened over the batch")
register("ipo", ipo, "IPO: squared margin loss on pairs", _PAIRS)
register("hinge", hinge, "hinge (SLiC) loss on pairs", _PAIRS)
register("simpo", simpo, "SimPO: reference-free, length-normalised pairs", _PAIRS)

__all__ = ["Method", "sft", "rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process", "dr_grpo", "dapo", "bnpo", "gspo", "luspo", "cispo",
           "sapo", "rloo", "reinforce_pp", "ipo", "hinge", "simpo", "REGISTRY", "Entry", "register", "build", "with_sampler_correction"]
