"""The one scoring path: (problem prompt, response) -> Scored, batched.

The RM input is SPEC.md's: a two-turn chat [user: prompt, assistant: extracted
code] rendered with the RM tokenizer's chat template, a duplicated leading BOS
stripped, and the score is the logit at the last token. Over `max_length` the
prompt is shortened (never the code's end) and `truncated` is set.

`RewardScorer` backs `codescaler score`, the HTTP server, best-of-N, the TRL
reward callable (`scorer(prompts, completions, **kw)`) and the verl plug-in.
Speed comes from batches filled to a token budget (packed into one row without pad
tokens where the model allows it, else length-sorted and padded), bf16/SDPA where the
device supports them, the score head (and, packed, the last decoder layer) applied at each
last token only, inputs that begin with the same tokens computing them once (packed; a problem's
N responses), each batch's scores read back only once the next batch is queued, and,
opt-in, torch.compile of the decoder layers.
"""

from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from codescaler.extract import MODES as EXTRACTION_MODES
from codescaler.extract import extract_code
from codescaler.packing import NAME as PACKED_ATTENTION
from codescaler.packing import can_trim_last_layer, full_attention_only, packed_last_hidden, use_varlen_attention
from codescaler.payloads import rm_prompts, text_of
from codescaler.records import Scored, UserError
from codescaler.sharing import plan_groups, prefix_groups, shared_inputs
from codescaler.shaping import MODES as SHAPING_MODES
from codescaler.shaping import shape

DTYPES = ("auto", "bfloat16", "float16", "float32")
PACKING_MODES = ("auto", "on", "off")
OVERLAP_MODES = ("auto", "on", "off")
SHARE_MODES = ("auto", "on", "off")
COMPILE_SCOPES = ("layers", "model")


