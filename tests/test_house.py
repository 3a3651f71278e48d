"""The product speaks of the product: no numbered work periods or tracker numbers of this project in
the README, the docs, the notebooks, the package, the tests or the benchmarks (a peer's tracker,
written with '#', may be cited)."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY = re.compile(r"\b(?:work\s+)?(?:sessions?|stops?)\s+\d|\bissues?\s+\d", re.I)
FILES = ["README.md"] + [f for pattern in ("docs/**/*.md", "notebooks/*.ipynb", "unified_rl/**/*.py", "tests/**/*.py",
                                            "benchmarks/**/*.py", "recipes/**/*") for f in glob.glob(os.path.join(ROOT, pattern), recursive=True)]


def test_no_work_periods_or_tracker_numbers():
    found = []
    for path in FILES:
        if os.path.isfile(path):
            for n, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
                if HISTORY.search(line):
                    found.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_pattern_catches_what_it_is_for():
    digit = "3"
    assert HISTORY.search("measured in session " + digit) and HISTORY.search("as issue " + "1" + digit + " asks")
    assert not HISTORY.search("TRL issues #3741") and not HISTORY.search("a session of training")


def test_library_files_and_functions_stay_short():
    """No library file over 300 lines, no function over 60, and the loop (Algorithm 1) under 200."""
    import ast

    long_files, long_functions = [], []
    for path in glob.glob(os.path.join(ROOT, "unified_rl", "**", "*.py"), recursive=True):
        source = open(path, encoding="utf-8").read()
        name = os.path.relpath(path, ROOT)
        if source.count("\n") > (199 if name == os.path.join("unified_rl", "loop.py") else 300):
            long_files.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_files and not long_functions, long_files + long_functions
