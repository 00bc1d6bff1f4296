"""Gate and up projections of a gated MLP in one GEMM.

A Llama-style MLP computes down(act(gate(x)) * up(x)): two GEMMs that read the same input. One GEMM
against the two weights stacked reads x once and gives the kernel one wide output (N = 2 x intermediate)
instead of two, as serving engines do. It is the same function, and agrees with the unfused MLP to the
rounding of the GEMM's tiling. (Imported only where torch is wanted: it imports torch.)
"""

from __future__ import annotations

import torch

# Model types whose MLP forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x)).
GATED_MLP_MODELS = ("llama", "mistral", "qwen2", "qwen3")


class GatedMLP(torch.nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up stacked in one projection."""

    def __init__(self, mlp: torch.nn.Module):
        super().__init__()
        gate, up = mlp.gate_proj, mlp.up_proj
        self.gate_up_proj = torch.nn.Linear(gate.in_features, 2 * gate.out_features, bias=False,
                                            device=gate.weight.device, dtype=gate.weight.dtype)
        with torch.no_grad():
            self.gate_up_proj.weight.copy_(torch.cat([gate.weight, up.weight]))
        self.gate_up_proj.requires_grad_(gate.weight.requires_grad)
        self.down_proj, self.act_fn = mlp.down_proj, mlp.act_fn

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act_fn(gate) * up)


def is_gated_mlp(module: torch.nn.Module) -> bool:
    gate, up, down = (getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj"))
    return (all(isinstance(m, torch.nn.Linear) for m in (gate, up, down)) and callable(getattr(module, "act_fn", None))
            and gate.bias is None and up.bias is None and gate.weight.shape == up.weight.shape)


def fuse_gate_up(model: torch.nn.Module) -> int:
    """Replace every gated MLP of `model` by a GatedMLP, in place; returns how many.

    A model type outside GATED_MLP_MODELS is left unchanged (0): its MLP may compute something else."""
    if getattr(getattr(model, "config", None), "model_type", None) not in GATED_MLP_MODELS:
        return 0
    fused = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_gated_mlp(child):
                setattr(parent, name, GatedMLP(child))
                fused += 1
    return fused
