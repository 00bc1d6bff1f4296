"""Extraction table: the SPEC rule (default) and the paper's reference rule."""

import pytest

from codescaler.extract import extract_code, fenced_blocks

F = "```"
CASES = [
    # (name, response, syntax-mode result, reference-mode result)
    ("plain python block", f"Here:\n{F}python\nx = 1\n{F}\n", "x = 1", "x = 1"),
    ("untagged block", f"{F}\nx = 1\n{F}", "x = 1", "x = 1"),
    ("py tag", f"{F}py\nx = 1\n{F}", "x = 1", "x = 1"),
    ("python3 tag", f"{F}python3\nx = 1\n{F}", "x = 1", "x = 1"),
    ("upper-case tag", f"{F}PYTHON\nx = 1\n{F}", "x = 1", "x = 1"),
    ("mixed-case Py tag", f"{F}Py\nx = 1\n{F}", "x = 1", "x = 1"),
    ("prose only", "I would use a hash map here.", None, None),
    ("empty string", "", None, None),
    ("empty block", f"{F}python\n{F}", None, None),
    ("blank-only block", f"{F}python\n\n   \n{F}", None, None),
    ("syntax error", f"{F}python\ndef f(:\n    pass\n{F}", None, None),
    ("unclosed fence", f"{F}python\nx = 1\n", None, None),
    ("two python blocks", f"{F}python\nx = 1\n{F}\nand\n{F}python\ny = 2\n{F}", None, None),
    ("other-language block plus python", f"{F}bash\npip install x\n{F}\n{F}python\nx = 1\n{F}", "x = 1", None),
    ("only other-language block", f"{F}cpp\nint main() {{}}\n{F}", None, None),
    ("json block ignored", f"{F}json\n{{\"a\": 1}}\n{F}\n{F}python\nprint(1)\n{F}", "print(1)", None),
    ("CRLF line endings", f"{F}python\r\nx = 1\r\ny = 2\r\n{F}\r\n", "x = 1\ny = 2", None),  # the paper's regex needs "\n" right after the tag
    ("thinking then code", f"<think>try {F}python\nbad(\n{F}</think>\n{F}python\nx = 1\n{F}", "x = 1", None),
    ("thinking never closed", f"<think>\n{F}python\nx = 1\n{F}", None, "x = 1"),
    ("code inside thinking only", f"<think>\n{F}python\nx = 1\n{F}\n</think>\nDone.", None, "x = 1"),
    ("surrounding blank lines stripped", f"{F}python\n\n\ndef f():\n    return 1\n\n\n{F}",
     "def f():\n    return 1", "def f():\n    return 1"),
    ("indentation kept inside", f"{F}python\nclass A:\n    def f(self):\n        return 1\n{F}",
     "class A:\n    def f(self):\n        return 1", "class A:\n    def f(self):\n        return 1"),
    ("unclosed second block ignored", f"{F}python\nx = 1\n{F}\n{F}python\ny = (\n", "x = 1", "x = 1"),
    ("tag with trailing words", f"{F}python title=sol.py\nx = 1\n{F}", "x = 1", None),
    ("closing fence with trailing spaces", f"{F}python\nx = 1\n{F}   \nok", "x = 1", "x = 1"),
    ("inline backticks are not a fence", f"Use {F}x = 1{F} inline.", None, None),
    ("null byte is not code", f"{F}python\nx = '\x00'\n{F}", None, None),
    ("javascript then untagged", f"{F}javascript\nlet x = 1;\n{F}\n{F}\nx = 1\n{F}", "x = 1", None),
    ("stdin program", f"{F}python\nimport sys\nprint(sum(map(int, sys.stdin.read().split())))\n{F}",
     "import sys\nprint(sum(map(int, sys.stdin.read().split())))",
     "import sys\nprint(sum(map(int, sys.stdin.read().split())))"),
    ("leading indentation of whole block fails ast", f"{F}python\n    x = 1\n{F}", None, "x = 1"),
    # fence details where SPEC's line rule and the paper's regex part (README: extract)
    ("closing fence on the code's line", f"{F}python\nx = 1{F}", None, "x = 1"),
    ("indented fence, as in a markdown list", f"  {F}python\nx = 1\n  {F}", None, "x = 1"),
    ("space after the tag", f"{F}python \nx = 1\n{F}", "x = 1", None),
    ("space before the tag", f"{F} python\nx = 1\n{F}", "x = 1", None),
]


@pytest.mark.parametrize("name,response,syntax,reference", CASES, ids=[c[0] for c in CASES])
def test_extraction_table(name, response, syntax, reference):
    assert extract_code(response) == syntax
    assert extract_code(response, mode="reference") == reference


def test_table_is_large_enough():
    assert len(CASES) >= 25


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown extraction mode"):
        extract_code("x", mode="fuzzy")


def test_fenced_blocks_keep_tags_and_order():
    text = f"{F}Bash\nls\n{F}\ntext\n{F}\nprint(1)\n{F}"
    assert fenced_blocks(text) == [("bash", "ls"), ("", "print(1)")]
