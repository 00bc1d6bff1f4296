"""Syntax-aware code extraction (SPEC.md, "Syntax-aware extraction").

`extract_code(response)` returns the one Python block of a response, or None
when there is no usable code. `mode="reference"` reproduces the paper's
`extract_code_from_model` bit for bit (any tag counts, no thinking handling).
"""

from __future__ import annotations

import ast
import re

MODES = ("syntax", "reference")
PYTHON_TAGS = {"", "python", "py", "python3"}
_REFERENCE_BLOCK = re.compile(r"```(?:\w+)?\n(.*?)```", re.DOTALL)


def parses(code: str) -> bool:
    """True when `code` is valid Python source."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def drop_thinking(text: str) -> str | None:
    """Drop everything up to the first </think> when the text has <think>; None if thinking never ends."""
    if "<think>" not in text:
        return text
    end = text.find("</think>")
    return None if end < 0 else text[end + len("</think>"):]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(tag, content) of each closed fenced block, in order.

    A block opens on a line starting with three backticks plus an optional
    tag, and closes on the next line that is exactly three backticks
    (trailing whitespace allowed). An unclosed block is dropped.
    """
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            words = line[3:].split()
            tag = words[0].lower() if words else ""
            for j in range(i + 1, len(lines)):
                if lines[j].rstrip() == "```":
                    blocks.append((tag, "\n".join(lines[i + 1:j])))
                    i = j
                    break
            else:
                break  # unclosed: neither it nor anything after it forms a block
        i += 1
    return blocks


def strip_blank_lines(content: str) -> str:
    """Remove whitespace-only lines at both ends, keeping the indentation of the rest."""
    lines = content.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def extract_code(response: str, mode: str = "syntax") -> str | None:
    """The code in an LLM response, or None when there is none (SPEC rule)."""
    if mode == "reference":
        blocks = _REFERENCE_BLOCK.findall(response)
        if len(blocks) != 1:
            return None
        code = blocks[0].strip()
        return code if code and parses(code) else None
    if mode != "syntax":
        raise ValueError(f"unknown extraction mode {mode!r}; use one of {MODES}")
    text = drop_thinking(response.replace("\r\n", "\n"))
    if text is None:
        return None
    python = [content for tag, content in fenced_blocks(text) if tag in PYTHON_TAGS]
    if len(python) != 1:
        return None
    code = strip_blank_lines(python[0])
    return code if code.strip() and parses(code) else None


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    p.add_argument("--responses", required=True, help="responses JSONL(.gz): {problem_id, response, ...}")
    p.add_argument("--output", required=True, help="JSONL(.gz) to append to; a rerun skips records already there")
    p.add_argument("--extraction", choices=MODES, default="syntax",
                   help="syntax: the SPEC rule (default); reference: the paper's regex, bit for bit")


def cli_main(args) -> int:
    from codescaler.cli import progress
    from codescaler.records import JsonlWriter, pending, read_responses

    rows = [d for _, d in read_responses(args.responses)]
    with JsonlWriter(args.output) as out:
        for d in progress(pending(rows, args.output), desc="extract", unit="resp"):
            out.write({**d, "code": extract_code(d["response"], args.extraction)})
        out.finish()
    return 0
