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
from .paper import dpo, grpo, online_rft, ppo, rft, sft
from .preference import hinge, ipo, simpo
from .registry import REGISTRY, Entry, from_config, given, register
from .variants import bnpo, cispo, dapo, dr_grpo, gspo, luspo, reinforce_pp, rloo, sapo

register("sft", sft, lambda c: sft(), "supervised fine-tuning, GC = 1")
register("rft", rft, lambda c: rft(**given(c, samples_per_question="group_size")), "rejection sampling from the frozen SFT model, GC = 1[correct]")
register("online_rft", online_rft, lambda c: online_rft(**given(c, samples_per_question="group_size")), "rejection sampling from the current policy")
register("dpo", dpo, lambda c: dpo(**given(c, samples_per_question="group_size", beta="dpo_beta")), "direct preference optimisation on sampled pairs")
register("ppo", ppo, lambda c: ppo(**given(c, epsilon="epsilon", beta="beta")), "clipped surrogate, GAE with a value model, KL in the reward")
register("grpo", grpo, lambda c: grpo(**given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "group-normalised outcome reward, clip, k3 KL")
register("grpo_process", lambda **kw: grpo(supervision="process", **kw),
         lambda c: grpo(supervision="process", **given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "GRPO with process supervision (normalised step rewards)")
register("dr_grpo", dr_grpo, lambda c: dr_grpo(c.max_new_tokens, **given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "Dr. GRPO: no std division, w = 1/(B L_max)")
register("dapo", dapo, lambda c: dapo(**given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "DAPO: clip-higher, token mean over the batch")
register("bnpo", bnpo, lambda c: bnpo(**given(c, group_size="group_size", beta="beta", epsilon="epsilon")), "token mean over the batch")
register("gspo", gspo, lambda c: gspo(**given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "GSPO: one clipped ratio per sequence (geometric mean)")
register("luspo", luspo, lambda c: luspo(**given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "LUSPO: GSPO's ratio, summed over tokens")
register("cispo", cispo, lambda c: cispo(**given(c, group_size="group_size", beta="beta")), "CISPO: stop-gradient clipped IS weight, every token kept")
register("sapo", sapo, lambda c: sapo(**given(c, group_size="group_size", beta="beta")), "SAPO: a soft sigmoid gate in place of the clip")
register("rloo", rloo, lambda c: rloo(**given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "RLOO: leave-one-out baseline, k1 KL in the reward, sequence ratio")
register("reinforce_pp", reinforce_pp, lambda c: reinforce_pp(**given(c, group_size="group_size", beta="beta", epsilon="epsilon")),
         "REINFORCE++: per-token KL in the reward, returns whitened over the batch")
register("ipo", ipo, lambda c: ipo(**given(c, samples_per_question="group_size", beta="dpo_beta")), "IPO: squared margin loss on pairs")
register("hinge", hinge, lambda c: hinge(**given(c, samples_per_question="group_size", beta="dpo_beta")), "hinge (SLiC) loss on pairs")
register("simpo", simpo, lambda c: simpo(**given(c, samples_per_question="group_size", beta="dpo_beta")),
         "SimPO: reference-free, length-normalised pairs")

__all__ = ["Method", "sft", "rft", "online_rft", "dpo", "ppo", "grpo", "dr_grpo", "dapo", "bnpo", "gspo", "luspo", "cispo", "sapo",
           "rloo", "reinforce_pp", "ipo", "hinge", "simpo", "REGISTRY", "Entry", "register", "from_config", "given"]
