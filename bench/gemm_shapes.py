"""The GEMM ceiling under the 8B scorer: cuBLAS bf16 matrix products at the CodeScaler-8B layer shapes.

The compiled 8B scorer spends ~82% of its GPU time in these products (bench/score_gpu.py profiles), so their
rate bounds its tokens/s. Each shape is timed with CUDA events (median of --reps after warm-up) on random
data, for a packed batch of M tokens, next to a square 8192^3 product, and once more in a sustained run
(the same product back to back for --sustain-s seconds) to see what clocks hold under a long load.
--blas times the layer's products again through other cuBLAS front ends (torch's preferred BLAS library:
cublas, the default, or cublaslt, whose heuristic may pick other kernels). --mlp-chunks times a whole MLP
(gate, up, SiLU*mul, down; eager) against the same MLP in C slices of its intermediate width
(bench/mlp_variants.py's chunked_mlp: for C = 3 every product has the q/o shape), with each way's error
against an fp32 reference on the first rows. Writes JSON. Needs only torch and a CUDA GPU.

    python bench/gemm_shapes.py [--blas cublas,cublaslt] [--mlp-chunks 2,3,4] [--out bench/results/gemm_shapes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mlp_variants import chunked_mlp  # noqa: E402

HIDDEN, INTERMEDIATE = 4096, 12288  # CodeScaler-8B

# (name, K, N) of y[M, N] = x[M, K] @ W[N, K]^T in one CodeScaler-8B decoder layer (hidden 4096, 32 query and
# 8 KV heads of 128, intermediate 12288), and the two projections stacked as serving engines do.
LAYER = [("q_or_o", 4096, 4096), ("k_or_v", 4096, 1024), ("gate_or_up", 4096, 12288), ("down", 12288, 4096),
         ("gate_up_stacked", 4096, 24576)]


def time_fn(fn, reps: int) -> float:
    """Median milliseconds of one call of fn() on the GPU, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def time_mm(m: int, k: int, n: int, reps: int) -> float:
    """Median milliseconds of one bf16 x @ w.T with x [m, k] and w [n, k] (the nn.Linear layout)."""
    g = torch.Generator(device="cuda").manual_seed(m + k + n)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g)
    return time_fn(lambda: x @ w.t(), reps)


def mlp_ways(m: int, chunk_counts: list[int], reps: int, device: str = "cuda", check_rows: int = 2048) -> dict:
    """One 8B MLP on m tokens, whole (C = 1) and in each C of chunk_counts slices: milliseconds (CUDA only),
    TFLOP/s of its three products, and the max |error| of each way against fp32 on the first check_rows rows."""
    g = torch.Generator(device=device).manual_seed(m)
    x = torch.randn(m, HIDDEN, device=device, dtype=torch.bfloat16, generator=g)
    # weights at nn.Linear's init scale, so the activations stay O(1) as in a real layer
    gate, up = (torch.randn(INTERMEDIATE, HIDDEN, device=device, generator=g) / HIDDEN ** 0.5 for _ in range(2))
    down = torch.randn(HIDDEN, INTERMEDIATE, device=device, generator=g) / INTERMEDIATE ** 0.5
    ref = chunked_mlp(x[:check_rows].float(), gate, up, down, F.silu, 1)
    gate, up, down = gate.bfloat16(), up.bfloat16(), down.bfloat16()
    rows = {}
    for chunks in [1, *chunk_counts]:
        err = (chunked_mlp(x[:check_rows], gate, up, down, F.silu, chunks).float() - ref).abs().max().item()
        row = {"chunks": chunks, "max_abs_err_vs_fp32": round(err, 5)}
        if device == "cuda":
            ms = time_fn(lambda: chunked_mlp(x, gate, up, down, F.silu, chunks), reps)
            row.update(ms=round(ms, 3), tflops=round(6 * m * HIDDEN * INTERMEDIATE / ms / 1e9, 1))
        rows[f"chunks{chunks}"] = row
    if device == "cuda":
        for row in rows.values():
            row["speedup_vs_whole"] = round(rows["chunks1"]["ms"] / row["ms"], 3)
    return rows


