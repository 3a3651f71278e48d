"""Checkpoints of a ``torchrun`` job: the model and optimizer through ``torch.distributed.checkpoint``
(DCP: each rank writes its shards, any world size reads them back -- resharding), and each rank's
own state (RNG, data position, scheduler, counters) as a verified :func:`~unified_rl.checkpoint.save_state` folder.

Layout of ``checkpoint/``: ``weights/`` (DCP), ``rank0/`` ... ``rankN-1/``, and ``manifest.json``,
written by rank 0 last, after every rank has finished. The save goes to ``checkpoint.tmp/`` and is
renamed into place only then (the old one kept as ``checkpoint.prev``): a rank killed mid-save
leaves the last good checkpoint as it was. Reading needs no process group: one plain process can
resume (or export) a checkpoint that N ranks wrote.

Verified before any state changes, as the one-process format is: the manifest holds a SHA-256 of
every file of the checkpoint (DCP shards and metadata, each rank's files), each must be there, a
plain file (no link to a device) and match; otherwise the previous checkpoint is used, with a
warning. DCP's metadata file is a pickle: it is read first by an unpickler that admits only the
classes DCP writes there (its metadata dataclasses, ``torch.Size``, dtypes, layouts), so a crafted
file is refused instead of run.
"""

import hashlib
import json
import logging
import os
import pickle
import shutil
import stat
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint.metadata as dcp_metadata
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from . import distributed
from .checkpoint import CheckpointError, _sha256, read_newest, save_state

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
        doc = {"format": "dcp-1", "world_size": distributed.world_size(), "meta": meta, "files": _file_digests(tmp)}
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


def _file_digests(folder: str) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by path relative to it."""
    out = {}
    for where, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(where, name)
            out[os.path.relpath(path, folder)] = _sha256(path)
    return out


def _check_files(folder: str, digests: dict[str, str]) -> None:
    """Every file the manifest lists is a plain file with its checksum; a ValueError naming the first that is not."""
    for rel, digest in sorted(digests.items()):
        path = os.path.join(folder, rel)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            raise ValueError(f"{path} is missing") from None
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a plain file (a link?)")
        if _sha256(path) != digest:
            raise ValueError(f"{path} does not match its checksum (changed or damaged since it was written)")


_DCP_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
                ("torch.distributed.checkpoint.filesystem", "_StorageInfo")}


class _MetadataUnpickler(pickle.Unpickler):
    """Admits only what DCP's metadata holds; anything else (a function, ``os.system``) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        admitted = ((module, name) in _DCP_GLOBALS
                    or (module == dcp_metadata.__name__ and isinstance(getattr(dcp_metadata, name, None), type))
                    or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)))
        if not admitted:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which DCP's metadata never holds")
        return super().find_class(module, name)


def check_metadata(folder: str) -> None:
    """Read ``folder``'s DCP metadata with :class:`_MetadataUnpickler` (nothing in it is run); a ValueError if it is not DCP's."""
    path = os.path.join(folder, "weights", ".metadata")
    try:
        with open(path, "rb") as f:
            doc = _MetadataUnpickler(f).load()
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
    except Exception as e:  # a crafted or damaged pickle: never passed on to DCP
        raise ValueError(f"{path}: not DCP's metadata, not loaded ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dcp_metadata.Metadata):
        raise ValueError(f"{path}: not DCP's metadata (a {type(doc).__name__}), not loaded")


def _verified(candidate: str) -> dict:
    """The manifest of ``candidate``, after checking it, every file it lists and the DCP metadata."""
    with open(os.path.join(candidate, MANIFEST), encoding="utf-8") as f:
        doc = json.load(f)
    digest = doc.pop("sha256")
    if hashlib.sha256(json.dumps(doc).encode()).hexdigest() != digest:
        raise ValueError(f"{os.path.join(candidate, MANIFEST)}: its content does not match its checksum")
    _check_files(candidate, doc.get("files", {}))
    check_metadata(candidate)
    return doc


def read_manifest(folder: str) -> tuple[str, dict]:
    """(the folder to read, its manifest), verified (:func:`_verified`): ``folder``, else
    ``folder.prev`` -- when a save stopped between its two renames, or when ``folder`` fails the
    check (said in a warning); a CheckpointError naming the fault when neither is sound."""
    folder = folder.rstrip("/")
    errors = []
    for candidate in (folder, folder + ".prev"):
        if not os.path.exists(os.path.join(candidate, MANIFEST)):
            continue
        try:
            doc = _verified(candidate)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            errors.append(str(e) if str(e).startswith(candidate) else f"{os.path.join(candidate, MANIFEST)}: {e}")
            continue
        if errors:
            logging.getLogger("unified_rl").warning(f"{errors[0]}; resuming from the previous checkpoint {candidate} instead")
        return candidate, doc
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