def default_model_dir() -> str:
    """Where `make demo` keeps the trained mini RM (the default `--model`)."""
    root = os.environ.get("CODESCALER_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "codescaler")
    return os.path.join(root, "default-rm")


def resolve_model(model: str | None) -> str:
    """`model` itself, or the embedded default RM; a one-line UserError when neither exists."""
    if model:
        return model
    path = default_model_dir()
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    raise UserError(f"no --model given and no default RM at {path}: build it with `make demo`, "
                    "or pass --model LARK-Lab/CodeScaler-8B (or any seq-cls checkpoint or directory)")


@dataclass
class ScorerConfig:
    """How to load and run the reward model."""

    model: str | None = field(default=None, metadata={
        "help": "hub id (e.g. LARK-Lab/CodeScaler-8B), local save_pretrained directory, or a .gguf file; "
                "default: the RM that `make demo` trains"})
    dtype: str = field(default="auto", metadata={
        "help": "auto = bfloat16 on CUDA with bf16 (else float16) and on CPUs with native bf16 (else float32); "
                "or bfloat16/float16/float32"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available, else cpu; or e.g. cuda:1"})
    max_length: int = field(default=4096, metadata={
        "help": "tokens per RM input; longer inputs lose prompt text (never the code's end) and are flagged truncated"})
    token_budget: int = field(default=0, metadata={
        "help": "tokens per forward batch (packed, or padded to the longest); "
                "0 = auto (32768 on CUDA, 4096 on CPU: see bench/)"})
    max_batch_size: int = field(default=256, metadata={"help": "cap on sequences per forward batch"})
    extraction: str = field(default="syntax", metadata={"help": "syntax (SPEC rule) or reference (paper's regex)"})
    shaping: str = field(default="softplus", metadata={"help": "softplus (validity-preserving) or none (raw score)"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa, eager or flash_attention_2"})
    pad_mask: bool = field(default=False, metadata={
        "help": "padded batches with the padding mask passed to the model (not needed for causal RMs with right "
                "padding; slower; turns auto packing off)"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile (dynamic shapes): 1.4x on 8B and 1.65-1.7x on 1.7B, packed, on an H100, after a "
                "first pass that compiles (19-22 s / 6-10 s with the default --compile-scope; bench/)"})
    compile_scope: str = field(default="layers", metadata={
        "help": "what --compile compiles: layers = one decoder layer, whose code every layer reuses (regional "
                "compilation: the first pass compiles one layer, not all of them); model = the whole backbone "
                "as one graph (130 s on 8B, no faster)"})
    packing: str = field(default="auto", metadata={
        "help": "auto, on or off: pack each batch into one row with no pad tokens, attention kept inside each "
                "input (flash-attention varlen on CUDA, per-input SDPA elsewhere: codescaler/packing.py). "
                "auto = on where the model allows it: SDPA attention, no sliding window (bench/)"})
    encode_overlap: str = field(default="auto", metadata={
        "help": "auto, on or off: tokenise the next chunk of inputs in a thread while the current one is scored. "
                "auto = on with CUDA; on a CPU tokenising and the forward share the same cores, so off"})
    trim_last_layer: bool = field(default=True, metadata={
        "help": "packed batches of Llama/Qwen2/Qwen3 RMs: run the last decoder layer at each input's last token "
                "only (keys and values still from every token), where the score is read: the same scores with "
                "1/num_layers less work (codescaler/packing.py); --no-trim-last-layer runs it whole"})
    share_prefix: str = field(default="auto", metadata={
        "help": "auto, on or off: in packed batches, inputs that begin with the same tokens (a problem's responses "
                "in GRPO or best-of-N) run those tokens once, each input's own tail attending to them: the same "
                "scores with (N-1) x prefix fewer tokens (codescaler/sharing.py). auto = on on CPUs; off with CUDA "
                "until a GPU run has checked its flash-attention path (bench/score_gpu.py --compile-ways groups)"})

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; use one of {DTYPES}")
        if self.extraction not in EXTRACTION_MODES:
            raise ValueError(f"extraction={self.extraction!r}; use one of {EXTRACTION_MODES}")
        if self.shaping not in SHAPING_MODES:
            raise ValueError(f"shaping={self.shaping!r}; use one of {SHAPING_MODES}")
        if self.packing not in PACKING_MODES:
            raise ValueError(f"packing={self.packing!r}; use one of {PACKING_MODES}")
        if self.compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"compile_scope={self.compile_scope!r}; use one of {COMPILE_SCOPES}")
        if self.encode_overlap not in OVERLAP_MODES:
            raise ValueError(f"encode_overlap={self.encode_overlap!r}; use one of {OVERLAP_MODES}")
        if self.share_prefix not in SHARE_MODES:
            raise ValueError(f"share_prefix={self.share_prefix!r}; use one of {SHARE_MODES}")
        if self.share_prefix == "on" and self.packing == "off":
            raise ValueError("share_prefix='on' needs packed batches; use packing='auto' or 'on', "
                             "or share_prefix='off'")
        if self.pad_mask and self.packing == "on":
            raise ValueError("pad_mask is for padded batches and packing='on' has none; use packing='off' or 'auto'")
        if self.max_length < 32:
            raise ValueError(f"max_length={self.max_length} leaves no room for a chat; use at least 32 (default 4096)")
        if self.token_budget and self.token_budget < self.max_length:
            raise ValueError(f"token_budget={self.token_budget} is below max_length={self.max_length}: one input "
                             f"would not fit; use token_budget >= {self.max_length} or 0 for auto")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size={self.max_batch_size}; use 1 or more")


# ---------------------------------------------------------------- RM input


def rm_messages(prompt: str, code: str) -> list[dict]:
    """The two-turn chat the RM scores. Shared by scoring and RM training."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": code}]


def _encode(tokenizer, prompt: str, code: str) -> list[int]:
    text = tokenizer.apply_chat_template(rm_messages(prompt, code), tokenize=False)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]  # template BOS + tokenizer BOS (Skywork-Reward-V2 note)
    return ids


def build_rm_input(tokenizer, prompt: str, code: str, max_length: int) -> tuple[list[int], bool]:
    """Token ids of the RM input and whether it was shortened to fit `max_length`.

    The prompt's tail goes first; only if the code alone does not fit is the
    code's head dropped too, so the code's end (and the template's closing
    tokens, where the score is read) always survive.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError("the RM tokenizer has no chat template; the RM input is a chat (SPEC.md)")
    ids = _encode(tokenizer, prompt, code)
    if len(ids) <= max_length:
        return ids, False
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    keep = len(p_ids)
    while keep > 0:  # token counts shift a little on re-rendering, so shrink until it fits
        keep = max(0, keep - (len(ids) - max_length) - 1)
        # a cut inside a multi-token character decodes to U+FFFD: drop that half character
        ids = _encode(tokenizer, tokenizer.decode(p_ids[:keep]).rstrip("\ufffd"), code)
        if len(ids) <= max_length:
            return ids, True
    c_ids = tokenizer(code, add_special_tokens=False)["input_ids"]
    start = 0
    while start < len(c_ids) - 1:  # the code's last token always stays
        start = min(len(c_ids) - 1, start + (len(ids) - max_length) + 1)
        ids = _encode(tokenizer, "", tokenizer.decode(c_ids[start:]).lstrip("\ufffd"))
        if len(ids) <= max_length:
            return ids, True
    raise UserError(f"max_length={max_length} is too small to hold the RM chat template and the code's end")


def plan_batches(lengths: Sequence[int], token_budget: int, max_batch_size: int) -> list[list[int]]:
    """Indices grouped longest first, each group's padded size (n x longest) within the budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < max_batch_size and \
                (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def encode_spans(n: int) -> list[tuple[int, int]]:
    """Chunks of n inputs for overlapped tokenising: 8, 16, 32, 64, 128, then 256 each (the GPU starts after
    a small first chunk, and later ones are big enough to fill several token-budget batches; a first chunk of
    32 left 20% of the tokenising exposed in bench/encode_overlap.py, of 8, 4-6%)."""
    spans, lo, size = [], 0, 8
    while lo < n:
        spans.append((lo, min(n, lo + size)))
        lo, size = lo + size, min(2 * size, 256)
    return spans


def prefetched(fn, spans):
    """fn(*span) for each span, in order, each computed in a worker thread while the caller uses the one before."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fn, *spans[0])
        for span in spans[1:]:
            ready = pending.result()
            pending = pool.submit(fn, *span)
            yield ready
        yield pending.result()


# ---------------------------------------------------------------- loading


def pick_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        picked = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"--device {device!r}: {str(e).splitlines()[0]}; use auto, cpu, cuda or cuda:N") from None
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this torch sees no CUDA device; use --device cpu (or auto)")
    if picked.type == "cuda" and picked.index is not None and picked.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices; use cuda:0..")
    return picked


def pick_dtype(dtype: str, device):
    """`auto`: bf16 on CUDA with bf16 (else fp16), bf16 on CPUs with native bf16 (else fp32)."""
    import torch

    if dtype == "auto":
        if str(device).startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "bfloat16" if _cpu_has_native_bf16() else "float32"
    return getattr(torch, dtype)


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_reward_model(model: str, dtype=None, device=None, attn_implementation: str = "sdpa"):
    """(tokenizer, model) for a hub id, a local directory or a .gguf file, ready for inference."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs: dict = {}
    src = model
    if model.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(model)):
        raise UserError(f"--model {model}: no such file or directory (a hub id has the form owner/name)")
    if model.endswith(".gguf"):
        if not os.path.isfile(model):
            raise UserError(f"--model {model}: no such GGUF file")
        src, kwargs["gguf_file"] = os.path.dirname(os.path.abspath(model)), os.path.basename(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
        # A GGUF LM has no score head: transformers initialises a fresh one; seed it so runs agree.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            rm = AutoModelForSequenceClassification.from_pretrained(
                src, num_labels=1, dtype=dtype, attn_implementation=attn_implementation, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load reward model {model!r}: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.eval().requires_grad_(False)
    if device is not None:
        rm.to(device)
    return tokenizer, rm


# ---------------------------------------------------------------- scoring


def compile_backbone(backbone, scope: str):
    """torch.compile with dynamic shapes (one graph for all batch shapes; padded widths are rounded up to 64).

    scope "layers" compiles each decoder layer in place (regional compilation): the layers share one code
    object and their weights are graph inputs, so the first layer's graph serves all of them and compiling
    costs one layer, not the whole stack. The embedding and final norm stay eager. A backbone without a
    `layers` list is compiled whole."""
    import torch

    layers = getattr(backbone, "layers", None)
    if scope == "layers" and isinstance(layers, torch.nn.ModuleList) and len(layers):
        for layer in layers:
            layer.compile(dynamic=True)
        return backbone
    return torch.compile(backbone, dynamic=True)


def use_packing(mode: str, model, backbone, head) -> bool:
    """Resolve ScorerConfig.packing: "auto" packs when the model allows it (SDPA, full attention, backbone + head)."""
    fits = backbone is not None and head is not None
    if mode == "on" and not fits:
        raise UserError("packing needs a model with the usual backbone + `score` head split; use --packing off")
    config = getattr(model, "config", None)
    sdpa = getattr(config, "_attn_implementation", None) in ("sdpa", PACKED_ATTENTION)
    return mode == "on" or (mode == "auto" and fits and sdpa and full_attention_only(config))


class RewardScorer:
    """Loads an RM once and scores batches of (prompt, response) pairs.

    Also a TRL reward function: `scorer(prompts, completions, **kw)` returns one
    shaped reward per completion (plain or conversational).
    """

    __name__ = "codescaler_rm"  # TRL logs reward functions by __name__
    pick_dtype = staticmethod(pick_dtype)

    def __init__(self, config: ScorerConfig | None = None, tokenizer=None, model=None):
        self.config = config or ScorerConfig()
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        if model is None:
            tokenizer, model = load_reward_model(resolve_model(self.config.model), self.dtype, self.device,
                                                 self.config.attn_implementation)
        self.tokenizer, self.model = tokenizer, model
        self.device = next(model.parameters()).device
        self.token_budget = self.config.token_budget or (32768 if self.device.type == "cuda" else 4096)
        self.token_budget = max(self.token_budget, self.config.max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Run the backbone, then the score head at each sequence's last token only.
        prefix = getattr(model, "base_model_prefix", "model")
        self._backbone = getattr(model, prefix, None)
        self._head = getattr(model, "score", None)
        mode = "off" if self.config.pad_mask and self.config.packing == "auto" else self.config.packing
        self.packing = use_packing(mode, model, self._backbone, self._head)
        if self.packing:
            try:
                use_varlen_attention(model)
            except UserError as e:
                if self.config.packing == "on":
                    raise
                print(f"warning: scoring with padded batches: {e}", file=sys.stderr)
                self.packing = False
        if self.config.compile and self._backbone is not None:
            self._backbone = compile_backbone(self._backbone, self.config.compile_scope)
        # After compile: a backbone compiled whole is no longer one whose forward packed_last_hidden repeats.
        self.trim = self.packing and self.config.trim_last_layer and can_trim_last_layer(self._backbone)
        # Shared prefixes on CUDA rest on flash-attention's causal mask being aligned at the end when a segment
        # has fewer queries than keys (FA2's mask since 2.1, as PyTorch's causal_lower_right relies on): not yet
        # run on a GPU here, so auto leaves it off there.
        self.share = self.packing and (self.config.share_prefix == "on" or (
            self.config.share_prefix == "auto" and self.device.type != "cuda"))
        self.overlap = self.config.encode_overlap == "on" or (
            self.config.encode_overlap == "auto" and self.device.type == "cuda")

    def encode(self, prompts: Sequence[str], codes: Sequence[str]) -> list[tuple[list[int], bool]]:
        return [build_rm_input(self.tokenizer, p, c, self.config.max_length) for p, c in zip(prompts, codes)]

    def score_code(self, prompts: Sequence[str], codes: Sequence[str],
                   progress: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
        """Raw RM logits (and truncated flags) for extracted code, in input order.

        With encode overlap (on CUDA by default) the inputs are tokenised in chunks (encode_spans),
        each chunk in a worker thread while the GPU scores the one before (the main thread mostly waits on
        CUDA events, which release the GIL); each chunk is batched on its own. Otherwise all are tokenised
        first and batched together."""
        if len(prompts) != len(codes):
            raise ValueError(f"{len(prompts)} prompts but {len(codes)} codes")
        n = len(prompts)
        truncated = [False] * n

        def encode(lo: int, hi: int) -> tuple[range, list[list[int]]]:
            encoded = self.encode(prompts[lo:hi], codes[lo:hi])
            truncated[lo:hi] = [t for _, t in encoded]  # chunks are disjoint slices
            return range(lo, hi), [ids for ids, _ in encoded]

        # A call of under ~2 token budgets of text (at ~3 characters a token) fills a batch or two anyway:
        # chunks would only split its batches, so it is tokenised at once.
        if self.overlap and sum(len(p) + len(c) for p, c in zip(prompts, codes)) > 6 * self.token_budget:
            chunks = prefetched(encode, encode_spans(n))
        else:
            chunks = iter([encode(0, n)])
        return list(zip(self._score_chunks(chunks, n, progress), truncated))

    def score_ids(self, seqs: Sequence[list[int]], progress: Callable[[int], None] | None = None) -> list[float]:
        """Raw RM logits for already-built inputs, in input order."""
        return self._score_chunks(iter([(range(len(seqs)), seqs)]), len(seqs), progress)

    def _score_chunks(self, chunks, n: int, progress) -> list[float]:
        """Scores of n inputs arriving as (input indices, token ids) chunks, each batched on its own.

        A batch's logits are read only once the next batch is queued, across chunks too: on a GPU the host
        builds and sends batch i+1 (or waits for the next chunk's tokens) while batch i runs."""
        scores: list[float] = [0.0] * n
        queued = None
        for index, seqs in chunks:
            for batch, inputs in self._batches(seqs):
                current = ([index[i] for i in batch], *self._forward(inputs))
                if queued is not None:
                    self._collect(*queued, scores, progress)
                queued = current
        if queued is not None:
            self._collect(*queued, scores, progress)
        return scores

    def _batches(self, seqs: list[list[int]]):
        """(indices into seqs, host tensors) of each forward batch: packed rows (with shared prefixes
        when share_prefix resolves on) or length-sorted padded batches."""
        lengths = [len(s) for s in seqs]
        if not self.packing:
            for batch in plan_batches(lengths, self.token_budget, self.config.max_batch_size):
                yield batch, self._padded([seqs[i] for i in batch])
            return
        groups = prefix_groups(seqs) if self.share else [(0, [i]) for i in range(len(seqs))]
        for batch in plan_groups(groups, lengths, self.token_budget, self.config.max_batch_size):
            order = [i for _, members in batch for i in members]
            # Padding-free: one row, positions restarting per input (or continuing after a shared prefix),
            # attention kept inside each input (flash-attention varlen on CUDA; see codescaler/packing.py).
            inputs = shared_inputs(seqs, batch)
            inputs["last"] = inputs["codescaler_cu_seqlens"][1:len(order) + 1].long() - 1  # each input's last token
            yield order, inputs

    def _padded(self, seqs: list[list[int]]) -> dict:
        """A right-padded batch (width rounded up to 64 when compiled) and where each input's last token is."""
        import torch

        lengths = torch.tensor([len(s) for s in seqs])
        width = int(lengths.max())
        if self.config.compile:
            width = -(-width // 64) * 64
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, s in enumerate(seqs):
            input_ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = 1
        inputs = {"input_ids": input_ids, "last": lengths - 1, "rows": torch.arange(len(seqs))}
        if self._backbone is None or self._head is None or self.config.pad_mask:
            inputs["attention_mask"] = mask
        # Else no mask at all: with right padding and causal attention no real token ever sees a pad,
        # so the hidden state at each last real token is exact, and SDPA can take its fused causal
        # (flash) kernel instead of a masked one.
        return inputs

    @staticmethod
    def _collect(batch: list[int], logits, done, scores: list[float], progress) -> None:
        if done is not None:
            done.synchronize()  # this batch's logits have reached the host; later batches still run
        for i, s in zip(batch, logits.tolist()):
            scores[i] = s
        if progress is not None:
            progress(len(batch))

    def _forward(self, inputs: dict):
        """One batch (from `_batches`), queued.

        Returns (float32 logits in a host tensor, CUDA event): on a GPU the tensor is filled once the
        event has passed; on the CPU it is ready and the event is None."""
        import torch

        cuda = self.device.type == "cuda"

        # Every host-to-device copy is from pinned memory and asynchronous, the last-token indices too: a
        # pageable copy waits for all the work queued before it (the previous batch's forward).
        def to_device(t):
            return (t.pin_memory() if cuda else t).to(self.device, non_blocking=cuda)

        moved = {k: to_device(v) for k, v in inputs.items()}
        rows, last = moved.pop("rows", None), moved.pop("last")  # a packed batch is one row: no row index
        if self.packing:
            # Upper bounds on a segment's and an input's length, which bound the kernel's grid; compiled graphs
            # get fixed ones (no recompiles).
            lengths = inputs["codescaler_cu_seqlens"].diff()
            max_len = self.config.max_length if self.config.compile else int(lengths.max())
            moved["codescaler_max_len"] = max_len
            if "codescaler_cu_kv" in inputs:
                moved["codescaler_max_kv"] = self.config.max_length if self.config.compile else \
                    int(inputs["codescaler_cu_kv"].diff().max())
        with torch.inference_mode():
            if self.trim:
                layout = {k: v for k, v in moved.items() if k.startswith("codescaler_")}
                logits = self._head(packed_last_hidden(self._backbone, moved["input_ids"], moved["position_ids"],
                                                       layout, last))
            elif self._backbone is not None and self._head is not None:
                hidden = self._backbone(**moved, use_cache=False).last_hidden_state
                logits = self._head(hidden[0, last] if rows is None else hidden[rows, last])
            else:  # an architecture without the usual backbone/score split
                logits = self.model(**moved).logits
            logits = logits[:, 0].float()
            if not cuda:
                return logits, None
            out = torch.empty(logits.shape, dtype=torch.float32, pin_memory=True)
            out.copy_(logits, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))  # the model's device, maybe not the current one
        return out, done

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              progress: Callable[[int], None] | None = None) -> list[Scored]:
        """Extract, score and shape: the full SPEC pipeline for raw LLM responses."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        codes = [extract_code(r, self.config.extraction) for r in responses]
        valid = [i for i, c in enumerate(codes) if c is not None]
        raw = self.score_code([prompts[i] for i in valid], [codes[i] for i in valid], progress)
        out = [Scored(code=None, rm_score=None, reward=0.0, truncated=False) for _ in codes]
        for i, (s, truncated) in zip(valid, raw):
            out[i] = Scored(code=codes[i], rm_score=s, reward=shape(s, True, self.config.shaping), truncated=truncated)
        check_finite(out)
        return out

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, **kwargs) -> list[float | None]:
        """TRL reward-function signature: the RM sees the `problem_prompt` column when the dataset has one, else
        the prompt's last user turn."""
        return [s.reward for s in self.score(rm_prompts(prompts, kwargs),
                                             [text_of(c, "assistant") for c in completions])]


def check_finite(scored: Sequence[Scored]) -> None:
    """Refuse NaN/inf scores (an overflowing fp16 RM, a broken checkpoint): they are not JSON, and a NaN reward
    would break "valid code outranks no code"."""
    bad = next((s.rm_score for s in scored if s.rm_score is not None and not math.isfinite(s.rm_score)), None)
    if bad is not None:
        raise UserError(f"the reward model produced a non-finite score ({bad}); check the checkpoint and --dtype "
                        "(float16 overflows where bfloat16 or float32 do not)")


# ---------------------------------------------------------------- CLI


def add_scorer_args(p) -> None:
    """The ScorerConfig options, shared by every verb that loads an RM (score, select, serve, ...)."""
    from codescaler.cli import add_config_args

    add_config_args(p, ScorerConfig, choices={"extraction": EXTRACTION_MODES, "shaping": SHAPING_MODES,
                                              "dtype": DTYPES, "packing": PACKING_MODES,
                                              "encode_overlap": OVERLAP_MODES, "share_prefix": SHARE_MODES,
                                              "compile_scope": COMPILE_SCOPES})


def scorer_config_from_args(args) -> ScorerConfig:
    from codescaler.cli import config_from_args

    return config_from_args(ScorerConfig, args)


def add_cli(p) -> None:
    p.add_argument("--problems", required=True, help="problems JSONL(.gz): the RM sees each problem's `prompt`")
    p.add_argument("--responses", required=True, help="responses JSONL(.gz): {problem_id, response, ...}")
    p.add_argument("--output", required=True, help="JSONL(.gz) to append to; a rerun skips records already there")
    p.add_argument("--chunk", type=int, default=512, help="records scored (length-sorted) and written per step")
    add_scorer_args(p)


def cli_main(args) -> int:
    from codescaler.cli import progress
    from codescaler.records import JsonlWriter, model_id, pending, read_problems, read_responses, refuse_other_run

    config = scorer_config_from_args(args)
    if args.chunk < 1:
        raise UserError(f"--chunk {args.chunk}: use 1 or more responses per step")
    problems = read_problems(args.problems)
    rows = [d for _, d in read_responses(args.responses, problems)]
    rm_model = model_id(resolve_model(config.model))
    refuse_other_run(args.output, "rm_model", rm_model, "--model")
    todo = pending(rows, args.output)
    with JsonlWriter(args.output) as out:
        if todo:
            t0 = time.perf_counter()
            scorer = RewardScorer(config)
            with progress(total=len(todo), desc="score", unit="resp") as bar:
                for start in range(0, len(todo), args.chunk):
                    chunk = todo[start:start + args.chunk]
                    scored = scorer.score([problems[d["problem_id"]].prompt for d in chunk],
                                          [d["response"] for d in chunk])
                    for d, s in zip(chunk, scored):
                        out.write({**d, **s.to_dict(), "rm_model": rm_model})
                    bar.update(len(chunk))
            seconds = time.perf_counter() - t0
            print(f"scored {len(todo)} responses in {seconds:.1f}s (model load included) -> {args.output}",
                  file=sys.stderr)
        out.finish()
    return 0
