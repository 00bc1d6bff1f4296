#!/usr/bin/env bash
# The GPU checks still pending for issue #8, as one prepared command for a lent device (nothing but torch and
# transformers needed there). Run from the repository root with a tokenizer that has a chat template carried
# along (SmolLM2's: `make bench-tokenizer` writes .bench_tok/; carry it):
#   bash bench/gpu_check.sh            # writes score_gpu_pending.{json,log} to $OUT (or bench/results)
# 1. check_varlen: flash varlen against the fp32 loop, plain, last-query and shared-prefix layouts;
# 2. groups: shared prefixes against each input whole, compiled, 8 inputs a problem (the CUDA check that
#    `--share-prefix auto` waits for before it turns sharing on with CUDA);
# 3. text: tokenising overlapped with scoring against tokenising first (encode_overlap's CUDA default).
set -euo pipefail
out=${OUT:-bench/results}
tokenizer=${TOKENIZER_DIR:-.bench_tok}
mkdir -p "$out"
python bench/score_gpu.py --shapes 1.7b,8b --compile-only --no-attention-kernels --compile-ways groups,text \
    --text-tokenizer "$tokenizer" --deadline-s 300 --out "$out/score_gpu_pending.json" 2>&1 \
    | tee "$out/score_gpu_pending.log"