def sustained(m: int, k: int, n: int, seconds: float) -> dict:
    """TFLOP/s of the same product back to back for `seconds` (first and last tenth of the run apart)."""
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    ms = time_mm(m, k, n, 5)
    count = max(10, int(seconds * 1e3 / ms))
    events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
    events[0].record()
    for i in range(count):
        x @ w.t()
        events[i + 1].record()
    torch.cuda.synchronize()
    per = [events[i].elapsed_time(events[i + 1]) for i in range(count)]
    tenth = max(1, count // 10)
    rate = lambda xs: round(2 * m * k * n / (sum(xs) / len(xs)) / 1e9, 1)  # noqa: E731 (TFLOP/s from ms)
    return {"products": count, "first_tenth_tflops": rate(per[:tenth]), "last_tenth_tflops": rate(per[-tenth:])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="27243,32768", help="M: tokens in a packed batch (27243: a profiled one)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sustain-s", type=float, default=8.0)
    ap.add_argument("--blas", default="cublas",
                    help="torch's preferred BLAS libraries to time the layer's products through, in order")
    ap.add_argument("--mlp-chunks", default="", help="slice counts for the chunked MLP against the whole (e.g. 2,3,4)")
    ap.add_argument("--out", default="bench/results/gemm_shapes.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    chunk_counts = [int(c) for c in args.mlp_chunks.split(",") if c]
    for c in chunk_counts:
        if c < 1 or INTERMEDIATE % c:
            ap.error(f"--mlp-chunks: {c} does not divide the intermediate width {INTERMEDIATE}; use e.g. 2,3,4,6")
    libraries = args.blas.split(",")
    for lib in libraries:
        if lib not in ("cublas", "cublaslt"):
            ap.error(f"--blas: unknown library {lib!r}; use cublas or cublaslt")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    t0 = time.perf_counter()
    ms = time_mm(8192, 8192, 8192, args.reps)
    report["square_8192"] = {"ms": round(ms, 3), "tflops": round(2 * 8192 ** 3 / ms / 1e9, 1)}
    print(f"8192^3: {report['square_8192']}", flush=True)
    tokens = [int(t) for t in args.tokens.split(",")]
    default_blas = torch.backends.cuda.preferred_blas_library()
    for lib in libraries:
        torch.backends.cuda.preferred_blas_library(lib)
        suffix = "" if lib == "cublas" else f"_{lib}"
        for m in tokens:
            for name, k, n in LAYER:
                ms = time_mm(m, k, n, args.reps)
                row = {"m": m, "k": k, "n": n, "ms": round(ms, 3), "tflops": round(2 * m * k * n / ms / 1e9, 1)}
                report["shapes"][f"{name}_m{m}{suffix}"] = row
                print(f"{name + suffix:16s} M={m}: {row}", flush=True)
        if chunk_counts:
            for m in tokens:
                report.setdefault("mlp", {})[f"m{m}{suffix}"] = rows = mlp_ways(m, chunk_counts, args.reps)
                print(f"mlp{suffix} M={m}: {rows}", flush=True)
    torch.backends.cuda.preferred_blas_library(default_blas)
    if chunk_counts:  # the slicing to try in the whole model: the best mean speedup over --tokens (default BLAS)
        mean = {c: sum(report["mlp"][f"m{m}"][f"chunks{c}"]["speedup_vs_whole"] for m in tokens) / len(tokens)
                for c in [1, *chunk_counts]}
        best = max(mean, key=mean.get)
        report["mlp_best_chunks"], report["mlp_best_speedup_vs_whole"] = best, round(mean[best], 3)
        print(f"best MLP slicing: {best} (x{mean[best]:.3f} against whole)", flush=True)
    if len(libraries) > 1:  # each product's time through the default library over its time through the others
        report["blas_speedups"] = {f"{key}_{lib}": round(row["ms"] / report["shapes"][f"{key}_{lib}"]["ms"], 3)
                                   for key, row in list(report["shapes"].items())
                                   for lib in libraries[1:] if f"{key}_{lib}" in report["shapes"]}
        print(f"BLAS speedups over cublas: {report['blas_speedups']}", flush=True)
    report["sustained_gate_or_up_m32768"] = sustained(32768, 4096, 12288, args.sustain_s)
    report["sustained_square_8192"] = sustained(8192, 8192, 8192, args.sustain_s)
    print(f"sustained: {report['sustained_gate_or_up_m32768']} {report['sustained_square_8192']}", flush=True)
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out} after {report['elapsed_s']}s")


if __name__ == "__main__":
    main()
