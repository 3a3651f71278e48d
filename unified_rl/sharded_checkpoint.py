"""Checkpoints of a ``torchrun`` job: the model and optimizer through ``torch.distributed.checkpoint``
(DCP: each rank writes its shards, any world size reads them back -- resharding), and each rank's
own state (RNG, data position, scheduler, counters) as a verified :func:`~unified_rl.checkpoint.save_state` folder.

Layout of ``checkpoint/``: ``weights/`` (DCP), ``rank0/`` ... ``rankN-1/``, and ``manifest.json``,
written by rank 0 last, after every rank has finished. The save goes to ``checkpoint.tmp/`` and is
renamed into place only then (the old one kept as ``checkpoint.prev``): a rank killed mid-save
leaves the last good checkpoint as it was. Reading needs no process group: one plain process can
resume (or export) a checkpoint that N ranks wrote.
"""

import hashlib
import json
import os
import shutil
from typing import Any, Optional

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from . import distributed
from .checkpoint import CheckpointError, read_newest, save_state

MANIFEST = "manifest.json"
_OPTIONS = StateDictOptions(ignore_frozen_params=True)  # LoRA: the adapters (the frozen base is the model's own)


def is_sharded(folder: str) -> bool:
    """True when ``folder`` holds a checkpoint of this kind."""
    return os.path.exists(os.path.join(folder.rstrip("/"), MANIFEST))


def _barrier() -> None:
    if distributed.world_size() > 1:
        dist.barrier()


Parts = dict[str, tuple[nn.Module, Any]]  # name -> (model, its optimizer or None)


def _states(model: nn.Module, optimizer, others: Parts) -> dict[str, Any]:
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    state = {"model": model_sd, "optimizer": optim_sd}
    for name, (module, optim) in others.items():
        state[name], others_optim = get_state_dict(module, optim or [], options=StateDictOptions())
        if optim is not None:
            state[f"{name}.optimizer"] = others_optim
    return state


def save_sharded(folder: str, model: nn.Module, optimizer, rank_state: dict, meta: dict,
                 others: Optional[Parts] = None) -> None:
    """Every rank calls this (it is a collective): ``model`` and ``optimizer`` (and ``others``, each
    a model with its optimizer or None: the sharded reference, PPO's value model) through DCP,
    ``rank_state`` per rank, ``meta`` in the manifest."""
    folder = folder.rstrip("/")
    tmp, prev = folder + ".tmp", folder + ".prev"
    if distributed.rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    dcp.save(_states(model, optimizer, others or {}), checkpoint_id=os.path.join(tmp, "weights"))
    save_state(rank_state, os.path.join(tmp, f"rank{distributed.rank()}"))
    _barrier()  # every rank's part is on disk
    if distributed.rank() == 0:
        doc = {"format": "dcp-1", "world_size": distributed.world_size(), "meta": meta}
        text = json.dumps(doc)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump({**doc, "sha256": hashlib.sha256(text.encode()).hexdigest()}, f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(folder):
            shutil.rmtree(prev, ignore_errors=True)
            os.replace(folder, prev)
        os.replace(tmp, folder)
    _barrier()


def read_manifest(folder: str) -> tuple[str, dict]:
    """(the folder to read, its manifest): ``folder``, else ``folder.prev`` when a save stopped
    between its two renames; a CheckpointError naming the file when neither is sound."""
    folder = folder.rstrip("/")
    errors = []
    for candidate in (folder, folder + ".prev"):
        path = os.path.join(candidate, MANIFEST)
        if not os.path.exists(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            digest = doc.pop("sha256")
            if hashlib.sha256(json.dumps(doc).encode()).hexdigest() != digest:
                raise ValueError("its content does not match its checksum")
            return candidate, doc
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            errors.append(f"{path}: {e}")
    raise CheckpointError("; ".join(errors) or f"no sharded checkpoint at {folder!r} ({MANIFEST} missing)")


def load_sharded(folder: str, model: nn.Module, optimizer, others: Optional[Parts] = None) -> None:
    """Load the DCP part of ``folder`` (from :func:`read_manifest`) into ``model`` and ``optimizer``
    (and ``others``), resharding to this job's world size (one plain process included)."""
    others = others or {}
    state = _states(model, optimizer, others)
    try:
        dcp.load(state, checkpoint_id=os.path.join(folder, "weights"))
    except Exception as e:  # DCP raises its own types (CheckpointException, RuntimeError) for missing or broken shards
        raise CheckpointError(f"{os.path.join(folder, 'weights')}: cannot load the model and optimizer shards "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=_OPTIONS)
    for name, (module, optim) in others.items():
        set_state_dict(module, optim or [], model_state_dict=state[name], optim_state_dict=state.get(f"{name}.optimizer", {}),
                       options=StateDictOptions())


def read_rank_state(folder: str, rank: int) -> tuple[dict, bool]:
    """(the state rank ``rank`` saved, True), or rank 0's with False when the checkpoint has no such
    rank (it was written by fewer ranks)."""
    own = os.path.join(folder, f"rank{rank}")
    if os.path.exists(os.path.join(own, "state.json")):
        return read_newest(own)[0], True
    return read_newest(os.path.join(folder, "rank0"))[0], False
