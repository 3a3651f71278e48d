"""Every snippet of docs/extending.md runs as written, in order, and each stays short."""

import os
import re
import subprocess
import sys

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "extending.md")


def _snippets():
    return re.findall(r"```python\n(.*?)```", open(DOC).read(), re.S)


def test_each_extension_is_at_most_about_twenty_lines():
    setup, *extensions = _snippets()
    assert len(extensions) >= 5  # a method (composed and from scratch), a sampler, a reward, a data source
    for code in extensions:
        lines = [line for line in code.splitlines() if line.strip()]
        assert len(lines) <= 22, code


def test_every_snippet_runs_in_order():
    program = "\n".join(_snippets()) + "\nprint('all snippets ran')\n"
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=600,
                         cwd=os.path.dirname(DOC), env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "all snippets ran" in out.stdout
