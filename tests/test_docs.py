"""Every public name of the package has a docstring (the API pages are generated from them), and every
config field is documented."""

import importlib
import inspect
import os
import pkgutil

import unified_rl

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _public_objects():
    for info in pkgutil.walk_packages(unified_rl.__path__, "unified_rl."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        yield info.name, module
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{info.name}.{name}", obj
                if inspect.isclass(obj):
                    for attr, member in vars(obj).items():
                        if not attr.startswith("_") and inspect.isfunction(member) and not getattr(member, "__isabstractmethod__", False):
                            yield f"{info.name}.{name}.{attr}", member


def _protocol_docs():
    """Method names documented on the package's Protocols: implementations inherit that contract."""
    from typing import Protocol

    names = set()
    for _, obj in _public_objects():
        if inspect.isclass(obj) and Protocol in getattr(obj, "__mro__", ()):
            names |= {k for k, v in vars(obj).items() if inspect.isfunction(v) and (inspect.getdoc(v) or "").strip()}
    return names


def test_every_public_name_has_a_docstring():
    protocol = _protocol_docs()
    assert {"check", "objective", "gc", "metrics", "sample", "prepare", "state_dict", "load_state_dict"} <= protocol
    missing = [name for name, obj in _public_objects()
               if not (inspect.getdoc(obj) or "").strip() and name.rsplit(".", 1)[-1] not in protocol]
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_documentation_site_builds_strictly(tmp_path):
    """mkdocs-material + mkdocstrings, warnings as errors (a broken link or reference fails)."""
    import os
    import subprocess
    import sys

    root = os.path.join(os.path.dirname(__file__), "..")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=root,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "api" / "coefficients" / "index.html").exists()


def test_the_method_table_in_the_docs_is_the_code_s():
    """docs/paradigm.md holds exactly what ``python -m unified_rl.apps.docs_method_table`` prints (never edited by hand)."""
    import os

    from unified_rl.apps.docs_method_table import END, START, table
    from unified_rl.methods import REGISTRY

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "paradigm.md")).read()
    held = doc[doc.index(START): doc.index(END) + len(END)]
    assert held == table(), "docs/paradigm.md's method table is stale: paste the output of python -m unified_rl.apps.docs_method_table"
    assert all(f"| `{name}` |" in held for name in REGISTRY)


def test_every_config_field_is_documented_as_the_dataclass_says():
    """docs/configuration.md's table is the one generated from TrainConfig (no field missing, no stale default)."""
    from unified_rl.config import fields_table

    page = open(os.path.join(ROOT, "docs", "configuration.md")).read()
    table = page.split("<!-- fields-table -->\n", 1)[1].split("\n<!-- /fields-table -->", 1)[0]
    assert table == fields_table()


def test_notation_lists_every_rollout_field_and_axis():
    """docs/notation.md's Rollout table is generated from the class, and every axis name a jaxtyping
    annotation in the package uses is in its axis table."""
    import glob
    import re

    from unified_rl.rollout import fields_table

    page = open(os.path.join(ROOT, "docs", "notation.md")).read()
    assert page.split("<!-- rollout-fields -->\n", 1)[1].split("\n<!-- /rollout-fields -->", 1)[0] == fields_table()
    axes_table = page.split("## Axis vocabulary", 1)[1].split("\n## ", 1)[0]
    documented = {a for row in re.findall(r"^\| (.+?) \|", axes_table, re.M) for a in re.findall(r"`(\w+)`", row)}
    used = set()
    for path in glob.glob(os.path.join(ROOT, "unified_rl", "**", "*.py"), recursive=True):
        for dims in re.findall(r'(?:Float|Int|Bool|Shaped)\[Tensor, *"([^"]*)"\]', open(path).read()):
            used |= {d.strip("*#_ ") for d in dims.split()} - {""}
    assert used <= documented, sorted(used - documented)


def test_the_claims_intervals_recompute_from_the_committed_scores():
    """docs/results.md's table of both intervals per claim is what the committed scores.npz give."""
    from unified_rl.apps.run_intervals import table

    page = open(os.path.join(ROOT, "docs", "results.md")).read()
    held = page.split("<!-- run-intervals -->\n", 1)[1].split("\n<!-- /run-intervals -->", 1)[0]
    assert held == table()
