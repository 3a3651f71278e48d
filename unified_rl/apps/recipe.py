"""A recipe at the edge: the flat table a recipe file and the command line's flags give is split
into the method's settings (``method``, ``group_size``, ``beta``, ``epsilon``, ``dpo_beta``), the
run's :class:`~unified_rl.config.TrainConfig` fields and the ``train`` command's own options. The
settings are checked before torch is imported; the method is built from them after
(``methods.build``), so the run's configuration holds no method math."""

import difflib
from typing import Any

from ..config import METHOD_KEYS, METHOD_SETTINGS, TrainConfig, all_fields, check_type
from ..names import METHODS



def known_methods() -> list[str]:
    """Method names: the registry's (the built-in ones and any a script registered; no torch import)."""
    return list(METHODS)


def method_settings(table: dict[str, Any]) -> dict[str, Any]:
    """The method's keys of ``table`` (a recipe with flags applied), checked: a known ``method``
    name (with a did-you-mean), each setting of its type and range."""
    name = table.get("method")
    if not name:
        raise ValueError("--method is required (or a method key in the --config file)")
    if name not in known_methods():
        close = difflib.get_close_matches(str(name).replace("-", "_"), known_methods(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"method {name!r}: unknown method{hint}; choose one of {', '.join(known_methods())}")
    out = {"method": name}
    for key, (kind, rule, _) in METHOD_SETTINGS.items():
        value = table.get(key)
        check_type(key, kind, value)
        why = rule(value) if value is not None else None
        if why:
            raise ValueError(f"config field {key!r} = {value!r}: {why}")
        out[key] = value
    return out


def split(table: dict[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
    """``table``'s method settings (checked) and its run configuration (every field checked)."""
    run_fields = {f.name for f in all_fields()}
    settings = method_settings({k: v for k, v in table.items() if k in METHOD_KEYS})
    return settings, TrainConfig.from_dict({k: v for k, v in table.items() if k in run_fields})


def build_method(settings: dict[str, Any], cfg: TrainConfig):
    """The registered method the settings name, built with them (Dr. GRPO's L_max is the run's max_new_tokens)."""
    from .. import methods

    rest = {k: v for k, v in settings.items() if k != "method"}
    return methods.build(settings["method"], max_new_tokens=cfg.sampling.max_new_tokens, **rest)
