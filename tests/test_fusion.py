"""Gate and up projections stacked into one GEMM: the same function, the same parameters."""

import torch

from codescaler.fusion import GatedMLP, fuse_gate_up


def tiny(kind: str):
    from transformers import (GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification,
                              Qwen3Config, Qwen3ForSequenceClassification)

    torch.manual_seed(0)
    shape = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, num_labels=1, pad_token_id=0)
    if kind == "qwen3":
        return Qwen3ForSequenceClassification(Qwen3Config(**shape, head_dim=16)).eval()
    if kind == "llama":
        return LlamaForSequenceClassification(LlamaConfig(**shape)).eval()
    return GPT2ForSequenceClassification(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, num_labels=1,
                                                    pad_token_id=0)).eval()


def test_fused_mlps_give_the_same_scores_with_the_same_parameters():
    ids = torch.randint(1, 300, (3, 21), generator=torch.Generator().manual_seed(1))
    for kind in ("qwen3", "llama"):
        model = tiny(kind)
        with torch.no_grad():
            before = model(input_ids=ids).logits
        n_params = sum(p.numel() for p in model.parameters())
        gate = model.model.layers[1].mlp.gate_proj.weight.clone()
        assert fuse_gate_up(model) == 3
        mlp = model.model.layers[1].mlp
        assert isinstance(mlp, GatedMLP) and not hasattr(mlp, "gate_proj")
        assert torch.equal(mlp.gate_up_proj.weight[:96], gate)  # gate first, then up
        assert sum(p.numel() for p in model.parameters()) == n_params
        with torch.no_grad():
            after = model(input_ids=ids).logits
        assert torch.allclose(before, after, atol=1e-5), (kind, (before - after).abs().max())


def test_a_model_type_without_a_known_gated_mlp_is_left_alone():
    model = tiny("gpt2")
    modules = [type(m) for m in model.modules()]
    assert fuse_gate_up(model) == 0
    assert [type(m) for m in model.modules()] == modules
