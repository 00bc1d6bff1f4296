"""GPU scoring throughput: the shared scorer against the seed README's way, side by side in one run.

Model: Qwen3ForSequenceClassification with the CodeScaler-8B and -1.7B shapes and random weights
(throughput does not depend on the values). Workload: 256 sequences of 256..2048 random tokens
(seeded), already tokenized, so both ways time the model path only.

Ways, per shape:
  seed_fp32      the README snippet: default fp32, batches of 16 in arrival order, padded to the longest,
                 full-sequence logits (timed on a subset: it is slow)
  seed_bf16      the same in bf16
  ours_bNNk      RewardScorer.score_ids: bf16, length-sorted batches filled to an NNk-token budget,
                 score head at each last token only
  ours_packed    the same with packing (one row per batch, no padding; SDPA block-diagonal mask unless
                 flash-attn is installed)
Reports tokens/s, sequences/s, MFU (against --peak-tflops) and peak memory, and the score agreement of
ours against the seed way (fp32 on the subset; bf16 on all). Writes JSON to bench/results/.
Needs only torch and transformers.  python bench/score_gpu.py [--shapes 8b,1.7b] [--tiny for a CPU smoke run]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {  # CodeScaler checkpoints are Qwen3ForSequenceClassification
    "8b": dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=12288, head_dim=128, vocab_size=151936),
    "1.7b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 intermediate_size=6144, head_dim=128, vocab_size=151936),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, head_dim=16, vocab_size=1000),
}


def seed_way(model, seqs, batch_size=16, pad_id=0):
    """The README snippet on pre-tokenized inputs: arrival order, right-padded, full logits."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start:start + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(batch):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        out += logits.squeeze(-1).float().cpu().tolist()
    return out


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(name, fn, seqs, flops, peak_tflops, rows):
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    scores = fn(seqs)
    sync()
    dt = time.perf_counter() - t0
    tokens = sum(len(s) for s in seqs)
    rows[name] = {"seqs": len(seqs), "tokens": tokens, "seconds": round(dt, 3), "tokens_per_s": round(tokens / dt, 1),
                  "seqs_per_s": round(len(seqs) / dt, 2),
                  "mfu": round(flops(seqs) / dt / (peak_tflops * 1e12), 4),
                  "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}
    print(f"  {name:14s} {rows[name]['tokens_per_s']:>10.1f} tok/s  {rows[name]['seqs_per_s']:>7.2f} seq/s  "
          f"MFU {rows[name]['mfu']:.3f}  peak {rows[name]['peak_mem_gib']} GiB", flush=True)
    return scores


def run_shape(name, args, seqs, device):
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    from codescaler.scorer import RewardScorer, ScorerConfig

    cfg = Qwen3Config(**SHAPES[name], num_labels=1, pad_token_id=0, max_position_embeddings=4096)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = Qwen3ForSequenceClassification(cfg).eval()
    print(f"[{name}] built in {time.perf_counter() - t0:.1f}s", flush=True)
    n_emb = cfg.vocab_size * cfg.hidden_size
    n_dense = sum(p.numel() for p in model.parameters()) - n_emb
    attn_width = cfg.num_attention_heads * cfg.head_dim

    def flops(batch):  # forward: 2 FLOPs per weight per token, plus causal attention (QK^T and AV)
        return sum(2 * n_dense * len(s) + 2 * cfg.num_hidden_layers * len(s) ** 2 * attn_width for s in batch)

    rows: dict = {}
    subset = seqs[: args.fp32_subset]
    fake_tok = SimpleNamespace(pad_token_id=0)

    def ours(budget, packing=False):
        scorer = RewardScorer(ScorerConfig(model="bench", token_budget=budget, max_length=2048, packing=packing),
                              tokenizer=fake_tok, model=model)
        return scorer.score_ids

    seed_way(model, subset[:2])  # warm-up
    s32 = measure("seed_fp32", lambda x: seed_way(model, x), subset, flops, args.peak_tflops, rows)
    o32 = measure("ours_fp32", ours(32768), subset, flops, args.peak_tflops, rows)
    model.to(torch.bfloat16)
    seed_way(model, seqs[:2])
    s16 = measure("seed_bf16", lambda x: seed_way(model, x), seqs, flops, args.peak_tflops, rows)
    results = {}
    for budget in args.budgets:
        results[budget] = measure(f"ours_b{budget // 1024}k", ours(budget), seqs, flops, args.peak_tflops, rows)
    packed = measure("ours_packed16k", ours(16384, packing=True), seqs, flops, args.peak_tflops, rows)
    best = max((k for k in rows if k.startswith("ours_b")), key=lambda k: rows[k]["tokens_per_s"])
    summary = {
        "shape": name, "dense_params": n_dense, "ways": rows, "best_ours": best,
        "speedup_best_vs_seed_fp32": round(rows[best]["tokens_per_s"] / rows["seed_fp32"]["tokens_per_s"], 2),
        "speedup_best_vs_seed_bf16": round(rows[best]["tokens_per_s"] / rows["seed_bf16"]["tokens_per_s"], 2),
        "max_abs_diff_fp32": max(abs(a - b) for a, b in zip(s32, o32)),
        "max_abs_diff_bf16_vs_seed_bf16": max(abs(a - b) for a, b in zip(s16, results[args.budgets[0]])),
        "max_abs_diff_packed_vs_padded_bf16": max(abs(a - b) for a, b in zip(packed, results[args.budgets[0]])),
        "score_std_bf16": float(torch.tensor(s16).std()),
    }
    print(f"[{name}] best {best}: x{summary['speedup_best_vs_seed_fp32']} vs seed fp32, "
          f"x{summary['speedup_best_vs_seed_bf16']} vs seed bf16; |diff| fp32 {summary['max_abs_diff_fp32']:.2e}, "
          f"bf16 {summary['max_abs_diff_bf16_vs_seed_bf16']:.2e} (score std {summary['score_std_bf16']:.2f})",
          flush=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1.7b,8b")
    ap.add_argument("--n", type=int, default=256, help="sequences in the workload")
    ap.add_argument("--min-len", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--fp32-subset", type=int, default=16, help="sequences timed in fp32 (slow)")
    ap.add_argument("--budgets", default="16384,32768,65536", help="token budgets to try for ours")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run on a tiny shape")
    ap.add_argument("--out", default="bench/results/score_gpu.json")
    args = ap.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = ["tiny"] if args.tiny else args.shapes.split(",")
    if args.tiny:
        args.n, args.max_len, args.min_len, args.fp32_subset = 24, 300, 20, 8
    rng = random.Random(0)
    vocab = min(SHAPES[s]["vocab_size"] for s in shapes)
    seqs = [[rng.randrange(1, vocab) for _ in range(rng.randint(args.min_len, args.max_len))] for _ in range(args.n)]
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "workload": {"n": args.n, "min_len": args.min_len, "max_len": args.max_len,
                           "tokens": sum(map(len, seqs))}, "shapes": {}}
    import transformers

    report["transformers"] = transformers.__version__
    for name in shapes:
        report["shapes"][name] = run_shape(name, args, seqs, device)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
