"""Checkpoints of a run, one interface over both formats: the one-process files
(``unified_rl.checkpoint``: atomic, checksummed, the previous one kept as a fallback) and the DCP
shards that ``torchrun`` ranks write (``unified_rl.sharded_checkpoint``: resharded on another world
size). :class:`Checkpointer` is the protocol the Trainer saves and resumes through;
:class:`TrainerCheckpointer`, the default, reads and writes what a :class:`~unified_rl.loop.Trainer` holds."""

import logging
import os
from typing import Any, Protocol, runtime_checkable

import torch

from .checkpoint import CheckpointError, read_newest, save_state
from .hf import load_policy_state, policy_state
from .metric_logger import rewind
from .sharded_checkpoint import is_sharded, load_sharded, read_manifest, read_rank_state, save_sharded


@runtime_checkable
class Checkpointer(Protocol):
    """Saves a run's state to a folder and resumes it from one (``Trainer(..., checkpointer=lambda trainer: ...)``)."""

    def save(self, folder: str) -> None:
        """Write a checkpoint of the run to ``folder``."""

    def resume(self, folder: str) -> None:
        """Load the checkpoint in ``folder`` into the run."""


class TrainerCheckpointer:
    """The default :class:`Checkpointer`: saves and restores a Trainer's state: weights, optimizer, schedule, counters, RNG, data
    position, the reference, the critic and the coefficient's and reward's own state."""

    def __init__(self, trainer: Any):
        self.t = trainer

    def _rank_state(self) -> dict:
        """What each rank keeps of its own: scheduler, counters, RNG, data position, auxiliary state."""
        return {"scheduler": self.t.scheduler.state_dict(), "step": self.t.step_count, "iteration": self.t.iteration,
                "torch_rng": torch.get_rng_state(), "source": self.t.producer.state_dict(), "coefficient": self.t.coefficient.state_dict(),
                "critic": self.t.critic.state_dict() if self.t.critic is not None else {},
                "reward": self.t.reward.state_dict() if self.t.reward is not None else {}}

    def _load_rank_state(self, state: dict, data: bool = True) -> None:
        """Restore :meth:`_rank_state`; ``data=False`` keeps this rank's RNG and data stream as they are."""
        self.t.scheduler.load_state_dict(state["scheduler"])
        self.t.step_count, self.t.iteration = int(state["step"]), int(state["iteration"])
        if data:
            torch.set_rng_state(state["torch_rng"])
            self.t.producer.load_state_dict(state["source"])
        self.t.coefficient.load_state_dict(state["coefficient"])
        if self.t.critic is not None:
            self.t.critic.load_state_dict(state["critic"])
        if self.t.reward is not None:
            self.t.reward.load_state_dict(state["reward"])

    def _sharded_parts(self) -> dict:
        """Models besides the policy that a sharded checkpoint stores through DCP, each with its
        optimizer (None for the reference): the reference copy, the critic's value model (PPO)."""
        parts = {"critic": (self.t.critic.model, self.t.critic.optimizer)} if self.t.critic is not None else {}
        if self.t.reference is not None and self.t.reference.copy is not None:
            parts["reference"] = (self.t.reference.copy, None)
        return parts

    def state_dict(self) -> dict:
        """Everything needed to resume bitwise: weights, optimizer, scheduler, RNG, data position, auxiliary models."""
        parts = {"policy": policy_state(self.t.policy), "optimizer": self.t.optimizer.state_dict(), **self._rank_state()}
        if self.t.reference is not None:
            parts["reference"] = self.t.reference.state_dict()
        return parts

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (every part is checked to be there before anything is restored)."""
        needed = ["policy", "optimizer", "scheduler", "step", "iteration", "torch_rng", "source", "coefficient", "reward"]
        needed += (["reference"] if self.t.reference is not None else []) + (["critic"] if self.t.critic is not None else [])
        missing = [k for k in needed if k not in state]
        if missing:
            raise CheckpointError(f"checkpoint state has no {', '.join(missing)}: it is not a checkpoint of this kind of run")
        load_policy_state(self.t.policy, state["policy"])
        self.t.optimizer.load_state_dict(state["optimizer"])
        if self.t.reference is not None:
            self.t.reference.load_state_dict(state["reference"])
        self._load_rank_state(state)

    def _meta(self) -> dict:
        """What a checkpoint must agree on with the run that resumes it."""
        return {"method": self.t.method.name, "world_size": self.t.world, "shapes": {k: list(v.shape) for k, v in policy_state(self.t.policy).items()}}

    def save(self, folder: str) -> None:
        """Write a checkpoint atomically to ``folder`` (the previous one is kept as ``folder.prev``).
        Under torchrun every rank calls it: model and optimizer through DCP, each rank's own state
        beside them (``unified_rl.sharded_checkpoint``)."""
        meta = {**self._meta(), "step": self.t.step_count}
        if self.t.world > 1:
            save_sharded(folder, self.t.policy, self.t.optimizer, self._rank_state(), meta, others=self._sharded_parts())
        else:
            save_state(self.state_dict(), folder, meta=meta)

    def _check_meta(self, folder: str, meta: dict, reshard: bool) -> None:
        """A checkpoint of another method or model shape (or, unless ``reshard``, world size) is an error."""
        mine = self._meta()
        if meta.get("method", mine["method"]) != mine["method"]:
            raise CheckpointError(f"{folder}: a checkpoint of method {meta['method']!r}, but this run trains {mine['method']!r}")
        if not reshard and meta.get("world_size", 1) != mine["world_size"]:
            raise CheckpointError(f"{folder}: saved by {meta.get('world_size', 1)} process in the one-process format, resumed by "
                                  f"{mine['world_size']} ranks, which read only the sharded format; resume it in one process "
                                  "(unified-rl train ... --resume, without torchrun)")
        for name, shape in (meta.get("shapes") or mine["shapes"]).items():
            if mine["shapes"].get(name) != shape:
                raise CheckpointError(f"{folder}: parameter {name!r} has shape {shape} in the checkpoint but "
                                      f"{mine['shapes'].get(name)} in this model (another model?)")

    def _read_checkpoint(self, folder: str) -> dict:
        """The verified state in ``folder``; if it is corrupted and the previous checkpoint is sound,
        that one, said in a warning. A checkpoint of another method or model shape is an error."""
        folder = folder.rstrip("/")
        state, meta = read_newest(folder)
        self._check_meta(folder, meta, reshard=False)
        return state

    def _resume_sharded(self, folder: str) -> None:
        """Load a checkpoint that ``torchrun`` ranks wrote, into this job whatever its world size."""
        where, manifest = read_manifest(folder)
        self._check_meta(where, manifest["meta"], reshard=True)
        load_sharded(where, self.t.policy, self.t.optimizer, others=self._sharded_parts())
        state, own = read_rank_state(where, self.t.rank)
        same = own and manifest["world_size"] == self.t.world
        self._load_rank_state(state, data=same)
        if not same and self.t.rank == 0:
            logging.getLogger("unified_rl").warning(
                f"{where}: written by {manifest['world_size']} rank(s), resumed by {self.t.world}: the model, optimizer, schedule "
                "and step are restored (resharded); each rank's data stream starts afresh from its seed")

    def resume(self, folder: str) -> None:
        """Load the checkpoint in ``folder`` (verified: see :meth:`_read_checkpoint`) into the trainer.
        The newest checkpoint decides the format, whichever it is: ``folder`` itself, or its
        ``.prev`` only when a save stopped between its two renames. A one-process checkpoint is
        never passed over for an older sharded one (nor the other way round). The run's ``metrics.jsonl``
        keeps this phase's steps up to the checkpoint and the trainer's ``history`` starts from them."""
        folder = folder.rstrip("/")
        newest = folder if os.path.isdir(folder) else folder + ".prev"
        if is_sharded(newest):
            self._resume_sharded(newest)
        else:
            self.load_state_dict(self._read_checkpoint(folder))
        kept = rewind(self.t.cfg.run.out_dir, self.t.phase, self.t.step_count, self.t.rank)  # later steps will be done again
        if kept is not None:
            self.t.history = kept
