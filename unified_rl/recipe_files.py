"""Reading a recipe file (TOML, YAML or JSON) strictly: no key twice, no YAML aliases, at most 1 MiB."""

import json
import os
import tomllib
from typing import Any

MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of settings, not data


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice")
        out[key] = value
    return out


def _strict_yaml(stream) -> Any:
    """``yaml.safe_load`` that also refuses a key given twice and anchors/aliases (a few lines of
    aliases can expand to gigabytes)."""
    import yaml

    class Strict(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise ValueError(f"line {self.peek_event().start_mark.line + 1}: an alias (*name); write the value out instead")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ValueError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(stream, Loader=Strict)  # noqa: S506 -- a SafeLoader subclass


def read_table(path: str) -> dict[str, Any]:
    """The key/value table of a TOML, YAML (.yaml, .yml) or JSON config file, read strictly: no key
    twice, no YAML aliases, at most 1 MiB; a clear error naming the file otherwise. YAML is read
    with a safe loader (no Python objects are built)."""
    if not isinstance(path, str) or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    if os.path.getsize(path) > MAX_RECIPE_BYTES:
        raise ValueError(f"config file {path!r}: {os.path.getsize(path)} bytes, over the {MAX_RECIPE_BYTES} a recipe may have")
    try:
        with open(path, "rb") as f:
            if path.endswith(".toml"):
                data = tomllib.load(f)
            elif path.endswith((".yaml", ".yml")):
                data = _strict_yaml(f)
            else:
                data = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"config file {path!r} cannot be read: {' '.join(str(e).split())}") from None
    except Exception as e:  # yaml.YAMLError, imported lazily
        if type(e).__module__.startswith("yaml"):
            raise ValueError(f"config file {path!r} cannot be read: {' '.join(str(e).split())}") from None
        raise
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r}: expected a table of settings, got {type(data).__name__}")
    return data
