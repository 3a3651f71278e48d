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
