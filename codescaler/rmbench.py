"""RM-Bench: easy / normal / hard and per-domain accuracy of a reward model.

    codescaler rm-bench --data total_dataset.json --model LARK-Lab/CodeScaler-8B --output rmbench_scores.jsonl

Input: RM-Bench samples `{id, prompt, chosen: [3], rejected: [3], domain}` as a JSON array (the RM-Bench release) or
JSON Lines. The three responses of each side go from concise, to detailed, to detailed with markdown.
Each of the six responses is scored through the shared scorer (`codescaler.scorer.RewardScorer`), and
M[i][j] = P(score(chosen[i]) > score(rejected[j])), strictly greater as in RM-Bench's own script (a tie counts as
wrong). hard = mean of the upper triangle (i < j: a plainer correct answer against a more styled wrong one),
normal = the diagonal, easy = the lower triangle; a domain's accuracy is the mean of its whole matrix, and `avg` is
the mean over domains (`safety-refuse` and `safety-response` pool into `safety`, as in the RM-Bench tables).

RM input (`--rm-input`): RM-Bench is a general benchmark (chat, math, safety, code) whose responses are prose, so the
default `response` gives the RM the whole response text as the assistant turn (same chat template, same truncation).
`code` applies CodeScaler's code extraction and validity-preserving shaping first, as in best-of-N; a response with no
single Python block then scores 0.0, which is rarely what you want outside the code domain.
Per-sample scores are appended to `--output` (a rerun resumes); the metrics go to stdout and `--metrics`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from codescaler.records import RecordError, UserError, stream_jsonl

SIZE = 3
RM_INPUTS = ("response", "code")


@dataclass
class RMBenchSample:
    id: str
    prompt: str
    chosen: list[str]
    rejected: list[str]
    domain: str


def read_rmbench(path: str) -> list[RMBenchSample]:
    """RM-Bench samples from a JSON array or JSONL file, each field checked (RecordError names file/line/field)."""
    path = str(path)
    if not os.path.exists(path):
        raise RecordError(path, None, None, "no such file")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecordError(path, None, None, f"is not valid JSON ({e})") from None
        if not isinstance(data, list):
            raise RecordError(path, None, None, "expected a JSON array of RM-Bench samples")
        rows = [(None, d) for d in data]
    else:
        rows = list(stream_jsonl(path))
    out, seen = [], set()
    for k, (line, d) in enumerate(rows):
        where = line if line is not None else k + 1  # JSON arrays: the item number
        if not isinstance(d, dict):
            raise RecordError(path, where, None, f"expected an object, got {type(d).__name__}")
        for name in ("id", "prompt", "chosen", "rejected", "domain"):
            if name not in d:
                raise RecordError(path, where, name, "is missing")
        for name in ("prompt", "domain"):
            if not isinstance(d[name], str):
                raise RecordError(path, where, name, f"must be a string, got {type(d[name]).__name__}")
        for name in ("chosen", "rejected"):
            v = d[name]
            if not isinstance(v, list) or len(v) != SIZE or not all(isinstance(x, str) for x in v):
                raise RecordError(path, where, name, f"must be a list of {SIZE} strings")
        sid = str(d["id"])
        if sid in seen:
            raise RecordError(path, where, "id", f"repeats sample id {sid!r}")
        seen.add(sid)
        out.append(RMBenchSample(sid, d["prompt"], list(d["chosen"]), list(d["rejected"]), d["domain"]))
    return out


def accuracy_matrix(chosen_scores, rejected_scores) -> np.ndarray:
    """M[i][j] = fraction of samples with chosen[i] > rejected[j] (strict), from (samples, 3) score arrays."""
    c = np.asarray(chosen_scores, dtype=float)
    r = np.asarray(rejected_scores, dtype=float)
    if c.ndim != 2 or c.shape != r.shape or c.shape[1] != SIZE:
        raise ValueError(f"expected two (samples, {SIZE}) arrays, got {c.shape} and {r.shape}")
    if len(c) == 0:
        raise ValueError("no samples")
    return (c[:, :, None] > r[:, None, :]).mean(axis=0)


def matrix_summary(m: np.ndarray) -> dict:
    """hard (upper triangle, i < j), normal (diagonal), easy (lower triangle) and the whole matrix's mean."""
    upper, lower = np.triu_indices(SIZE, 1), np.tril_indices(SIZE, -1)
    return {"hard": float(m[upper].mean()), "normal": float(np.diag(m).mean()), "easy": float(m[lower].mean()),
            "total": float(m.mean())}


def domain_group(domain: str) -> str:
    """RM-Bench's table domain: `safety-refuse`/`safety-response` pool into `safety`."""
    return domain.split("-", 1)[0]


