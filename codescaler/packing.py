"""Padding-free scoring: many RM inputs packed into one row, attention kept inside each input.

A padded batch spends FLOPs on pad tokens (4-14% on a 256..2048-token workload, more with
bigger batches); a packed row has none, and every batch can be filled to the token budget.
Attention must not cross inputs, so the packed forward passes the boundaries
(`cu_seqlens`, as in flash-attention's varlen API) down to an attention function of our own,
registered with transformers' AttentionInterface as `codescaler_varlen`:

- on CUDA in bf16/fp16 it is one call of PyTorch's bundled flash-attention varlen kernel
  (`aten._flash_attention_forward`, what `torch.nn.attention.varlen` wraps), which handles
  grouped KV heads itself, so no pad token and no T x T mask ever exists;
- elsewhere (CPU, fp32) it runs SDPA's causal kernel once per input.

Calls without boundaries (an ordinary padded or unpadded batch) behave exactly like "sdpa":
the mask function builds SDPA's mask whenever a padding mask is given.

The score is read at each input's last token, so the last decoder layer is needed there only:
`packed_last_hidden` runs every layer but the last over the whole row, then the last one with its
queries, output projection and MLP at the last tokens (keys and values still from every token).
Same scores, 1/num_layers less work (Llama, Qwen2 and Qwen3 backbones; others run whole).
"""

from __future__ import annotations

import bisect
import sys
from typing import Sequence

from codescaler.records import UserError

NAME = "codescaler_varlen"
# Backbones whose forward is embed -> rotary -> Llama-style decoder layers -> norm, as packed_last_hidden
# repeats it (the CodeScaler RMs are Qwen3, SmolLM2 and Skywork-Reward-V2 Llama or Qwen3).
TRIMMABLE = ("LlamaModel", "Qwen2Model", "Qwen3Model")


