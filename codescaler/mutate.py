"""AST mutants of passing code: the negative synthesiser of `codescaler pairs`.

A mutant is one small semantic edit (operator, comparison, off-by-one,
boundary or return) made on the *source text* at the exact span of one AST
node, so everything outside that span keeps its bytes: quotes, comments,
docstrings and blank lines are untouched. (`ast.unparse` would reformat the
whole program, and a reward model then learns "reformatted = wrong" instead of
anything about correctness; see reference/measured-here.md.)

`mutants(code)` lists every candidate edit; `synthesize_negatives` keeps only
the ones that a verifier shows to fail.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from codescaler.records import Status, Verdict

KINDS = ("operator", "comparison", "off_by_one", "boundary", "return")

# Swaps chosen to keep the program runnable while changing what it computes.
_BINOPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "+"), ast.Div: ("/", "*"),
           ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"),
           ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&")}
_CMPOPS = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
           ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}
_BOOLOPS = {ast.And: ("and", "or"), ast.Or: ("or", "and")}


@dataclass(frozen=True)
class Mutant:
    """One edit: `code[start:end]` (character offsets into the original) became `replacement`."""

    kind: str
    code: str
    start: int
    end: int
    original: str
    replacement: str


class _Source:
    """Maps AST (line, UTF-8 byte column) positions to character offsets in the source."""

    def __init__(self, code: str):
        self.code = code
        # the tokenizer's line ends only: str.splitlines also splits on \x0c, \x1c-\x1e, \x85, \u2028..., which
        # would put every edit after one of them in the wrong place
        self.lines = re.split(r"(?<=\n)|(?<=\r)(?!\n)", code)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col_byte: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col_byte].decode("utf-8", "ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset))


def _token_between(src: _Source, left: ast.AST, right: ast.AST, token: str) -> tuple[int, int] | None:
    """Span of `token` in the text between two sibling nodes (skipping brackets, spaces and comments)."""
    lo, hi = src.span(left)[1], src.span(right)[0]
    gap = src.code[lo:hi]
    i = _find_code_token(gap, token)
    return None if i is None else (lo + i, lo + i + len(token))


def _find_code_token(text: str, token: str) -> int | None:
    """Index of `token` as a whole operator in `text` outside comments, e.g. '<' but not the '<' of '<='."""
    op_chars = set("+-*/%<>=!&|^@~")
    word = token.isalpha()
    i, n = 0, len(text)
    while i < n:
        if text[i] == "#":
            j = text.find("\n", i)
            if j < 0:
                return None
            i = j + 1
            continue
        if text.startswith(token, i):
            before = text[i - 1] if i else " "
            after = text[i + len(token)] if i + len(token) < n else " "
            if word and not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
                return i
            if not word and before not in op_chars and after not in op_chars:
                return i
        i += 1
    return None


def _edits(tree: ast.AST, src: _Source) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, replacement) for every mutation site, in source order."""
    out: list[tuple[str, int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            old, new = _BINOPS[type(node.op)]
            span = _token_between(src, node.left, node.right, old)
            if span:
                out.append(("operator", *span, new))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOPS:
            old, new = _BINOPS[type(node.op)]
            span = _token_between(src, node.target, node.value, old + "=")
            if span:
                out.append(("operator", *span, new + "="))
        elif isinstance(node, ast.BoolOp) and type(node.op) in _BOOLOPS:
            old, new = _BOOLOPS[type(node.op)]
            span = _token_between(src, node.values[0], node.values[1], old)
            if span:
                out.append(("operator", *span, new))
        elif isinstance(node, ast.Compare):
            for left, op, right in zip([node.left] + node.comparators[:-1], node.ops, node.comparators):
                if type(op) in _CMPOPS:
                    old, new = _CMPOPS[type(op)]
                    span = _token_between(src, left, right, old)
                    if span:
                        out.append(("comparison", *span, new))
        elif isinstance(node, ast.Constant) and type(node.value) is int and hasattr(node, "end_col_offset"):
            start, end = src.span(node)
            if src.code[start:end].isdigit():  # plain decimal literal: n -> n+1 and n-1
                out.append(("off_by_one", start, end, str(node.value + 1)))
                if node.value > 0:
                    out.append(("off_by_one", start, end, str(node.value - 1)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
                and node.args and not node.keywords:
            out.extend(_shift("boundary", src, node.args[-1]))
        elif isinstance(node, ast.Slice):
            for bound in (node.lower, node.upper):
                if bound is not None:
                    out.extend(_shift("boundary", src, bound))
        elif isinstance(node, ast.Return) and node.value is not None:
            start, end = src.span(node.value)
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, bool):
                out.append(("return", start, end, str(not value.value)))
            elif not (isinstance(value, ast.Constant) and value.value is None):
                out.append(("return", start, end, "None"))
    # Inside f-strings, Python < 3.12 reports unreliable positions: never edit there.
    fstrings = [src.span(n) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)]
    out = [e for e in out if not any(lo <= e[1] < hi for lo, hi in fstrings)]
    out.sort(key=lambda e: (e[1], e[2], e[0], e[3]))
    return out


def _shift(kind: str, src: _Source, node: ast.AST) -> list[tuple[str, int, int, str]]:
    """`x` -> `x + 1` and `x - 1` (parenthesised unless `x` is a name or literal)."""
    start, end = src.span(node)
    text = src.code[start:end]
    if "\n" in text:
        return []
    if isinstance(node, ast.Constant) and type(node.value) is int and text.isdigit():  # 3 -> 4 / 2, not "3 + 1"
        return [(kind, start, end, str(node.value + d)) for d in (1, -1) if node.value + d >= 0]
    base = text if isinstance(node, (ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.Call)) else f"({text})"
    return [(kind, start, end, f"{base} + 1"), (kind, start, end, f"{base} - 1")]


def mutants(code: str, kinds: Sequence[str] = KINDS) -> list[Mutant]:
    """Every single-edit mutant of `code` that still parses and means something different.

    Each mutant equals `code` outside `[start, end)`; only that span changed.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown mutation kinds {sorted(unknown)}; use any of {KINDS}")
    try:
        tree = ast.parse(code)
        original_dump = ast.dump(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # too deeply nested to parse: no mutants
        return []
    src = _Source(code)
    out, seen = [], set()
    try:
        for kind, start, end, replacement in _edits(tree, src):
            if kind not in kinds:
                continue
            new = code[:start] + replacement + code[end:]
            if new in seen:
                continue
            try:
                if ast.dump(ast.parse(new)) == original_dump:
                    continue
            except (SyntaxError, ValueError):
                continue
            seen.add(new)
            out.append(Mutant(kind, new, start, end, code[start:end], replacement))
    except RecursionError:
        return out
    return out


def counts_as_failure(v: Verdict) -> bool:
    """A verdict that shows wrong code: not passed, and not an infrastructure error."""
    return not v.passed and v.status is not Status.SANDBOX_ERROR


def synthesize_negatives(passing: Sequence[str], verify: Callable[[list[str]], list[Verdict]], n: int,
                         seed: int = 0, kinds: Sequence[str] = KINDS, max_tries: int = 0) -> list[tuple[Mutant, Verdict]]:
    """Up to `n` verified-failing mutants of the `passing` codes of one problem.

    Candidates are drawn round-robin over the passing codes and the mutation
    kinds (seeded), `verify(codes) -> verdicts` runs them, and a mutant is kept
    only when its verdict is a real failure (a `sandbox_error` is never one).
    At most `max_tries` candidates are verified (default 4 x n).
    """
    rng = random.Random(seed)
    pools: list[list[Mutant]] = []
    for code in passing:
        by_kind = {k: [] for k in kinds}
        for m in mutants(code, kinds):
            by_kind[m.kind].append(m)
        for ms in by_kind.values():
            rng.shuffle(ms)
        pools.append(_interleave(list(by_kind.values())))
    queue = _interleave(pools)[:max_tries or 4 * n]
    if not queue or n <= 0:
        return []
    kept: list[tuple[Mutant, Verdict]] = []
    for m, v in zip(queue, verify([m.code for m in queue])):
        if counts_as_failure(v) and len(kept) < n:
            kept.append((m, v))
    return kept


def _interleave(lists: list[list]) -> list:
    """Round-robin merge: a1, b1, c1, a2, b2, ..."""
    out, i = [], 0
    while any(i < len(x) for x in lists):
        out.extend(x[i] for x in lists if i < len(x))
        i += 1
    return out
