"""GPU scoring throughput: the shared scorer against the seed README's way, side by side in one run.

Model: Qwen3ForSequenceClassification with the CodeScaler-8B and -1.7B shapes and random weights
(throughput does not depend on the values). Workload: 256 sequences of 256..2048 random tokens
(seeded), already tokenized, so both ways time the model path only.

Ways, per shape (the padded ways are length-sorted; all of ours apply the score head at each last token only):
  seed_fp32           the README snippet: default fp32, batches of 16 in arrival order, padded to the longest,
                      full-sequence logits (timed on a subset: it is slow)
  ours_fp32           RewardScorer.score_ids in fp32 on the same subset (fidelity: |diff| vs seed_fp32)
  ours_packed_fp32    the same packed (per-input SDPA in fp32)
  seed_bf16           the README snippet in bf16
  ours_bNNk           bf16, length-sorted batches padded to the longest, filled to an NNk-token budget, no mask
  ours_packedNNk      bf16, packed into one row per NNk tokens, no pad tokens; flash-attention varlen
                      (codescaler/packing.py), the last decoder layer at each input's last token only
  ours_packedNNk_whole  the same with the last decoder layer run over every token (--no-trim-last-layer)
  ours_compiled_*     torch.compile (dynamic shapes) after a compiling pass, packed (--compile-ways: by
                      default regional, one decoder layer compiled and reused by all, the scorer's way; model =
                      the whole backbone as one graph; whole = regional with the last layer run whole; padded;
                      and experiments not in the scorer: fused =
                      gate/up stacked (GatedMLP); fp8 = fused + float8 linears (FP8Linear); chunked = each MLP in
                      --mlp-chunks slices (ChunkedMLP; all three in bench/mlp_variants.py); autotune = inductor's
                      GEMM autotuning; tuned = coordinate-descent tuning; frozen = inductor freezing), each
                      followed by a profile of its top GPU kernels
  text_*              from text (--compile-ways text --text-tokenizer DIR; compiled on CUDA): the workload as
                      Python source text through the chat template and tokenizer, scored from ids alone
                      (text_scores_from_ids), tokenising first (text_tokenise_first) and with each chunk's
                      tokenising overlapped with the GPU's work on the one before (text_tokenise_overlapped)
First a known-answer check of the varlen attention against per-input SDPA, and the packed attention alone
(flash varlen against cuDNN's varlen attention, one 8B layer). Eager ways for every shape run
first, then the compiled ones while --deadline-s allows; the JSON is rewritten after each step.
Reports tokens/s, sequences/s, MFU (the whole model's forward FLOPs per token, also for the ways that skip
some, against --peak-tflops) and peak memory, and the score agreement of
ours against the seed way (fp32 on the subset; bf16 on all). Writes JSON to bench/results/.
On one H100 the default run took 393 s with the whole-backbone compile (bench/results/score_gpu_h100.log); the
regional compile is ~110 s shorter per 8B pass (bench/results/score_gpu_regional_h100.log, whose command is in
the README); the run with the last layer at the last tokens against it whole took 214 s
(bench/results/score_gpu_trim_h100.log). Needs only torch and transformers.
    python bench/score_gpu.py [--shapes 1.7b,8b] [--compile-only] [--tiny for a CPU smoke run]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mlp_variants import chunk_mlps, fp8_linears, fuse_gate_up  # noqa: E402

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


def measure(name, fn, seqs, flops, peak_tflops, rows, repeats=1):
    """Time `repeats` passes of fn over seqs; the row keeps the fastest."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    dt = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        scores = fn(seqs)
        sync()
        dt = min(dt, time.perf_counter() - t0)
    tokens = sum(len(s) for s in seqs)
    rows[name] = {"seqs": len(seqs), "tokens": tokens, "seconds": round(dt, 3), "tokens_per_s": round(tokens / dt, 1),
                  "seqs_per_s": round(len(seqs) / dt, 2),
                  "mfu": round(flops(seqs) / dt / (peak_tflops * 1e12), 4),
                  "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}
    print(f"  {name:14s} {rows[name]['tokens_per_s']:>10.1f} tok/s  {rows[name]['seqs_per_s']:>7.2f} seq/s  "
          f"MFU {rows[name]['mfu']:.3f}  peak {rows[name]['peak_mem_gib']} GiB", flush=True)
    return scores


def build(name, device, min_vocab=0):
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    shape = {**SHAPES[name], "vocab_size": max(SHAPES[name]["vocab_size"], min_vocab)}
    cfg = Qwen3Config(**shape, num_labels=1, pad_token_id=0, max_position_embeddings=4096)
    torch.manual_seed(0)  # the same weights every time a shape is built
    with torch.device(device):
        model = Qwen3ForSequenceClassification(cfg).eval()
    n_dense = sum(p.numel() for p in model.parameters()) - cfg.vocab_size * cfg.hidden_size
    attn_width = cfg.num_attention_heads * cfg.head_dim

    def flops(batch):  # forward: 2 FLOPs per weight per token, plus causal attention (QK^T and AV)
        return sum(2 * n_dense * len(s) + 2 * cfg.num_hidden_layers * len(s) ** 2 * attn_width for s in batch)

    return model, n_dense, flops


def scorer_fn(model, budget, packing=False, compile=False, scope="layers", trim=True):
    from codescaler.scorer import RewardScorer, ScorerConfig

    scorer = RewardScorer(ScorerConfig(model="bench", token_budget=budget, max_length=2048,
                                       packing="on" if packing else "off",
                                       compile=compile, compile_scope=scope, trim_last_layer=trim),
                          tokenizer=SimpleNamespace(pad_token_id=0), model=model)
    if packing and trim and scope == "layers" and not scorer.trim:
        raise RuntimeError("the scorer did not trim the last layer of this model")
    return scorer.score_ids


def sync_points(fn, seqs):
    """The operations that made the host wait for the GPU during one call (torch's sync debug mode)."""
    import warnings

    if not torch.cuda.is_available():
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(seqs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found: dict[str, int] = {}
    for w in caught:
        key = str(w.message).splitlines()[0][:160]
        found[key] = found.get(key, 0) + 1
    return found


def check_varlen(device, report):
    """The packed attention against per-input SDPA on small random tensors (bf16; GQA 4:1)."""
    from codescaler.packing import last_query_attention, varlen_attention

    g = torch.Generator().manual_seed(0)
    lens = [5, 130, 77, 300]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    q, k, v = (torch.randn(1, h, sum(lens), 128, generator=g).to(device, torch.bfloat16) for h in (8, 2, 2))
    fast = varlen_attention(None, q, k, v, None, scaling=128 ** -0.5, codescaler_cu_seqlens=cu.to(device),
                            codescaler_max_len=512)[0]
    slow = varlen_attention(None, q.float(), k.float(), v.float(), None, scaling=128 ** -0.5,
                            codescaler_cu_seqlens=cu.to(device))[0]
    report["varlen_check_max_abs_diff_bf16_vs_fp32_loop"] = float((fast.float() - slow).abs().max())
    print(f"varlen check: max |diff| {report['varlen_check_max_abs_diff_bf16_vs_fp32_loop']:.3e}", flush=True)
    # the last layer's attention: each input's last query over its keys (flash varlen vs the fp32 loop)
    last = cu[1:].long().to(device) - 1
    qs, ks, vs = (t[0].transpose(0, 1) for t in (q, k, v))  # [T, H, D]
    fast = last_query_attention(qs[last], ks, vs, cu.to(device), 512, 128 ** -0.5)
    slow = last_query_attention(qs[last].float(), ks.float(), vs.float(), cu.to(device), 512, 128 ** -0.5)
    report["last_query_check_max_abs_diff_bf16_vs_fp32_loop"] = float((fast.float() - slow).abs().max())
    report["last_query_check_vs_varlen_rows"] = float((slow - varlen_attention(
        None, q.float(), k.float(), v.float(), None, scaling=128 ** -0.5,
        codescaler_cu_seqlens=cu.to(device))[0][0, last]).abs().max())
    print(f"last-query check: max |diff| {report['last_query_check_max_abs_diff_bf16_vs_fp32_loop']:.3e}, "
          f"vs the full attention's last rows {report['last_query_check_vs_varlen_rows']:.3e}", flush=True)
    # shared prefixes: tails after a common prefix through flash (causal aligned at the end) against the fp32
    # loop (gathered keys, an explicit end-aligned mask; tests/test_sharing.py checks it against whole inputs)
    from codescaler.sharing import shared_inputs

    head = list(range(1, 200))
    seqs = [head + list(range(300, 300 + n)) for n in (1, 40, 150)] + [list(range(7, 90))]
    row = {k_: t.to(device) for k_, t in shared_inputs(seqs, [(199, [0, 1, 2]), (0, [3])]).items()}
    n = row["input_ids"].shape[1]
    q, k, v = (torch.randn(1, h, n, 128, generator=g).to(device, torch.bfloat16) for h in (8, 2, 2))
    layout = {k_: t for k_, t in row.items() if k_.startswith("codescaler_")}
    fast = varlen_attention(None, q, k, v, None, scaling=128 ** -0.5, codescaler_max_len=512, codescaler_max_kv=512,
                            **layout)[0]
    slow = varlen_attention(None, q.float(), k.float(), v.float(), None, scaling=128 ** -0.5, **layout)[0]
    report["shared_prefix_check_max_abs_diff_bf16_vs_fp32_loop"] = float((fast.float() - slow).abs().max())
    print(f"shared-prefix check: max |diff| {report['shared_prefix_check_max_abs_diff_bf16_vs_fp32_loop']:.3e}",
          flush=True)


def attention_kernels(device, seqs, args, report):
    """The packed attention alone, one layer of the 8B shape (32 query and 8 KV heads of 128) over the first
    packed batch of the workload: the flash varlen kernel the scorer uses against cuDNN's varlen attention
    (KV heads repeated, and native grouped heads), padded groups through cuDNN's and flash's dense
    kernels (dense_kernels) and FlexAttention with a document-causal block mask (flex_kernel), each checked against
    per-input SDPA in fp32 (`--attention-kernels` picks some).
    On an H100 (torch 2.11, cuDNN 9.19) cuDNN varlen took 54-59 ms a layer against flash's 1.86 ms."""
    from codescaler.packing import packed_inputs, plan_packed, varlen_attention

    rows = report.setdefault("attention_kernels", {})
    batch = plan_packed([len(s) for s in seqs], args.compile_budget, 256)[0]
    lens = [len(seqs[i]) for i in batch]
    cu = packed_inputs([seqs[i] for i in batch])["codescaler_cu_seqlens"].to(device)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(sum(lens), h, 128, generator=g, device=device, dtype=torch.bfloat16) for h in (32, 8, 8))
    scale, mx = 128 ** -0.5, max(lens)
    rep = lambda t: t.repeat_interleave(4, dim=1)  # noqa: E731
    kernels = {
        "flash": lambda: torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, mx, mx, 0.0, True, False,
                                                                 scale=scale)[0],
        "cudnn_repeat_kv": lambda: torch.ops.aten._cudnn_attention_forward(q, rep(k), rep(v), None, cu, cu, mx, mx,
                                                                           False, 0.0, True, False, scale=scale)[0],
        "cudnn_gqa": lambda: torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, mx, mx, False, 0.0, True,
                                                                     False, scale=scale)[0],
    }
    # the reference: the scorer's own per-input SDPA path, in fp32 ([T, H, D] <-> [1, H, T, D])
    ref = varlen_attention(None, *(t.float().transpose(0, 1).unsqueeze(0) for t in (q, k, v)), None, scaling=scale,
                           codescaler_cu_seqlens=cu)[0][0]
    attn_width = 32 * 128
    flops = sum(2 * n * n * attn_width for n in lens)  # causal QK^T and AV, as build() counts them
    wanted = set(args.attention_kernels.split(",")) if args.attention_kernels != "all" else None
    if wanted is None or wanted & {"cudnn_dense_groups_of_8", "flash_dense_groups_of_8"}:
        kernels.update(dense_kernels(q, k, v, lens, scale))
    if wanted is None or "flex_document" in wanted:
        try:
            kernels["flex_document"], rows["flex_block_mask_ms"] = flex_kernel(q, k, v, lens, scale)
        except Exception as e:  # a torch without FlexAttention, or one that cannot compile it here
            rows["flex_document"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    for name, fn in kernels.items():
        if wanted is not None and name not in wanted:
            continue
        try:
            out = fn()
            err = float((out.float() - ref).abs().max())
            sync()
            t0 = time.perf_counter()
            for _ in range(36):
                fn()
            sync()
            ms = (time.perf_counter() - t0) / 36 * 1e3
            rows[name] = {"ms_per_layer": round(ms, 3), "tflops": round(flops / ms / 1e9, 1), "max_abs_err": err}
        except Exception as e:  # a kernel this torch lacks must not stop the run
            rows[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(f"attention {name}: {rows[name]}", flush=True)
    rows["batch"] = {"inputs": len(lens), "tokens": sum(lens)}


def flex_kernel(q, k, v, lens, scale):
    """Experiment: FlexAttention (torch.compile'd: Triton kernels on CUDA) over the packed batch [T, H, D], causal
    within each input through a block mask, KV heads grouped natively. (fn, the block mask's build time in ms): the
    mask is built once per batch and would serve every layer of a model."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    doc = torch.repeat_interleave(torch.arange(len(lens), device=q.device), torch.tensor(lens, device=q.device))

    def causal_within_input(b, h, qi, ki):
        return (doc[qi] == doc[ki]) & (ki <= qi)

    n = q.shape[0]
    for _ in range(2):  # the second build is timed (the first compiles)
        sync()
        t0 = time.perf_counter()
        block = create_block_mask(causal_within_input, None, None, n, n, device=q.device, _compile=True)
        sync()
        mask_ms = (time.perf_counter() - t0) * 1e3
    flex = torch.compile(flex_attention, dynamic=False)
    qh, kh, vh = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, H, T, D]

    def fn():
        return flex(qh, kh, vh, block_mask=block, scale=scale, enable_gqa=True)[0].transpose(0, 1)

    return fn, round(mask_ms, 3)


def dense_kernels(q, k, v, lens, scale):
    """Experiment: the batch's inputs sorted by length, in groups of 8 padded to the group's longest
    ([B, H, L, D], causal), through SDPA's cuDNN and flash backends (KV heads repeated). The padding is done
    before the timing, so these time the kernels and the copy back to [T, H, D], like the varlen ones."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    starts = [0] + list(torch.tensor(lens).cumsum(0).tolist())
    order = sorted(range(len(lens)), key=lambda i: lens[i])
    groups = []
    for g in (order[i:i + 8] for i in range(0, len(order), 8)):
        width = max(lens[i] for i in g)
        padded = []
        for t, heads in ((q, 32), (k, 8), (v, 8)):
            x = t.new_zeros(len(g), width, heads, t.shape[-1])
            for row, i in enumerate(g):
                x[row, :lens[i]] = t[starts[i]:starts[i] + lens[i]]
            padded.append(x.transpose(1, 2).repeat_interleave(32 // heads, dim=1))  # [B, 32, L, D]
        groups.append((g, *padded))

    def run(backend):
        def fn():
            out = q.new_empty(q.shape)
            with sdpa_kernel([backend]):
                for g, qd, kd, vd in groups:
                    o = torch.nn.functional.scaled_dot_product_attention(qd, kd, vd, is_causal=True, scale=scale)
                    for row, i in enumerate(g):
                        out[starts[i]:starts[i] + lens[i]] = o[row, :, :lens[i]].transpose(0, 1)
            return out
        return fn

    return {"cudnn_dense_groups_of_8": run(SDPBackend.CUDNN_ATTENTION),
            "flash_dense_groups_of_8": run(SDPBackend.FLASH_ATTENTION)}


def eager_phase(name, args, seqs, device, out):
    """The seed ways and ours without compilation, padded and packed, at several budgets."""
    t0 = time.perf_counter()
    model, n_dense, flops = build(name, device)
    print(f"[{name}] built in {time.perf_counter() - t0:.1f}s", flush=True)
    rows = out["ways"]
    out["dense_params"] = n_dense
    subset = seqs[: args.fp32_subset]
    seed_way(model, subset[:2])  # warm-up
    s32 = measure("seed_fp32", lambda x: seed_way(model, x), subset, flops, args.peak_tflops, rows)
    o32 = measure("ours_fp32", scorer_fn(model, 32768), subset, flops, args.peak_tflops, rows)
    p32 = measure("ours_packed_fp32", scorer_fn(model, 32768, packing=True), subset, flops, args.peak_tflops, rows)
    out["max_abs_diff_fp32_vs_seed"] = max(abs(a - b) for a, b in zip(s32, o32))
    out["max_abs_diff_packed_fp32_vs_seed"] = max(abs(a - b) for a, b in zip(s32, p32))
    model.to(torch.bfloat16)
    seed_way(model, seqs[:2])
    s16 = measure("seed_bf16", lambda x: seed_way(model, x), seqs, flops, args.peak_tflops, rows)
    out["score_std_bf16"] = float(torch.tensor(s16).std())
    padded = packed = None
    for budget in args.budgets:
        fn = scorer_fn(model, budget)
        fn(seqs[:8])
        scores = measure(f"ours_b{budget // 1024}k", fn, seqs, flops, args.peak_tflops, rows)
        padded = padded or scores
    for budget in args.budgets:
        fn = scorer_fn(model, budget, packing=True)
        fn(seqs[:8])
        packed_last = measure(f"ours_packed{budget // 1024}k", fn, seqs, flops, args.peak_tflops, rows)
        packed = packed or packed_last
    fn = scorer_fn(model, args.budgets[-1], packing=True, trim=False)
    fn(seqs[:8])
    whole = measure(f"ours_packed{args.budgets[-1] // 1024}k_whole", fn, seqs, flops, args.peak_tflops, rows)
    out["max_abs_diff_trimmed_vs_whole_bf16"] = max(abs(a - b) for a, b in zip(packed_last, whole))
    fn = scorer_fn(model, args.budgets[0], packing=True)
    profile_into(out, "profile_packed_top_kernels", fn, seqs)
    out["sync_points_packed"] = sync_points(fn, seqs[:64])  # expected: one wait per batch, for its scores
    print(f"  host waits in one packed call of 64 inputs: {out['sync_points_packed']}", flush=True)
    out["max_abs_diff_bf16_vs_seed_bf16"] = max(abs(a - b) for a, b in zip(s16, padded))
    out["max_abs_diff_packed_vs_padded_bf16"] = max(abs(a - b) for a, b in zip(packed, padded))
    if args.eager_fused:
        out["fused_mlps"] = fuse_gate_up(model.model)
        budget = args.budgets[-1]
        fn = scorer_fn(model, budget, packing=True)
        fn(seqs[:8])
        scores = measure(f"ours_packed{budget // 1024}k_fused", fn, seqs, flops, args.peak_tflops, rows)
        out["max_abs_diff_fused_vs_packed_bf16"] = max(abs(a - b) for a, b in zip(packed_last, scores))
    summarise(out)


def compile_phase(name, args, seqs, device, out, packing=True, scope="layers", fused=False, fp8=False, tuned=False,
                  freeze=False, autotune=False, trim=True, chunked=False):
    """torch.compile (dynamic shapes): a compiling first pass, then timed ones (the fastest of --repeats).
    scope: layers (regional: one decoder layer's graph serves all) or model (the whole backbone);
    fused: gate and up projections stacked (GatedMLP); fp8: every layer's linears in float8
    (FP8Linear, an experiment); autotune: inductor's GEMM autotuning (Triton templates against cuBLAS);
    tuned: inductor's coordinate-descent tuning of its own kernels; freeze: inductor freezing (weights as
    constants, which may fuse projections sharing an input); trim=False: the last layer run whole;
    chunked: each MLP in --mlp-chunks slices of its intermediate width (ChunkedMLP, an experiment)."""
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    # Each way compiles from nothing (no graphs cached in this process or on disk), so its first pass
    # times its whole compile; Triton's cache of identical kernels still serves later ways.
    torch._dynamo.reset()
    gc.collect()  # dynamo's caches held the last way's model: free it before this way's peak memory
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    counters.clear()
    inductor_config.fx_graph_cache = False
    inductor_config.coordinate_descent_tuning = tuned
    inductor_config.max_autotune = autotune  # GEMMs: Triton templates (with fused epilogues) against cuBLAS
    inductor_config.freezing = freeze
    model, _, flops = build(name, device)
    model.to(torch.bfloat16)
    if fused:
        out["fused_mlps"] = fuse_gate_up(model.model)
    if fp8:
        out["fp8_linears"] = fp8_linears(model.model)
    if chunked:
        out["chunked_mlps"] = chunk_mlps(model.model, args.mlp_chunks)
    budget = args.compile_budget
    flags = "".join(f"{flag}_" for flag, on in (("autotune", autotune), ("tuned", tuned), ("frozen", freeze),
                                                  ("fused", fused), ("fp8", fp8), ("whole", not trim),
                                                  (f"chunked{args.mlp_chunks}", chunked)) if on)
    way = f"ours_compiled_{scope}_{flags}{'packed' if packing else 'b'}{budget // 1024}k"
    fn = scorer_fn(model, budget, packing=packing, compile=True, scope=scope, trim=trim)
    t0 = time.perf_counter()
    first = fn(seqs)
    out[f"{way}_first_pass_s"] = round(time.perf_counter() - t0, 1)
    out[f"{way}_graphs"] = {"compiled": counters["stats"]["unique_graphs"],
                             "graph_breaks": sum(counters["graph_break"].values())}
    print(f"  {way}: first (compiling) pass {out[f'{way}_first_pass_s']} s, {out[f'{way}_graphs']}", flush=True)
    again = measure(way, fn, seqs, flops, args.peak_tflops, out["ways"], repeats=args.repeats)
    out[f"{way}_max_abs_diff_between_passes"] = max(abs(a - b) for a, b in zip(first, again))
    base = args.compiled_scores.setdefault(name, {})  # the first compiled way is the reference of the others
    if base:
        ref_way, ref = next(iter(base.items()))
        out[f"{way}_max_abs_diff_vs_{ref_way}"] = max(abs(a - b) for a, b in zip(ref, again))
        out[f"{way}_corr_vs_{ref_way}"] = round(float(torch.corrcoef(torch.tensor([ref, again]))[0, 1]), 6)
    else:
        base[way] = again
    profile_into(out, f"profile_{way}_top_kernels", fn, seqs)
    summarise(out)


def profile_into(out, key, fn, seqs):
    """Where the GPU time goes: the top kernels of one pass over the first 48 inputs."""
    if not torch.cuda.is_available():
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(seqs[:48])
    out[key] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=16, max_name_column_width=90)
    print(out[key], flush=True)


def summarise(out):
    rows = out["ways"]
    ours = [k for k in rows if k.startswith("ours_") and "fp32" not in k]
    if not ours or "seed_fp32" not in rows:
        return
    best = max(ours, key=lambda k: rows[k]["tokens_per_s"])
    out["best_ours"] = best
    out["speedup_best_vs_seed_fp32"] = round(rows[best]["tokens_per_s"] / rows["seed_fp32"]["tokens_per_s"], 2)
    if "seed_bf16" in rows:
        out["speedup_best_vs_seed_bf16"] = round(rows[best]["tokens_per_s"] / rows["seed_bf16"]["tokens_per_s"], 2)
    print(f"  best so far {best}: x{out['speedup_best_vs_seed_fp32']} vs seed fp32", flush=True)


def text_workload(tokenizer, n, min_len, max_len, rng):
    """n (prompt, code) pairs of real Python text (this repository's own sources), the codes of about
    min_len..max_len tokens, the prompts ~150 tokens."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "codescaler")
    source = "".join(open(os.path.join(root, f), encoding="utf-8").read()
                     for f in sorted(os.listdir(root)) if f.endswith(".py"))
    chars_per_token = 50000 / len(tokenizer(source[:50000])["input_ids"])
    pairs = []
    for _ in range(n):
        size = int(rng.randint(min_len, max_len) * chars_per_token)
        start, ask = rng.randrange(len(source) - size), rng.randrange(len(source) - 600)
        pairs.append(("Write code that does what this does:\n" + source[ask:ask + 600], source[start:start + size]))
    return pairs


def text_phase(name, args, seqs, device, out):
    """From text, as RewardScorer.score_code runs in RL: tokenising (chat template + tokenizer, `--text-tokenizer`)
    then scoring, compiled on CUDA, with the tokenising of each chunk overlapped with the GPU's work on the one
    before (encode_overlap, the CUDA default) against tokenising everything first; plus each part alone."""
    from transformers import AutoTokenizer

    from codescaler.scorer import RewardScorer, ScorerConfig

    tokenizer = AutoTokenizer.from_pretrained(args.text_tokenizer)
    pairs = text_workload(tokenizer, args.n, args.min_len, args.max_len, random.Random(1))
    prompts, codes = [q for q, _ in pairs], [c for _, c in pairs]
    torch._dynamo.reset()
    model, _, flops = build(name, device, min_vocab=len(tokenizer))
    model.to(torch.bfloat16)
    scorer = RewardScorer(ScorerConfig(model="bench", max_length=4096, compile=device == "cuda"),
                          tokenizer=tokenizer, model=model)
    t0 = time.perf_counter()
    ids = [i for i, _ in scorer.encode(prompts, codes)]
    encode_s = time.perf_counter() - t0
    scorer.score_code(prompts, codes)  # compiles
    rows, tokens = out["ways"], sum(map(len, ids))
    out["text_workload"] = {"pairs": len(pairs), "tokens": tokens, "tokenizer": args.text_tokenizer,
                            "tokenise_only_s": round(encode_s, 3),
                            "tokenise_only_tokens_per_s": round(tokens / encode_s, 1)}
    print(f"  text: {len(pairs)} pairs, {tokens} tokens, tokenised alone at {tokens / encode_s:.0f} tok/s", flush=True)
    measure("text_scores_from_ids", scorer.score_ids, ids, flops, args.peak_tflops, rows, repeats=args.repeats)
    results = {}
    for overlap in (False, True):
        scorer.overlap = overlap
        way = "text_tokenise_overlapped" if overlap else "text_tokenise_first"
        results[way] = measure(way, lambda _: scorer.score_code(prompts, codes), ids, flops, args.peak_tflops, rows,
                               repeats=args.repeats)
    out["text_max_abs_diff_overlapped_vs_first"] = max(
        abs(a - b) for (a, _), (b, _) in zip(results["text_tokenise_first"], results["text_tokenise_overlapped"]))
    out["text_overlap_speedup"] = round(rows["text_tokenise_first"]["seconds"] /
                                        rows["text_tokenise_overlapped"]["seconds"], 3)
    print(f"  text: overlapped x{out['text_overlap_speedup']} against tokenising first", flush=True)


def groups_phase(name, args, seqs, device, out):
    """A best-of-N / GRPO-shaped workload: n/8 problems of 8 inputs each, a shared start (the problem's chat,
    min_len/2..max_len/2 tokens) then each its own code (as long again at most), scored compiled (on CUDA)
    with shared prefixes (codescaler/sharing.py; --share-prefix on, as auto waits for this check on CUDA) against
    each input whole (--share-prefix off).
    tokens/s and MFU count every input's tokens, so the shared way's are effective rates."""
    from codescaler.scorer import RewardScorer, ScorerConfig
    from codescaler.sharing import shared_forward_tokens

    rng, vocab, grouped = random.Random(2), SHAPES[name]["vocab_size"], []
    half = (args.min_len // 2, args.max_len // 2)
    for _ in range(max(1, args.n // 8)):
        head = [rng.randrange(1, vocab) for _ in range(rng.randint(*half))]
        grouped += [head + [rng.randrange(1, vocab) for _ in range(rng.randint(*half))] for _ in range(8)]
    torch._dynamo.reset()
    model, _, flops = build(name, device)
    model.to(torch.bfloat16)
    scorer = RewardScorer(ScorerConfig(model="bench", token_budget=args.compile_budget, max_length=args.max_len,
                                       packing="on", compile=device == "cuda"),
                          tokenizer=SimpleNamespace(pad_token_id=0), model=model)
    lengths = [len(s) for s in grouped]
    forward = shared_forward_tokens(grouped, scorer.token_budget)
    out["groups_workload"] = {"inputs": len(grouped), "per_problem": 8, "tokens": sum(lengths),
                              "forward_tokens_shared": forward, "forward_token_fraction": round(forward / sum(lengths), 3)}
    results = {}
    for share in (False, True):
        scorer.share = share
        way = "groups_shared" if share else "groups_whole"
        scorer.score_ids(grouped)  # compiles (the shared way's graphs take the key index)
        results[way] = measure(way, scorer.score_ids, grouped, flops, args.peak_tflops, out["ways"],
                               repeats=args.repeats)
    out["groups_max_abs_diff_shared_vs_whole"] = max(abs(a - b) for a, b in zip(*results.values()))
    out["groups_speedup_shared_vs_whole"] = round(out["ways"]["groups_whole"]["seconds"] /
                                                  out["ways"]["groups_shared"]["seconds"], 3)
    print(f"  groups: shared x{out['groups_speedup_shared_vs_whole']} against whole "
          f"({out['groups_workload']['forward_token_fraction']:.0%} of the tokens through the model)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1.7b,8b")
    ap.add_argument("--n", type=int, default=256, help="sequences in the workload")
    ap.add_argument("--min-len", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--fp32-subset", type=int, default=16, help="sequences timed in fp32 (slow)")
    ap.add_argument("--budgets", default="16384,32768,65536", help="token budgets to try for ours")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    ap.add_argument("--compile-budget", type=int, default=32768, help="token budget of the compiled ways")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile ways")
    ap.add_argument("--compile-only", action="store_true", help="only the torch.compile ways (and their profiles)")
    ap.add_argument("--compile-ways", default="layers",
                    help="compiled ways, in order, each for every shape or for one (KIND:SHAPE): layers (packed, "
                         "regional: the scorer's default), whole (layers, the last layer run whole), model "
                         "(packed, the whole backbone), padded (layers, "
                         "padded batches), fused (layers + gate/up stacked), fp8 (fused + float8 linears, an "
                         "experiment), chunked (layers + each MLP in --mlp-chunks slices, an experiment), "
                         "autotune (layers + inductor GEMM autotuning), tuned (model + inductor "
                         "coordinate-descent tuning), frozen (model + inductor freezing), text (from text: "
                         "tokenising overlapped with scoring against tokenising first; needs --text-tokenizer), "
                         "groups (8 inputs a problem: shared prefixes against each input whole)")
    ap.add_argument("--mlp-chunks", type=int, default=3,
                    help="slices of the MLP's intermediate width in the `chunked` way (3: 8B's 12288 as 3 x 4096)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes of each compiled way (the fastest counts)")
    ap.add_argument("--eager-fused", action="store_true",
                    help="after the eager ways, stack gate/up (GatedMLP) and time packed again")
    ap.add_argument("--no-attention-kernels", action="store_true", help="skip the attention-kernel microbench")
    ap.add_argument("--attention-kernels", default="all",
                    help="the microbench's kernels (comma-separated, or all): flash (the scorer's), cudnn_repeat_kv, "
                         "cudnn_gqa, cudnn_dense_groups_of_8, flash_dense_groups_of_8, flex_document")
    ap.add_argument("--deadline-s", type=float, default=360,
                    help="start no new step after this many seconds (the device lease is short)")
    ap.add_argument("--text-tokenizer", default=None,
                    help="a tokenizer directory with a chat template, for the `text` way (scoring from text)")
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
    started = time.perf_counter()

    def save():
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)

    args.compiled_scores = {}
    if device == "cuda":
        check_varlen(device, report)
        try:
            if not args.no_attention_kernels:
                attention_kernels(device, seqs, args, report)
        except Exception as e:  # the model ways still run
            report["attention_kernels_error"] = f"{type(e).__name__}: {e}"[:1000]
        save()
    # Eager ways for every shape first, then the compiled ones (slow to build), while the deadline allows;
    # the JSON is rewritten after each step, so a run cut short keeps what it measured.
    steps = [(eager_phase, name, {}) for name in shapes if not args.compile_only]
    if not args.no_compile:
        kinds = {"layers": {}, "whole": {"trim": False}, "model": {"scope": "model"}, "padded": {"packing": False},
                 "fused": {"fused": True}, "autotune": {"autotune": True}, "fp8": {"fused": True, "fp8": True},
                 "chunked": {"chunked": True},
                 "tuned": {"scope": "model", "tuned": True}, "frozen": {"scope": "model", "freeze": True}}
        for item in args.compile_ways.split(","):
            kind, _, only = item.partition(":")
            if kind == "text":
                if not args.text_tokenizer:
                    ap.error("--compile-ways text needs --text-tokenizer DIR")
                steps += [(text_phase, name, {}) for name in shapes if not only or name == only]
                continue
            if kind == "groups":
                steps += [(groups_phase, name, {}) for name in shapes if not only or name == only]
                continue
            if kind not in kinds:
                ap.error(f"--compile-ways: unknown way {kind!r}; use {', '.join(kinds)}")
            steps += [(compile_phase, name, kinds[kind]) for name in shapes if not only or name == only]
    for phase, name, kw in steps:
        elapsed = time.perf_counter() - started
        if elapsed > args.deadline_s:
            report.setdefault("skipped", []).append(f"{phase.__name__} {name} {kw} (deadline, {elapsed:.0f}s)")
            print(f"skip {phase.__name__} {name} {kw}: past the {args.deadline_s}s deadline", flush=True)
            continue
        out = report["shapes"].setdefault(name, {"shape": name, "ways": {}})
        try:
            phase(name, args, seqs, device, out, **kw)
        except Exception as e:  # one failed experiment must not cost the others' numbers
            out.setdefault("errors", []).append(f"{phase.__name__} {kw}: {type(e).__name__}: {e}"[:2000])
            print(f"[{name}] {phase.__name__} {kw} failed: {type(e).__name__}: {e}", flush=True)
        gc.collect()  # the step's model, held in reference cycles, before the next step's peak memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        report["elapsed_s"] = round(time.perf_counter() - started, 1)
        save()
    print(f"wrote {args.out} after {report['elapsed_s']}s")


if __name__ == "__main__":
    main()
