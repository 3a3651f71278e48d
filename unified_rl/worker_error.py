"""The error a failed rollout worker stops a run with (torch-free, so the command line can name it
without loading torch)."""


class RolloutWorkerError(RuntimeError):
    """The rollout worker died, failed or went silent; the run stops (with a checkpoint)."""
