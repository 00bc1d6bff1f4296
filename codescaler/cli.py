"""`codescaler <verb>`: thin wrappers over the stage functions.

Each stage module defines `add_cli(parser)` and `cli_main(args) -> int`; this
module only dispatches, imports the stage lazily (so `--help` is instant) and
turns bad input into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Sequence

from codescaler.records import RecordError, UserError

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "prepare": ("codescaler.prepare", "convert a dataset (deepcoder, lcb, mbpp, humaneval, ...) to Problems JSONL"),
    "extract": ("codescaler.extract", "add the extracted code (or null) to each response"),
    "verify": ("codescaler.sandbox", "run responses against the tests in a sandbox and add a verdict"),
    "score": ("codescaler.scorer", "score responses with a reward model (rm_score, reward, truncated)"),
    "generate": ("codescaler.generate", "sample N responses per problem from a policy model"),
    "select": ("codescaler.select", "best-of-N: pick one response per problem by rm/tests/random/majority"),
    "pairs": ("codescaler.pairs", "build chosen/rejected preference pairs from verified responses"),
    "train-rm": ("codescaler.train_rm", "train a Bradley-Terry reward model on pairs"),
    "train-policy": ("codescaler.grpo", "GRPO a policy with the rm, tests or hybrid reward"),
    "eval": ("codescaler.evaluate", "generate, verify and report pass@k / avg@k on a benchmark"),
    "rm-bench": ("codescaler.rmbench", "RM-Bench accuracy (easy/normal/hard, per domain)"),
    "serve": ("codescaler.server", "HTTP reward server (/score, OpenRLHF /get_reward, /health)"),
    "demo": ("codescaler.demo", "the whole pipeline in miniature on this machine, with a report"),
}


def _top_help() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: codescaler <verb> [options]   (codescaler <verb> --help for a verb's options)", "",
             "Execution-free reward models for code LLMs.", "", "verbs:"]
    lines += [f"  {v.ljust(width)}  {h}" for v, (_, h) in VERBS.items()]
    return "\n".join(lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The verb's docstring as written, and each option's default after its help (unless the help names one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default is argparse.SUPPRESS or \
            (isinstance(default, (str, list, tuple)) and not default)  # (0 == False: compared by identity)
        if not action.option_strings or action.required or "default" in text or empty:
            return text
        return text + " (default: %(default)s)"


def add_config_args(p, cls, choices: dict[str, Sequence] | None = None, required: Sequence[str] = (),
                    skip: Sequence[str] = ()) -> None:
    """One flag per field of config dataclass `cls`: --field-name, typed by its annotation, help from metadata."""
    choices = choices or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kw: dict = {"help": f.metadata.get("help", "").replace("%", "%%")}  # argparse formats help with %
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            p.add_argument(flag, required=True, **kw)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kw)
            continue
        if f.name in choices:
            kw["choices"] = list(choices[f.name])
        if isinstance(default, (list, tuple)):
            kw["nargs"] = "+"
            default = list(default)
        elif "float" in annotation:
            kw["type"] = float
        elif "int" in annotation:
            kw["type"] = int
        p.add_argument(flag, default=default, required=f.name in required, **kw)


def config_from_args(cls, args):
    """Build config dataclass `cls` from parsed flags; its cross-field checks become one-line errors."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**values)
    except ValueError as e:
        raise UserError(str(e)) from None


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", **kw):
    """A tqdm bar on stderr that appears only for work that takes over a second."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, delay=1.0, dynamic_ncols=True, file=sys.stderr, **kw)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_help())
        return 0
    verb = argv[0]
    if verb not in VERBS:
        print(f"codescaler: error: unknown verb {verb!r}\n\n{_top_help()}", file=sys.stderr)
        return 2
    module_name, help_text = VERBS[verb]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"codescaler {verb}", description=help_text + ".\n\n" + (module.__doc__ or ""),
                                     formatter_class=HelpFormatter)
    module.add_cli(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.cli_main(args) or 0)
    except (RecordError, UserError) as e:
        print(f"codescaler {verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"codescaler {verb}: interrupted; finished records are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
