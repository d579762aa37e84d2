"""kdforge bench: measured latency, throughput and memory; exact parameter and FLOP counts."""

import json

import torch

from kdforge.bench import benchmark, count_flops, peak_memory_bytes


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))


def test_flops_are_counted_exactly():
    assert count_flops(mlp(), torch.randn(1, 256)) == 2 * (256 * 1024 + 1024 * 10)
    assert count_flops(mlp(), torch.randn(4, 256)) == 4 * 2 * (256 * 1024 + 1024 * 10)


def test_peak_memory_sees_the_largest_live_activations():
    x = torch.randn(64, 256)
    peak = peak_memory_bytes(mlp().eval(), x)
    hidden = 64 * 1024 * 4  # the first layer's output and its ReLU are alive together
    assert 2 * hidden <= peak < 3 * hidden
    assert peak_memory_bytes(mlp().eval(), torch.randn(8, 256)) < peak


def test_benchmark_reports_every_batch_size():
    result = benchmark(mlp(), torch.randn(1, 256), [1, 16], warmup=1, iters=3)
    assert result["params"] == 256 * 1024 + 1024 + 1024 * 10 + 10
    assert [row["batch"] for row in result["batches"]] == [1, 16]
    for row in result["batches"]:
        assert 0 < row["latency_ms"] <= row["latency_p90_ms"]
        assert row["samples_per_s"] == row["batch"] / (row["latency_ms"] / 1e3)


def test_bench_cli_measures_a_model_by_name_and_writes_json(invoke, tmp_path):
    out = tmp_path / "bench.json"
    assert (
        invoke(
            "bench",
            "ssm",
            "--input-shape",
            "1,64",
            "-o",
            "model_dim=8",
            "-o",
            "num_layers=1",
            "--batch-sizes",
            "1,4",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--output",
            out,
        )
        == 0
    )
    written = json.loads(out.read_text())
    assert [row["batch"] for row in written["models"]["ssm"]["batches"]] == [1, 4] and written["models"]["ssm"][
        "flops_per_sample"
    ] > 0
    assert invoke("bench", "ssm") == 2  # a model name without --input-shape: a clear error


def test_compare_measures_the_architectures_of_recipes_without_training(invoke, tmp_path):
    out = tmp_path / "compare.json"
    assert invoke("compare", "--models", "digits_kd", "--warmup", 0, "--iters", 1, "--output", out) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["teacher (digits-kd)", "student (digits-kd)"]
    assert all(r["test"] is None and "retention_pct" not in r for r in rows) and rows[0]["params"] > rows[1]["params"]
