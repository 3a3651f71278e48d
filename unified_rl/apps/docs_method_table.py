"""Print docs/paradigm.md's table of every registered method, read from the chains themselves.

``python -m unified_rl.apps.docs_method_table`` prints the Markdown table; the docs hold its output
between two markers and a test checks they are equal, so the table cannot drift from the code.
Each method is built as the CLI builds it with no setting given (``methods.build``, L_max = the default max_new_tokens).
"""

from ..config import Sampling
from ..methods import REGISTRY, build

START, END = "<!-- method-table:start -->", "<!-- method-table:end -->"


def rows() -> list[tuple[str, str, str, str, str]]:
    """(name, advantage A, GC, weight w, composition) per registered method, in registry order."""
    out = []
    for name, entry in REGISTRY.items():
        coef = build(name, max_new_tokens=Sampling().max_new_tokens).coefficient
        terms = [t for t in coef.terms if t.formula != "0"]  # a KL term at beta = 0 adds nothing
        adv = f"${coef.advantage.formula}$" if coef.advantage is not None else "(none: a pair term)"
        gc = " $+$ ".join(f"${t.formula}$" for t in terms)
        parts = ([coef.advantage.label] if coef.advantage is not None else ["None"]) + [t.label for t in coef.terms]
        composition = f"`chain({', '.join(parts)}, aggregation={type(coef.aggregation).__name__})`"
        out.append((f"`{name}`", adv, gc, f"${coef.aggregation.formula}$", composition))
    return out


def table() -> str:
    """The Markdown table (with its markers)."""
    lines = [START, "| `--method` | advantage $A$ | $GC(q, o, t)$ | weight $w$ (normaliser) | composition |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows()]
    return "\n".join(lines + [END])


if __name__ == "__main__":
    print(table())
