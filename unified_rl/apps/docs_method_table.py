"""Print docs/paradigm.md's table of every registered method, read from the chains themselves.

``python -m unified_rl.apps.docs_method_table`` prints the Markdown table; the docs hold its output
between two markers and a test checks they are equal, so the table cannot drift from the code.
Each method is built as the CLI builds it with no setting given (``methods.build``, L_max = the default max_new_tokens).
"""

from ..config import Sampling
from ..methods import REGISTRY, build

START, END = "<!-- method-table:start -->", "<!-- method-table:end -->"


def rows() -> list[tuple[str, str, str, str, str, str]]:
    """(name, where C lives, advantage A, GC or C, weight w, composition) per registered method, in registry order."""
    out = []
    for name, entry in REGISTRY.items():
        coef = build(name, max_new_tokens=Sampling().max_new_tokens).coefficient
        terms = [t for t in coef.terms if t.formula != "0"]  # a KL term at beta = 0 adds nothing
        adv = f"${coef.advantage.formula}$" if coef.advantage is not None else "(none)"
        gc = " $+$ ".join([f"${t.formula}$" for t in terms] + [f"$C_v = {t.formula}$" for t in coef.vocabulary])
        lives = " + ".join((["sampled token"] if terms else []) + (["vocabulary"] if coef.vocabulary else []))
        parts = ([coef.advantage.label] if coef.advantage is not None else ["None"]) + [t.label for t in coef.terms]
        vocabulary = f", vocabulary=({', '.join(t.label for t in coef.vocabulary)},)" if coef.vocabulary else ""
        composition = f"`chain({', '.join(parts)}, aggregation={type(coef.aggregation).__name__}{vocabulary})`"
        out.append((f"`{name}`", lives, adv, gc, f"${coef.aggregation.formula}$", composition))
    return out


def table() -> str:
    """The Markdown table (with its markers)."""
    lines = [START, "| `--method` | C on | advantage $A$ | $GC(q, o, t)$ or $C(q, o, t, v)$ | weight $w$ (normaliser) | composition |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows()]
    return "\n".join(lines + [END])


if __name__ == "__main__":
    print(table())
