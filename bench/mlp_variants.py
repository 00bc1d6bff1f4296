"""Experiments on a decoder layer's linears, not in the scorer: each swaps modules of a loaded backbone in place,
so bench/score_gpu.py can time the whole model with them and bench/fp8_fidelity.py can score real pairs.

  GatedMLP     gate and up stacked into one GEMM of twice the width, as serving engines do (H100: no gain)
  ChunkedMLP   the MLP in slices of its intermediate width, so that every product has the shape of the q/o
               projection, the shape cuBLAS runs fastest at on the H100 (bench/gemm_shapes.py); pending
  FP8Linear    y = x W^T in float8 e4m3 with rowwise scales (H100: +37%, but the scores move; see the README)
"""

from __future__ import annotations

import torch


class GatedMLP(torch.nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up stacked into one projection, one GEMM of twice the width."""

    def __init__(self, mlp):
        super().__init__()
        gate, up = mlp.gate_proj, mlp.up_proj
        self.gate_up_proj = torch.nn.Linear(gate.in_features, 2 * gate.out_features, bias=False,
                                            device=gate.weight.device, dtype=gate.weight.dtype)
        with torch.no_grad():
            self.gate_up_proj.weight.copy_(torch.cat([gate.weight, up.weight]))
        self.down_proj, self.act_fn = mlp.down_proj, mlp.act_fn

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act_fn(gate) * up)


def fuse_gate_up(backbone) -> int:
    """Each decoder layer's MLP (Qwen3MLP: down_proj(act_fn(gate_proj(x)) * up_proj(x))) becomes a GatedMLP."""
    for layer in backbone.layers:
        layer.mlp = GatedMLP(layer.mlp)
    return len(backbone.layers)


def chunked_mlp(x, gate_w, up_w, down_w, act, chunks: int):
    """down(act(gate(x)) * up(x)) over `chunks` equal slices s of the intermediate width:
    y = sum_s down[:, s](act(gate[s](x)) * up[s](x)). The slices are views of the weights (no copies; the
    down slice is a column block, which cuBLAS reads with its leading dimension), and each slice's output
    is added by the GEMM itself (addmm, beta = 1) rather than by a separate kernel."""
    width = gate_w.shape[0]
    if width % chunks:
        raise ValueError(f"chunks={chunks} does not divide the intermediate width {width}; use a divisor of it")
    step = width // chunks
    flat = x.reshape(-1, x.shape[-1])
    y = None
    for start in range(0, width, step):
        cols = slice(start, start + step)
        h = act(flat @ gate_w[cols].t()) * (flat @ up_w[cols].t())
        y = h @ down_w[:, cols].t() if y is None else torch.addmm(y, h, down_w[:, cols].t())
    return y.reshape(*x.shape[:-1], y.shape[-1])


class ChunkedMLP(torch.nn.Module):
    """The layer's own MLP computed by `chunked_mlp` (its weights are shared, not copied)."""

    def __init__(self, mlp, chunks: int):
        super().__init__()
        if any(p.bias is not None for p in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)):
            raise ValueError("ChunkedMLP takes bias-free projections (Llama/Qwen MLPs)")
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.act_fn = mlp.act_fn
        self.chunks = chunks

    def forward(self, x):
        return chunked_mlp(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight, self.act_fn,
                           self.chunks)


def chunk_mlps(backbone, chunks: int) -> int:
    """Each decoder layer's MLP becomes a ChunkedMLP of `chunks` slices."""
    for layer in backbone.layers:
        layer.mlp = ChunkedMLP(layer.mlp, chunks)
    return len(backbone.layers)


FP8_MAX = 448.0  # largest float8 e4m3fn


class FP8Linear(torch.nn.Module):
    """y = x W^T in float8 e4m3 (torch._scaled_mm), the weight scaled per output channel once, the input per
    token on the fly (rowwise scales), bf16 out."""

    def __init__(self, linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX  # [N, 1]
        self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn))  # [N, K]
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, N]
        self.bias = linear.bias

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        scale = flat.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX  # [M, 1]
        q = (flat.float() / scale).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                             out_dtype=x.dtype)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def fp8_linears(backbone) -> int:
    """Every nn.Linear inside the decoder layers becomes an FP8Linear (the score head stays bf16)."""
    swapped = 0
    for parent in list(backbone.layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, FP8Linear(child))
                swapped += 1
    return swapped
