"""Names the command line needs before anything heavy is imported (``unified-rl --help`` loads no
torch). Each tuple is kept equal to the registry it mirrors by a test (tests/test_contract.py)."""

PRECISIONS = ("fp32", "bf16")  # precision.autocast
SAMPLER_NAMES = ("static", "hf", "vllm")  # hf.SAMPLERS
INEXACT_SAMPLERS = ("vllm",)  # samplers whose log-probs are another engine's (Sampler.exact False)
CORRECTION_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")  # coefficients.correction.MODES
METHOD_NAMES = ("sft", "rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process", "dr_grpo", "dapo", "bnpo", "gspo", "luspo", "cispo",
                "sapo", "rloo", "reinforce_pp", "ipo", "hinge", "simpo")  # methods.REGISTRY (the built-in ones)
