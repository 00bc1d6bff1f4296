#!/usr/bin/env bash
# The GPU checks still pending for issue #8, as one prepared command for a lent device (nothing but torch and
# transformers needed there; about 7 minutes on an H100). Run from the repository root with a tokenizer that
# has a chat template carried along (SmolLM2's: `make bench-tokenizer` writes .bench_tok/; carry it):
#   bash bench/gpu_check.sh            # writes gemm_pending.* and score_gpu_pending.* to $OUT (or bench/results)
# 1. gemm_shapes: the 8B layer's products through cuBLAS and cuBLASLt, and the 8B MLP whole against the same
#    MLP in 2, 3 or 4 slices of its intermediate width (3 slices: every product has the q/o shape, the one
#    cuBLAS ran fastest at), each with its error against fp32;
# 2. check_varlen: flash varlen against the fp32 loop, plain, last-query and shared-prefix layouts; then one 8B
#    layer's attention over the first packed batch: flash varlen (the scorer's, 9% of the compiled 8B's GPU time)
#    against FlexAttention with a document-causal block mask (Triton kernels; can Hopper's beat FA2's 291 TFLOP/s?);
# 3. groups: shared prefixes against each input whole, compiled, 8 inputs a problem (the CUDA check that
#    `--share-prefix auto` waits for before it turns sharing on with CUDA);
# 4. if a sliced MLP beat the whole one in 1: the compiled 8B scorer with that slicing against without, in one
#    run (the 45k tok/s target);
# 5. text: tokenising overlapped with scoring against tokenising first (encode_overlap's CUDA default).
set -euo pipefail
out=${OUT:-bench/results}
tokenizer=${TOKENIZER_DIR:-.bench_tok}
mkdir -p "$out"
python bench/gemm_shapes.py --blas cublas,cublaslt --mlp-chunks 2,3,4 --reps 10 --sustain-s 1 \
    --out "$out/gemm_pending.json" 2>&1 | tee "$out/gemm_pending.log" || echo "gemm_shapes failed; the scorer checks still run"
chunks=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["mlp_best_chunks"])' "$out/gemm_pending.json" \
    || echo 1)
ways=groups
if [ "$chunks" != 1 ]; then ways="groups,layers:8b,chunked:8b"; fi
python bench/score_gpu.py --shapes 1.7b,8b --compile-only --attention-kernels flash,flex_document --compile-ways "$ways,text" \
    --mlp-chunks "$chunks" --text-tokenizer "$tokenizer" --deadline-s 330 --out "$out/score_gpu_pending.json" 2>&1 \
    | tee "$out/score_gpu_pending.log"