def plan_packed(lengths: Sequence[int], token_budget: int, max_batch_size: int,
                counts: Sequence[int] | None = None) -> list[list[int]]:
    """Best-fit decreasing: indices grouped so each group's total length is within the budget.

    Longest first, each into the open batch with the least room that still fits it (bisect over the
    sorted rooms, so 100k inputs plan in well under a second); a batch at max_batch_size closes. An item
    may stand for `counts[i]` inputs (a shared-prefix group); one that would overfill its batch opens another."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    sizes: list[int] = []  # inputs per batch
    rooms: list[tuple[int, int]] = []  # (tokens left, batch index) of the open batches, sorted
    for i in order:
        count = 1 if counts is None else counts[i]
        j = bisect.bisect_left(rooms, (lengths[i], -1))
        if j < len(rooms) and sizes[rooms[j][1]] + count <= max_batch_size:
            left, b = rooms.pop(j)
        else:
            left, b = token_budget, len(batches)
            batches.append([])
            sizes.append(0)
        batches[b].append(i)
        sizes[b] += count
        if sizes[b] < max_batch_size:
            bisect.insort(rooms, (left - lengths[i], b))
    return batches


def packed_inputs(seqs: Sequence[Sequence[int]]) -> dict:
    """One row of tokens, positions restarting at 0 per input, and the inputs' boundaries."""
    import torch

    lengths = torch.tensor([len(s) for s in seqs])
    cu_seqlens = torch.zeros(len(seqs) + 1, dtype=torch.int32)
    cu_seqlens[1:] = lengths.cumsum(0)
    return {"input_ids": torch.tensor([t for s in seqs for t in s]).unsqueeze(0),
            "position_ids": torch.cat([torch.arange(n) for n in lengths.tolist()]).unsqueeze(0),
            "codescaler_cu_seqlens": cu_seqlens}


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention function: query [1, Hq, T, D], key/value [1, Hkv, T, D] -> ([1, T, Hq, D], None)."""
    import torch
    import torch.nn.functional as F

    cu = kwargs.get("codescaler_cu_seqlens")
    if cu is None:  # an ordinary batch: exactly what "sdpa" does
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("sliding_window") is not None:
        raise ValueError("packed attention has no sliding window; score this model with packing off")
    if query.shape[0] != 1:
        raise ValueError(f"a packed forward takes one row; got a batch of {query.shape[0]}")
    kv = kwargs.get("codescaler_kv_index")  # shared prefixes (codescaler/sharing.py): each segment's keys
    cu_kv = cu if kv is None else kwargs["codescaler_cu_kv"]
    if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and query.shape[-1] % 8 == 0 \
            and query.shape[-1] <= 256:
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, H, D]
        if kv is not None:
            k, v = k[kv], v[kv]
        # upper bounds on a segment's queries and keys (the scorer fixes them when compiled)
        max_len = kwargs["codescaler_max_len"]
        max_kv = max_len if kv is None else kwargs["codescaler_max_kv"]
        # causal with fewer queries than keys is aligned at the end: a tail's queries see its whole prefix
        out = torch.ops.aten._flash_attention_forward(q, k, v, cu, cu_kv, max_len, max_kv, 0.0, True, False,
                                                      scale=scaling)[0]
        return out.unsqueeze(0), None
    # Slices stay 4-D [1, H, L, D]: SDPA takes its fused (flash) CPU kernel only for 4-D inputs, and
    # 3-D ones go to the unfused math path, 2x slower (7.1 vs 3.3 ms for 325 tokens in bf16, 2 cores).
    bounds, kv_bounds = cu.tolist(), cu_kv.tolist()
    out = query.new_empty((1, query.shape[2], query.shape[1], query.shape[3]))  # [1, T, Hq, D], contiguous
    for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        n_kv = kv_bounds[s + 1] - kv_bounds[s]
        if n_kv == hi - lo:  # a segment that is its own keys (always so without shared prefixes)
            k, v, mask = key[:, :, lo:hi], value[:, :, lo:hi], None
        else:  # a tail after a shared prefix: gathered keys, causal aligned at the end
            rows = kv[kv_bounds[s]:kv_bounds[s + 1]]
            k, v = key[:, :, rows], value[:, :, rows]
            mask = torch.ones(hi - lo, n_kv, dtype=torch.bool, device=query.device).tril(n_kv - (hi - lo))
        out[:, lo:hi] = F.scaled_dot_product_attention(
            query[:, :, lo:hi], k, v, attn_mask=mask, is_causal=mask is None, scale=scaling,
            enable_gqa=query.shape[1] != key.shape[1]).transpose(1, 2)
    return out, None


def can_trim_last_layer(backbone) -> bool:
    """True when packed_last_hidden can stand in for `backbone`'s forward (a known Llama-style backbone)."""
    import torch

    layers = getattr(backbone, "layers", None)
    return (type(backbone).__name__ in TRIMMABLE and isinstance(layers, torch.nn.ModuleList) and len(layers) > 0
            and len(layers) == getattr(backbone.config, "num_hidden_layers", -1)
            and all(hasattr(backbone, a) for a in ("embed_tokens", "rotary_emb", "norm")))


def packed_last_hidden(backbone, input_ids, position_ids, layout: dict, last):
    """The final-normed hidden state at each input's last token (row positions `last`), [N, hidden], of one
    packed row; `layout` holds the packed attention's codescaler_* arguments (segment bounds, and with shared
    prefixes each segment's keys: codescaler/sharing.py).

    Every layer but the last runs as the backbone's forward runs it (compiled in place or not); the last
    layer runs in `last_token_layer`."""
    hidden = backbone.embed_tokens(input_ids)
    position_embeddings = backbone.rotary_emb(hidden, position_ids)
    for layer in backbone.layers[:-1]:
        hidden = layer(hidden, attention_mask=None, position_ids=position_ids,
                       position_embeddings=position_embeddings, **layout)
        if isinstance(hidden, tuple):  # transformers < 5 returned (hidden, ...)
            hidden = hidden[0]
    kv = layout.get("codescaler_kv_index")
    if kv is None:
        keys = (None, layout["codescaler_cu_seqlens"], layout["codescaler_max_len"])
    else:  # the inputs' segments come first, so their key bounds are the first N + 1
        keys = (kv, layout["codescaler_cu_kv"][:len(last) + 1], layout["codescaler_max_kv"])
    return backbone.norm(last_token_layer(backbone.layers[-1], hidden[0], position_embeddings, last, *keys))


