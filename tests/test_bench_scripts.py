"""The benchmark scripts, run on the CPU (the GPU one with a tiny shape) so they cannot rot between device runs."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_module(name: str):
    """bench/<name>.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(script: str, *args: str, out, timeout: int = 600) -> dict:
    """Run bench/<script> with `args` and `--out out`; its JSON report (the script must exit 0)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_score_gpu_tiny_runs_every_eager_way_and_agrees_with_the_seed_way(tmp_path):
    out = tmp_path / "score_gpu.json"
    tiny = run_bench("score_gpu.py", "--tiny", "--no-compile", "--eager-fused", out=out)["shapes"]["tiny"]
    assert not tiny.get("errors")
    ways = tiny["ways"]
    for way in ("seed_fp32", "ours_fp32", "ours_packed_fp32", "seed_bf16", "ours_b16k", "ours_packed32k"):
        assert ways[way]["tokens_per_s"] > 0 and ways[way]["seqs"] > 0
    assert tiny["max_abs_diff_fp32_vs_seed"] <= 1e-4
    assert tiny["max_abs_diff_packed_fp32_vs_seed"] <= 1e-4
    assert tiny["best_ours"].startswith("ours_")
    assert tiny["fused_mlps"] == 2 and ways["ours_packed64k_fused"]["tokens_per_s"] > 0
    assert tiny["max_abs_diff_fused_vs_packed_bf16"] <= 1e-2  # the same function, in bf16
    assert ways["ours_packed64k_whole"]["tokens_per_s"] > 0  # the last layer over every token
    assert tiny["max_abs_diff_trimmed_vs_whole_bf16"] <= 1e-2


def test_score_gpu_tiny_compiled_ways_agree_with_the_regional_one(tmp_path):
    out = tmp_path / "score_gpu.json"
    tiny = run_bench("score_gpu.py", "--tiny", "--compile-only", "--compile-ways",
                     "layers,model,fused,fp8,whole,chunked", "--mlp-chunks", "4", "--repeats", "1", out=out)["shapes"]["tiny"]
    assert not tiny.get("errors")
    ref = "ours_compiled_layers_packed32k"
    for way in (ref, "ours_compiled_model_packed32k", "ours_compiled_layers_fused_packed32k",
                "ours_compiled_layers_fused_fp8_packed32k", "ours_compiled_layers_whole_packed32k",
                "ours_compiled_layers_chunked4_packed32k"):
        assert tiny["ways"][way]["tokens_per_s"] > 0
        assert tiny[f"{way}_max_abs_diff_between_passes"] == 0.0
        assert tiny[f"{way}_graphs"]["compiled"] >= 1
    assert tiny[f"ours_compiled_model_packed32k_max_abs_diff_vs_{ref}"] <= 1e-2  # bf16
    assert tiny[f"ours_compiled_layers_fused_packed32k_max_abs_diff_vs_{ref}"] <= 1e-2
    assert tiny[f"ours_compiled_layers_whole_packed32k_max_abs_diff_vs_{ref}"] <= 1e-2
    assert tiny["chunked_mlps"] == 2
    assert tiny[f"ours_compiled_layers_chunked4_packed32k_max_abs_diff_vs_{ref}"] <= 1e-2
    assert tiny["fp8_linears"] == 2 * 6  # q, k, v, o, gate_up, down in each of the 2 layers
    assert tiny[f"ours_compiled_layers_fused_fp8_packed32k_corr_vs_{ref}"] > 0.99


def test_chunked_mlp_is_the_whole_mlp():
    chunked_mlp = bench_module("mlp_variants").chunked_mlp
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=g, dtype=torch.float64)
    gate, up, down = torch.randn(24, 16, generator=g), torch.randn(24, 16, generator=g), torch.randn(16, 24, generator=g)
    gate, up, down = gate.double(), up.double(), down.double()
    whole = down @ (F.silu(gate @ x.unsqueeze(-1)) * (up @ x.unsqueeze(-1)))  # [2, 5, 16, 1], by the definition
    for chunks in (1, 2, 3, 4, 6, 12, 24):
        got = chunked_mlp(x, gate, up, down, F.silu, chunks)
        assert got.shape == (2, 5, 16)
        assert torch.allclose(got, whole.squeeze(-1), atol=1e-10), chunks
    with pytest.raises(ValueError, match="does not divide"):
        chunked_mlp(x, gate, up, down, F.silu, 5)


def test_gemm_shapes_mlp_ways_agree_with_fp32_on_the_cpu():
    rows = bench_module("gemm_shapes").mlp_ways(8, [2, 3, 4], reps=1, device="cpu", check_rows=8)
    assert list(rows) == ["chunks1", "chunks2", "chunks3", "chunks4"]
    whole = rows["chunks1"]["max_abs_err_vs_fp32"]
    assert 0 < whole < 0.05  # bf16 rounding of O(1) outputs, at the 8B shape
    for row in rows.values():
        assert row["max_abs_err_vs_fp32"] < 2 * whole + 0.01  # the same function, rounded in other places
        assert "ms" not in row  # nothing is timed off CUDA


def test_fp8_fidelity_runs_on_a_tiny_rm(tmp_path, tiny_rm_dir):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"problem_id": f"p{i}", "prompt": f"Write f{i}.", "chosen": f"def f{i}(x):\n    return x + {i}\n",
             "rejected": f"def f{i}(x):\n    return x - {i} * 2\n"} for i in range(6)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "fp8.json"
    report = run_bench("fp8_fidelity.py", "--model", tiny_rm_dir, "--pairs", str(pairs), out=out)
    assert report["pairs"] == 6 and set(report["ways"]) == {"fp32", "bf16", "fp8"}
    for way in ("bf16", "fp8"):
        assert report["ways"][way]["vs_fp32"]["corr"] > 0.9  # the same model, rounded
    assert 0 <= report["ways"]["fp8"]["pairwise_accuracy"] <= 1


def test_score_gpu_tiny_text_way_scores_from_text_both_ways(tmp_path, tiny_rm_dir):
    out = tmp_path / "score_gpu.json"
    tiny = run_bench("score_gpu.py", "--tiny", "--compile-only", "--compile-ways", "text", "--text-tokenizer",
                     tiny_rm_dir, "--repeats", "1", out=out)["shapes"]["tiny"]
    assert not tiny.get("errors")
    assert tiny["text_workload"]["pairs"] == 24 and tiny["text_workload"]["tokens"] > 24 * 20
    for way in ("text_scores_from_ids", "text_tokenise_first", "text_tokenise_overlapped"):
        assert tiny["ways"][way]["tokens"] == tiny["text_workload"]["tokens"]
    assert tiny["text_max_abs_diff_overlapped_vs_first"] <= 1e-2


def test_encode_overlap_bench_hides_tokenising_behind_a_stand_in_gpu(tmp_path, tiny_rm_dir):
    out = tmp_path / "overlap.json"
    report = run_bench("encode_overlap.py", "--n", "48", "--repeats", "1", "--rates", "100000", "--tokenizer",
                       tiny_rm_dir, out=out)
    row = report["rates"]["100000"]
    assert report["pairs"] == 48 and report["tokens"] > 48 * 200
    assert row["gpu_alone_s"] == round(report["tokens"] / 1e5, 3)
    assert row["tokenise_first_s"] >= row["gpu_alone_s"]  # the stand-in's clock is a floor for both ways
    assert row["overlapped_s"] >= row["gpu_alone_s"]


def test_score_gpu_tiny_groups_way_shares_prefixes_and_agrees(tmp_path):
    out = tmp_path / "score_gpu.json"
    tiny = run_bench("score_gpu.py", "--tiny", "--compile-only", "--compile-ways", "groups", "--repeats", "1",
                     out=out)["shapes"]["tiny"]
    assert not tiny.get("errors")
    assert tiny["ways"]["groups_shared"]["tokens_per_s"] > 0 and tiny["ways"]["groups_whole"]["tokens_per_s"] > 0
    assert 0.3 < tiny["groups_workload"]["forward_token_fraction"] < 0.9
    assert tiny["groups_max_abs_diff_shared_vs_whole"] <= 1e-2  # bf16


def test_score_groups_cpu_runs_on_smollm2(tmp_path):
    out = tmp_path / "groups.json"
    report = run_bench("score_groups_cpu.py", "--problems", "1", "--per-problem", "3", "--repeats", "1", out=out)
    for workload in report["workloads"].values():
        assert workload["pairs"] == 3 and workload["forward_tokens_shared"] < workload["rm_tokens"]
        assert workload["seconds_shared"] > 0 and workload["seconds_whole"] > 0
        assert workload["max_abs_diff_shared_vs_whole_fp32"] <= 1e-4


def test_score_cpu_runs_every_way_on_smollm2(tmp_path):
    out = tmp_path / "score_cpu.json"
    report = run_bench("score_cpu.py", "--n", "4", "--repeats", "1", out=out, timeout=900)
    assert report["pairs"] == 4 and report["forward_tokens_shared"] < report["tokens"]  # a shared start
    assert all(way["tokens_per_s"] > 0 for way in report["ways"].values()) and len(report["ways"]) == 7
    assert report["max_abs_diff_fp32_vs_seed"] <= 1e-4


def test_import_header_bench_runs_every_way(tmp_path):
    report = run_bench("import_header.py", "--cases", "2", "--candidates", "2", "--rounds", "2", out=tmp_path / "ih.json")
    assert set(report["ms_per_unit"]) == {"none", "lcb", "lcb_unpreloaded"}
    assert all(len(v) == 2 and min(v) > 0 for v in report["ms_per_unit"].values())


def test_flex_attention_kernel_agrees_with_the_fp32_loop_on_the_cpu():
    # the GPU microbench's FlexAttention way (a document-causal block mask over a packed batch, grouped KV heads)
    from codescaler.packing import varlen_attention

    lens = [5, 130, 77, 300]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lens), h, 64, generator=g, dtype=torch.bfloat16) for h in (8, 2, 2))
    fn, mask_ms = bench_module("score_gpu").flex_kernel(q, k, v, lens, 64 ** -0.5)
    ref = varlen_attention(None, *(t.float().transpose(0, 1).unsqueeze(0) for t in (q, k, v)), None,
                           scaling=64 ** -0.5, codescaler_cu_seqlens=cu)[0][0]  # [T, H, D]
    out = fn()
    assert out.shape == ref.shape and mask_ms > 0
    assert float((out.float() - ref).abs().max()) < 2e-2  # bf16 rounding (flash varlen's check: 8.6e-3)
    # and the comparison can tell: attention over the whole batch as one input is far from it
    one = varlen_attention(None, *(t.float().transpose(0, 1).unsqueeze(0) for t in (q, k, v)), None,
                           scaling=64 ** -0.5, codescaler_cu_seqlens=cu[[0, -1]])[0][0]
    assert float((out.float() - one).abs().max()) > 0.2
