"""Every Python snippet in README.md and docs/ runs as written: a page's snippets, in order, in a
fresh interpreter (docs/extending.md has its own test, which also bounds each snippet's length)."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
WITH_CODE = [p for p in PAGES if "```python" in open(p).read() and not p.endswith("extending.md")]


def test_the_pages_with_python_are_found():
    names = {os.path.relpath(p, ROOT) for p in WITH_CODE}
    assert {"README.md", os.path.join("docs", "training.md"), os.path.join("docs", "methods", "grpo.md")} <= names


@pytest.mark.parametrize("page", WITH_CODE, ids=[os.path.relpath(p, ROOT) for p in WITH_CODE])
def test_every_snippet_of_the_page_runs_as_written(page, tmp_path):
    program = "\n".join(re.findall(r"```python\n(.*?)```", open(page).read(), re.S)) + "\nprint('snippets ran')\n"
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "snippets ran" in out.stdout
