"""Checkpoints without pickle: nested state dicts split into tensors (safetensors) and
everything else (JSON), written to a temporary folder and renamed into place, so a kill during
a save never loses the last good checkpoint. The previous checkpoint is kept beside it
(``checkpoint.prev``). ``state.json`` carries a SHA-256 of the tensor file and of its own state
text, plus metadata (method, parameter shapes, world size): a truncated, bit-flipped or foreign
checkpoint is refused in one line naming the file and the mismatch, never loaded silently."""

import hashlib
import json
import logging
import os
import shutil
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

_SEP = "\x1f"  # key separator that never appears in state-dict keys


def _key(k: Any) -> str:
    if isinstance(k, bool) or not isinstance(k, (int, str)):
        raise TypeError(f"checkpoint: unsupported key {k!r} ({type(k).__name__})")
    return f"i:{k}" if isinstance(k, int) else f"s:{k}"


def _unkey(k: str) -> Any:
    return int(k[2:]) if k.startswith("i:") else k[2:]


def flatten(state: Any, tensors: dict, prefix: str = "") -> Any:
    """Move tensors out of ``state`` into ``tensors`` (a dict of path to tensor); return the
    JSON-able rest."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[_key(k), flatten(v, tensors, f"{prefix}{_SEP}{_key(k)}")] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        items = [flatten(v, tensors, f"{prefix}{_SEP}{i}") for i, v in enumerate(state)]
        return {"__tuple__": items} if isinstance(state, tuple) else items
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"checkpoint: cannot store {type(state).__name__} at {prefix.replace(_SEP, '/')}")


def unflatten(doc: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`: put the tensors back into the JSON structure."""
    if isinstance(doc, dict):
        if "__tensor__" in doc:
            return tensors[doc["__tensor__"]]
        if "__tuple__" in doc:
            return tuple(unflatten(v, tensors) for v in doc["__tuple__"])
        return {_unkey(k): unflatten(v, tensors) for k, v in doc["__dict__"]}
    if isinstance(doc, list):
        return [unflatten(v, tensors) for v in doc]
    return doc


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: corrupted, unreadable, or of another run."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_state(state: dict, folder: str, meta: Optional[dict] = None) -> None:
    """Atomically write ``state`` to ``folder`` (state.json + tensors.safetensors); the checkpoint
    that was there becomes ``folder.prev``. ``meta``: JSON-able facts checked on resume."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    folder = folder.rstrip("/")
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tensors: dict[str, torch.Tensor] = {}
    doc = flatten(state, tensors)
    # safetensors refuses shared storage (tied weights): store independent copies.
    save_file({k: v.clone() for k, v in tensors.items()}, os.path.join(tmp, "tensors.safetensors"))
    text = json.dumps(doc)
    wrapper = {"format": 2, "meta": meta or {}, "sha256_tensors": _sha256(os.path.join(tmp, "tensors.safetensors")),
               "sha256_state": hashlib.sha256(text.encode()).hexdigest(), "state": doc}
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(wrapper, f)
        f.flush()
        os.fsync(f.fileno())
    prev = folder + ".prev"
    if os.path.exists(folder):
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(folder, prev)
    os.replace(tmp, folder)


def read_verified(folder: str) -> tuple[dict, dict]:
    """(state, meta) of the checkpoint in ``folder``, after checking its files; a CheckpointError
    naming the file and the fault otherwise."""
    path = os.path.join(folder, "state.json")
    tensors = os.path.join(folder, "tensors.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {folder!r} (state.json missing)")
    try:
        with open(path, encoding="utf-8") as f:
            wrapper = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a checkpoint state file ({e})") from None
    if not isinstance(wrapper, dict):
        raise CheckpointError(f"{path}: not a checkpoint state file (a {type(wrapper).__name__}, not an object)")
    if "format" not in wrapper:  # written before checksums existed: the state itself, unverified
        wrapper = {"meta": {}, "state": wrapper}
    else:
        missing = [k for k in ("meta", "sha256_tensors", "sha256_state", "state") if k not in wrapper]
        if missing:
            raise CheckpointError(f"{path}: not a checkpoint state file (no {', '.join(missing)})")
        if hashlib.sha256(json.dumps(wrapper["state"]).encode()).hexdigest() != wrapper["sha256_state"]:
            raise CheckpointError(f"{path}: its state does not match its checksum (the file was altered)")
        if not os.path.exists(tensors) or _sha256(tensors) != wrapper["sha256_tensors"]:
            raise CheckpointError(f"{tensors}: missing, truncated or altered (its SHA-256 does not match state.json)")
    try:
        return unflatten(wrapper["state"], load_file(tensors)), wrapper["meta"]
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise CheckpointError(f"{folder}: the checkpoint's structure is broken ({type(e).__name__}: {e})") from None


def read_newest(folder: str) -> tuple[dict, dict]:
    """(state, meta) of the newest sound checkpoint: ``folder``, else ``folder.prev`` -- when a save
    was interrupted between its two renames (``folder`` missing), or when ``folder`` is corrupted,
    which is logged as a warning. A CheckpointError says so when neither can be used."""
    folder = folder.rstrip("/")
    prev = folder + ".prev"
    newest = folder if os.path.exists(os.path.join(folder, "state.json")) or not os.path.exists(os.path.join(prev, "state.json")) else prev
    try:
        return read_verified(newest)
    except CheckpointError as error:
        if newest == prev or not os.path.exists(os.path.join(prev, "state.json")):
            raise CheckpointError(f"{error} (and there is no older checkpoint to fall back to)") from None
        try:
            state, meta = read_verified(prev)
        except CheckpointError as older:
            raise CheckpointError(f"{error}; the previous checkpoint is unusable too: {older}") from None
        logging.getLogger("unified_rl").warning(f"{error}; resuming from the previous checkpoint {prev} (step {meta.get('step')}) instead")
        return state, meta


def load_state(folder: str) -> dict:
    """Read a folder written by :func:`save_state`: the newest sound checkpoint (see :func:`read_newest`)."""
    return read_newest(folder)[0]


def latest(folder: str) -> Optional[str]:
    """The checkpoint folder to resume from inside a run folder, if any."""
    path = os.path.join(folder, "checkpoint")
    marks = ("state.json", "manifest.json")  # one process; torchrun ranks (sharded_checkpoint)
    return path if any(os.path.exists(os.path.join(f, m)) for f in (path, path + ".prev") for m in marks) else None
