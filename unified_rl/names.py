"""Names the command line needs before anything heavy is imported (``unified-rl --help`` loads no
torch). Each tuple is kept equal to the registry it mirrors by a test (tests/test_contract.py)."""

PRECISIONS = ("fp32", "bf16")  # precision.autocast
SAMPLER_NAMES = ("static", "hf")  # hf.SAMPLERS
METHOD_NAMES = ("sft", "rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process", "dr_grpo", "dapo", "bnpo", "gspo", "luspo", "cispo",
                "sapo", "rloo", "reinforce_pp", "ipo", "hinge", "simpo")  # methods.REGISTRY (the built-in ones)
