"""Checkpoints without pickle: nested state dicts split into tensors (safetensors) and
everything else (JSON), written to a temporary folder and renamed into place, so a kill during
a save never loses the last good checkpoint."""

import json
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


def flatten(state: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Move tensors out of ``state`` into ``tensors`` (by path); return the JSON-able rest."""
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


def save_state(state: dict, folder: str) -> None:
    """Atomically write ``state`` to ``folder`` (state.json + tensors.safetensors)."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = folder.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tensors: dict[str, torch.Tensor] = {}
    doc = flatten(state, tensors)
    # safetensors refuses shared storage (tied weights): store independent copies.
    save_file({k: v.clone() for k, v in tensors.items()}, os.path.join(tmp, "tensors.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    old = folder.rstrip("/") + ".old"
    if os.path.exists(folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: str) -> dict:
    """Read a folder written by :func:`save_state` (falls back to the ``.old`` copy left by a
    save interrupted between its two renames)."""
    if not os.path.exists(os.path.join(folder, "state.json")) and os.path.exists(os.path.join(folder + ".old", "state.json")):
        folder = folder + ".old"
    path = os.path.join(folder, "state.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {folder!r} (state.json missing)")
    with open(path) as f:
        doc = json.load(f)
    return unflatten(doc, load_file(os.path.join(folder, "tensors.safetensors")))


def latest(folder: str) -> Optional[str]:
    """The checkpoint folder to resume from inside a run folder, if any."""
    path = os.path.join(folder, "checkpoint")
    return path if os.path.exists(os.path.join(path, "state.json")) or os.path.exists(os.path.join(path + ".old", "state.json")) else None
