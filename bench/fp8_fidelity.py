"""How far FP8 linears move a trained RM's scores, against bf16 and the fp32 reference, on the CPU.

On the H100, FP8 linears (`FP8Linear` in bench/mlp_variants.py: every decoder-layer linear through torch._scaled_mm,
weights scaled per output channel, activations per token) scored the random-weight 8B at 59k tok/s, but random
weights say little about how a trained model's activations quantize. This runs the same `FP8Linear` on a trained
RM, the one `make demo` builds (SmolLM2-135M with a LoRA-trained score head, merged), over the demo's preference
pairs (train and held-out: chosen and rejected code for HumanEval problems), through the shared scorer:

  fp32   the reference
  bf16   the scorer's default on this CPU
  fp8    bf16 with every decoder-layer linear in float8 e4m3 (FP8Linear)

and reports, per way against fp32: max |score diff|, correlation, and how often the pair's decision (chosen scored
above rejected) is the same; and each way's pairwise accuracy. Writes JSON.

    python bench/fp8_fidelity.py [--model ~/.cache/codescaler/default-rm] [--pairs runs/demo/pairs.jsonl,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from codescaler.records import Pair, read_records  # noqa: E402
from codescaler.scorer import RewardScorer, ScorerConfig, default_model_dir, load_reward_model  # noqa: E402
from mlp_variants import fp8_linears  # noqa: E402


def scores_of(model_dir: str, dtype: str, fp8: bool, pairs: list[Pair]) -> tuple[list[float], float]:
    """Raw scores of every pair's chosen then rejected code, and the seconds they took."""
    tokenizer, model = load_reward_model(model_dir, getattr(torch, dtype), "cpu")
    if fp8:
        fp8_linears(model.model)
    scorer = RewardScorer(ScorerConfig(model=model_dir, dtype=dtype, device="cpu"), tokenizer=tokenizer, model=model)
    prompts = [p.prompt for p in pairs] * 2
    codes = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    t0 = time.perf_counter()
    scores = [s for s, _ in scorer.score_code(prompts, codes)]
    return scores, time.perf_counter() - t0


def compare(ref: list[float], other: list[float], n: int) -> dict:
    a, b = torch.tensor(ref), torch.tensor(other)
    ref_decisions, decisions = a[:n] > a[n:], b[:n] > b[n:]
    ref_margin = (a[:n] - a[n:]).abs()
    flipped = ref_margin[ref_decisions != decisions]
    return {"max_abs_diff": round(float((a - b).abs().max()), 5),
            # how close to a tie the reference was on the pairs whose decision changed, against all pairs
            "flipped_pairs_max_ref_margin": round(float(flipped.max()), 4) if len(flipped) else None,
            "median_ref_margin": round(float(ref_margin.median()), 4),
            "mean_abs_diff": round(float((a - b).abs().mean()), 5),
            "corr": round(float(torch.corrcoef(torch.stack([a, b]))[0, 1]), 5),
            "same_pair_decision": round(float((ref_decisions == decisions).float().mean()), 4),
            "max_abs_margin_diff": round(float(((a[:n] - a[n:]) - (b[:n] - b[n:])).abs().max()), 5)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model_dir(), help="a trained RM directory (default: make demo's)")
    ap.add_argument("--pairs", default="runs/demo/pairs.jsonl,runs/demo/pairs_heldout.jsonl",
                    help="comma-separated pairs JSONL files")
    ap.add_argument("--out", default="bench/results/fp8_fidelity.json")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise SystemExit(f"no trained RM at {args.model}: run `make demo` first, or pass --model")
    pairs = [p for path in args.pairs.split(",") for p in read_records(path, Pair)]
    if not pairs:
        raise SystemExit(f"no pairs in {args.pairs}")
    torch.manual_seed(0)
    report: dict = {"model": args.model, "pairs": len(pairs), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "ways": {}}
    results = {}
    for way, dtype, fp8 in (("fp32", "float32", False), ("bf16", "bfloat16", False), ("fp8", "bfloat16", True)):
        scores, seconds = scores_of(args.model, dtype, fp8, pairs)
        results[way] = scores
        n = len(pairs)
        row = {"seconds": round(seconds, 1),
               "pairwise_accuracy": round(sum(c > r for c, r in zip(scores[:n], scores[n:])) / n, 4),
               "score_std": round(float(torch.tensor(scores).std()), 4)}
        if way != "fp32":
            row["vs_fp32"] = compare(results["fp32"], scores, n)
        report["ways"][way] = row
        print(way, row, flush=True)
    report["fp8_vs_bf16"] = compare(results["bf16"], results["fp8"], len(pairs))
    print("fp8 vs bf16", report["fp8_vs_bf16"])
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