def last_token_layer(layer, hidden, position_embeddings, last, kv_index, cu_kv, max_kv: int):
    """A Llama-style decoder layer's output at the rows `last` of hidden [T, hidden] only: queries,
    attention, output projection and MLP at the N last tokens; keys and values from all T tokens, input i's
    being rows kv_index[cu_kv[i]:cu_kv[i + 1]] (rows cu_kv[i]:cu_kv[i + 1] when kv_index is None)."""
    attn = layer.self_attn
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb  # the model's own RoPE
    x = layer.input_layernorm(hidden)  # [T, hidden]
    d = attn.head_dim
    q = attn.q_proj(x[last]).view(len(last), -1, d)  # [N, Hq, D]
    k = attn.k_proj(x).view(len(x), -1, d)  # [T, Hkv, D]
    v = attn.v_proj(x).view(len(x), -1, d)
    if hasattr(attn, "q_norm"):  # Qwen3 normalises each head's query and key
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = position_embeddings  # [1, T, D]; [T, H, D] heads broadcast against [T, 1, D]
    q = rotary(q, q, cos[0, last], sin[0, last])[0]
    k = rotary(k, k, cos[0], sin[0])[0]
    if kv_index is not None:  # the shared prefixes' rows are gathered in front of each tail (and the
        k, v = k[kv_index], v[kv_index]  # prefixes' own segments, after the inputs', go unread)
    out = last_query_attention(q, k, v, cu_kv, max_kv, attn.scaling)
    h = hidden[last] + attn.o_proj(out.reshape(len(last), -1))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def last_query_attention(q, k, v, cu_seqlens, max_len: int, scaling: float):
    """Attention of one query per input (its last token, q [N, Hq, D]) over all of that input's keys
    (k, v [T, Hkv, D], inputs bounded by cu_seqlens): no causal mask, the last token sees its whole input."""
    import torch
    import torch.nn.functional as F

    if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256:
        cu_q = torch.arange(len(q) + 1, dtype=torch.int32, device=q.device)
        return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_seqlens, 1, max_len, 0.0, False, False,
                                                       scale=scaling)[0]
    bounds = cu_seqlens.tolist()
    out = torch.empty_like(q)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        out[i] = F.scaled_dot_product_attention(
            q[i, None, :, None], k[None, lo:hi].transpose(1, 2), v[None, lo:hi].transpose(1, 2), scale=scaling,
            enable_gqa=q.shape[1] != k.shape[1])[0, :, 0]
    return out


def full_attention_only(config) -> bool:
    """True when every layer attends to the whole prefix (no sliding window), as packing assumes."""
    types = getattr(config, "layer_types", None)
    if types is not None:
        return all(t == "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is None


def varlen_mask(*args, **kwargs):
    """transformers mask function: none for unpadded rows (causal is implied), SDPA's mask for padded ones."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def use_varlen_attention(model) -> None:
    """Switch `model` (loaded with "sdpa") to the packed-aware attention; ordinary calls are unchanged."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError as e:
        raise UserError(f"packing needs transformers' AttentionInterface ({e}); turn packing off") from None
    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, varlen_mask)
    if not full_attention_only(model.config):
        raise UserError("packing assumes full attention in every layer, and this model has a sliding window; "
                        "turn packing off")
    current = getattr(model.config, "_attn_implementation", None)
    if current not in ("sdpa", NAME):
        raise UserError(f"packing replaces SDPA attention, but this model uses {current!r}; "
                        f"load it with attn_implementation='sdpa' or turn packing off")
    try:
        model.set_attn_implementation(NAME)
    except (AttributeError, ValueError) as e:
        raise UserError(f"packing needs transformers' AttentionInterface ({e}); turn packing off") from None
    if model.config._attn_implementation != NAME:
        raise UserError(f"{type(model).__name__} does not take a custom attention function; turn packing off")