def rmbench_metrics(samples: list[RMBenchSample], scores: dict[str, tuple[list[float], list[float]]]) -> dict:
    """The RM-Bench report from per-sample (chosen scores, rejected scores)."""
    by_domain: dict[str, list[str]] = {}
    for s in samples:
        by_domain.setdefault(domain_group(s.domain), []).append(s.id)

    def block(ids):
        m = accuracy_matrix([scores[i][0] for i in ids], [scores[i][1] for i in ids])
        return {**matrix_summary(m), "samples": len(ids), "matrix": [[round(float(x), 6) for x in row] for row in m]}

    domains = {d: block(ids) for d, ids in sorted(by_domain.items())}
    overall = block([s.id for s in samples])
    return {
        "samples": len(samples),
        "domains": domains,
        # RM-Bench's headline numbers are means over domains, so that a big domain does not dominate
        "avg": float(np.mean([d["total"] for d in domains.values()])),
        "hard": float(np.mean([d["hard"] for d in domains.values()])),
        "normal": float(np.mean([d["normal"] for d in domains.values()])),
        "easy": float(np.mean([d["easy"] for d in domains.values()])),
        "pooled": overall,
    }


def score_samples(samples: list[RMBenchSample], scorer, rm_input: str = "response", progress=None
                  ) -> dict[str, tuple[list[float], list[float]]]:
    """Six scores per sample through the shared scorer: raw RM logits of the whole response (`response`) or the
    shaped reward of its extracted code (`code`)."""
    if rm_input not in RM_INPUTS:
        raise ValueError(f"rm_input={rm_input!r}; use one of {RM_INPUTS}")
    prompts = [s.prompt for s in samples for _ in range(2 * SIZE)]
    texts = [t for s in samples for t in s.chosen + s.rejected]
    if rm_input == "response":
        flat = [score for score, _ in scorer.score_code(prompts, texts, progress)]
    else:
        flat = [sc.reward for sc in scorer.score(prompts, texts, progress)]
    out = {}
    for k, s in enumerate(samples):
        six = flat[k * 2 * SIZE:(k + 1) * 2 * SIZE]
        out[s.id] = (six[:SIZE], six[SIZE:])
    return out


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    from codescaler.scorer import add_scorer_args

    p.add_argument("--data", required=True, help="RM-Bench samples: JSON array (total_dataset.json) or JSONL")
    p.add_argument("--output", required=True, help="per-sample scores JSONL to append to; a rerun resumes")
    p.add_argument("--metrics", help="also write the metrics JSON here (default: <output>.metrics.json)")
    p.add_argument("--rm-input", choices=RM_INPUTS, default="response",
                   help="response: the whole response text is the assistant turn (default; RM-Bench is mostly prose); "
                        "code: extracted code with validity-preserving shaping, as in best-of-N")
    p.add_argument("--chunk", type=int, default=64, help="samples scored and written per step")
    add_scorer_args(p)


def cli_main(args) -> int:
    from codescaler.cli import progress
    from codescaler.records import JsonlWriter, model_id, pending, refuse_other_run
    from codescaler.scorer import RewardScorer, resolve_model, scorer_config_from_args

    config = scorer_config_from_args(args)
    if args.chunk < 1:
        raise UserError(f"--chunk {args.chunk}: use 1 or more samples per step")
    samples = read_rmbench(args.data)
    if not samples:
        raise UserError(f"{args.data}: no samples")
    rm_model = model_id(resolve_model(config.model))
    refuse_other_run(args.output, "rm_model", rm_model, "--model")
    todo = pending(samples, args.output, key=lambda d: (d["id"], d.get("rm_input")),
                   item=lambda s: {"id": s.id, "rm_input": args.rm_input})
    with JsonlWriter(args.output) as out:
        if todo:
            scorer = RewardScorer(config)
            with progress(total=len(todo), desc="rm-bench", unit="sample") as bar:
                for start in range(0, len(todo), args.chunk):
                    part = todo[start:start + args.chunk]
                    scores = score_samples(part, scorer, args.rm_input)
                    for s in part:
                        out.write({"id": s.id, "domain": s.domain, "rm_input": args.rm_input,
                                   "chosen_scores": scores[s.id][0], "rejected_scores": scores[s.id][1],
                                   "rm_model": rm_model})
                    bar.update(len(part))
        out.finish()
    scores = {}
    for _, d in stream_jsonl(args.output):
        if d.get("rm_input") == args.rm_input:
            scores[str(d["id"])] = (d["chosen_scores"], d["rejected_scores"])
    result = rmbench_metrics(samples, scores)
    result.update({"model": config.model, "rm_input": args.rm_input, "data": args.data})
    metrics_path = args.metrics or (os.path.splitext(args.output)[0] + ".metrics.json")
    with open(metrics_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "pooled"}, indent=2))
    print(f"metrics -> {metrics_path}", file=sys.stderr)
    return 0
