"""The simulated SAR azimuth lines: the physics, the focusing, the noise level, determinism."""

import json
import math

import numpy as np
import pytest
import torch

from kdforge.families.ssm.sar import SARGeometry, line_geometries, simulate_azimuth_lines
from stagecount import StageCounts


def test_geometry_follows_the_formulas():
    g = SARGeometry(wavelength=0.03, velocity=100.0, slant_range=2000.0, prf=200.0, antenna_length=1.2)
    assert g.fm_rate == pytest.approx(2 * 100.0**2 / (0.03 * 2000.0))
    assert g.aperture_pulses == 101  # λR0/(Dv) = 0.5 s at 200 Hz, made odd
    h = g.impulse_response()
    t = (np.arange(101) - 50) / 200.0
    np.testing.assert_allclose(
        np.unwrap(np.angle(h)) - np.unwrap(np.angle(h))[50], -math.pi * g.fm_rate * t**2, atol=1e-6
    )


def test_point_targets_focus_to_peaks_of_their_amplitude_at_their_positions():
    raw, focused, positions = simulate_azimuth_lines(6, 384, targets=(1, 3), snr_db=20.0, clutter_db=-40.0, seed=3)
    for line, raw_line, where in zip(focused, raw, positions):
        brightest = np.sort(np.argsort(-np.abs(line))[: len(where)])
        np.testing.assert_array_equal(brightest, where)
        assert ((np.abs(line[where]) > 0.45) & (np.abs(line[where]) < 1.55)).all()  # amplitudes are drawn in [0.5, 1.5]
        # unfocused, a point's energy is spread over the aperture: its raw peak is far lower than its focused one
        assert np.abs(raw_line).max() / np.sqrt(np.mean(np.abs(raw_line) ** 2)) < np.abs(line).max() / np.sqrt(
            np.mean(np.abs(line) ** 2)
        )


def test_noise_is_at_the_requested_snr_and_the_seed_fixes_everything():
    noisy, focused, positions = simulate_azimuth_lines(8, 256, snr_db=5.0, seed=7)
    clean, focused_again, positions_again = simulate_azimuth_lines(
        8, 256, snr_db=300.0, seed=7
    )  # same scene, no noise to speak of
    np.testing.assert_array_equal(focused, focused_again)
    assert all(np.array_equal(a, b) for a, b in zip(positions, positions_again))
    snr = 10 * np.log10(np.mean(np.abs(clean) ** 2) / np.mean(np.abs(noisy - clean) ** 2))
    assert snr == pytest.approx(5.0, abs=0.3)
    other, _, _ = simulate_azimuth_lines(8, 256, snr_db=5.0, seed=8)
    assert not np.allclose(other, noisy)
    assert noisy.dtype == np.complex64 and noisy.shape == (8, 256)


def test_a_range_spread_gives_each_line_its_own_slant_range_and_focusing_filter():
    kwargs = {"targets": (1, 3), "snr_db": 300.0, "clutter_db": -60.0, "seed": 5}
    plain = simulate_azimuth_lines(6, 384, **kwargs)
    assert all(
        np.array_equal(a, b) for a, b in zip(plain[:2], simulate_azimuth_lines(6, 384, **kwargs, range_spread=0.0))
    )
    raw, focused, positions = simulate_azimuth_lines(6, 384, **kwargs, range_spread=0.3)
    ranges = [g.slant_range for g in line_geometries(6, SARGeometry(), 0.3, seed=5)]
    assert len(set(ranges)) == 6 and all(1400.0 <= r <= 2600.0 for r in ranges)
    for line, raw_line, where, r in zip(focused, raw, positions, ranges):
        np.testing.assert_array_equal(np.sort(np.argsort(-np.abs(line))[: len(where)]), where)
        own, nominal = SARGeometry(slant_range=r).impulse_response(), SARGeometry().impulse_response()
        assert focus_peak(raw_line, own) > focus_peak(raw_line, nominal)  # its own filter focuses it better
    with pytest.raises(ValueError, match="range_spread must be in"):
        simulate_azimuth_lines(2, 384, range_spread=1.0)


def focus_peak(line: np.ndarray, h: np.ndarray) -> float:
    """The brightest sample of ``line`` focused by the matched filter of ``h``."""
    return float(np.abs(np.correlate(line, h, "same")).max() / np.sum(np.abs(h) ** 2))


def test_a_line_too_short_for_the_aperture_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot hold a 101-pulse aperture"):
        simulate_azimuth_lines(1, 64)


def test_sar_azimuth_is_a_complex_regression_dataset_split_by_the_seed():
    from kdforge.data import build_dataset

    data = build_dataset("sar_azimuth", seed=1, val_fraction=0.2, test_fraction=0.2, lines=50, length=160)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    assert (
        data.task == "regression"
        and data.input_shape == (1, 160)
        and data.train.x.is_complex()
        and data.train.y.shape == (30, 1, 160)
    )
    again = build_dataset("sar_azimuth", seed=1, val_fraction=0.2, test_fraction=0.2, lines=50, length=160)
    assert np.array_equal(again.test.y.numpy(), data.test.y.numpy())


def test_a_regression_run_distills_an_ssm_reports_psnr_and_exports_int8(tiny_recipe, invoke):
    from kdforge import Recipe, run

    ssm = {"name": "ssm", "complex": True, "complex_mode": "channels", "pool": "none"}
    tiny_recipe.update(
        data={"name": "sar_azimuth", "lines": 48, "length": 128, "batch_size": 16},
        teacher={
            "source": "train",
            "model": {**ssm, "model_dim": 16, "state_dim": 8, "num_layers": 2, "selectivity": "gate"},
            "train": {"epochs": 1},
        },
        student={"model": ssm, "preset": "tiny"},
        losses=[
            {"name": "reg_task", "kind": "complex_mse", "weight": 0.5},
            {"name": "reg_distill", "kind": "mag_phase", "weight": 0.5},
        ],
        train={"epochs": 1, "baseline": True},
    )
    result = run(Recipe.model_validate(tiny_recipe))
    for role in ("teacher", "student", "student_alone"):
        metrics = result.results[role]["test"]
        assert set(metrics) == {"mse", "psnr_db", "loss"} and math.isfinite(metrics["psnr_db"])
    assert result.results["student"]["params"] < result.results["teacher"]["params"]
    report = (result.run_dir / "report.md").read_text()
    assert "test PSNR" in report and " dB" in report
    assert invoke("export", result.run_dir, "--quantize", "int8") == 0
    measured = json.loads((result.run_dir / "student.int8.json").read_text())
    assert measured["quantized_layers"] == ["encoder", "blocks.0.out", "decoder"] and math.isfinite(
        measured["int8"]["test"]["psnr_db"]
    )
    assert (
        measured["int8"]["nonzero_weights"] > 0.5 * measured["float32"]["nonzero_weights"]
    )  # int8 weights are counted, not skipped
    from kdforge import load_student
    from kdforge.data import build_dataset
    from kdforge.export import load_quantized, quantize_int8

    x = build_dataset("sar_azimuth", seed=0, val_fraction=0.15, test_fraction=0.2, lines=48, length=128).test.x[:2]
    with torch.no_grad():
        expected = quantize_int8(load_student(result.run_dir))[0](x)
        assert torch.equal(
            load_quantized(result.run_dir / "student.int8.pt")(x), expected
        )  # the saved int8 weights, reloaded
    assert invoke("export", result.run_dir) == 2  # neither --format nor --quantize: a clear error
    out = result.run_dir / "compare.json"
    assert invoke("compare", result.run_dir, "--lengths", "128,512", "--warmup", 0, "--iters", 1, "--output", out) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"].split()[0] for r in rows] == ["teacher", "student"] and rows[0]["retention_pct"] == 100.0
    assert rows[1]["retention_pct"] == pytest.approx(100 * rows[1]["test"]["psnr_db"] / rows[0]["test"]["psnr_db"])
    assert set(rows[1]["speed"]) == {"128", "512"} and out.with_suffix(".png").stat().st_size > 0


def test_arrays_loads_complex_regression_data(tmp_path):
    from kdforge.data import build_dataset

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 2, 16)) + 1j * rng.standard_normal((40, 2, 16))).astype(np.complex128)
    y = x[:, :1] * 2.0
    np.savez(tmp_path / "signals.npz", x=x, y=y)
    data = build_dataset("arrays", seed=0, val_fraction=0.25, test_fraction=0.25, path=str(tmp_path / "signals.npz"))
    assert (len(data.train), len(data.val), len(data.test)) == (20, 10, 10)
    assert (
        data.task == "regression"
        and data.train.x.dtype == torch.complex64
        and data.num_classes == 1
        and data.input_shape == (2, 16)
    )
    everything = torch.cat([data.train.x, data.val.x, data.test.x])
    assert torch.equal(
        torch.sort(everything.real.flatten())[0], torch.sort(torch.from_numpy(x.astype(np.complex64)).real.flatten())[0]
    )  # a split, nothing lost


def test_a_co_trained_teacher_on_regression_data_learns_with_the_task_loss(tiny_recipe, invoke, tmp_path, capsys):
    import yaml

    ssm = {
        "name": "ssm",
        "complex": True,
        "complex_mode": "channels",
        "pool": "none",
        "model_dim": 8,
        "state_dim": 8,
        "num_layers": 1,
    }
    tiny_recipe.update(
        data={"name": "sar_azimuth", "lines": 32, "length": 128, "batch_size": 16},
        teacher={"source": "train", "model": {**ssm, "selectivity": "gate"}, "train": {"epochs": 1}, "trainable": True},
        student={"model": ssm},
        losses=[
            {"name": "reg_task", "kind": "complex_mse", "weight": 0.5},
            {"name": "reg_distill", "kind": "complex_mse", "weight": 0.5},
        ],
        train={"epochs": 1, "baseline": False},
    )
    (tmp_path / "sar.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "sar.yaml") == 0, capsys.readouterr().out
    assert invoke("train", tmp_path / "sar.yaml") == 0, capsys.readouterr().out
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epoch = next(s for s in steps if s["stage"] == "distill" and s["kind"] == "epoch")
    assert (
        "teacher_ce" not in epoch["train"]
        and math.isfinite(epoch["train"]["teacher_reg_task"])
        and epoch["train"]["teacher_reg_task"] > 0
    )


def test_a_preset_reads_a_saved_teacher_and_compare_builds_the_preset_student(tiny_recipe, invoke, tmp_path, capsys):
    import yaml

    from kdforge import Recipe
    from kdforge.export import save_model
    from kdforge.families.ssm.model import compression_preset
    from kdforge.family import student_options
    from kdforge.models import build_model

    ssm = {
        "complex": True,
        "complex_mode": "channels",
        "pool": "none",
        "model_dim": 16,
        "state_dim": 8,
        "num_layers": 2,
        "selectivity": "gate",
    }
    save_model(build_model("ssm", input_shape=(1, 128), num_classes=1, **ssm), tmp_path / "teacher")
    tiny_recipe.update(
        data={"name": "sar_azimuth", "lines": 32, "length": 128, "batch_size": 16},
        teacher={
            "source": "checkpoint",
            "path": str(tmp_path / "teacher.safetensors"),
        },  # no teacher.model: teacher.json says it
        student={"model": {"name": "ssm"}, "preset": "compressed"},
        losses=[{"name": "reg_task", "kind": "complex_mse"}, {"name": "reg_distill", "kind": "complex_mse"}],
    )
    (tmp_path / "sar.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "sar.yaml") == 0, capsys.readouterr().out
    options = student_options(Recipe.model_validate(tiny_recipe))
    assert (
        options["model_dim"],
        options["state_dim"],
        options["num_layers"],
        options["selectivity"],
        options["complex"],
    ) == (8, 4, 1, "none", True)
    assert (
        invoke(
            "compare",
            "--models",
            tmp_path / "sar.yaml",
            "--lengths",
            "128",
            "--warmup",
            0,
            "--iters",
            1,
            "--output",
            tmp_path / "c.json",
        )
        == 0
    ), capsys.readouterr().out
    assert [r["model"].split()[0] for r in json.loads((tmp_path / "c.json").read_text())["rows"]] == [
        "student"
    ]  # a checkpoint teacher is not rebuilt untrained
    assert {k: compression_preset(k, ssm)["model_dim"] for k in ("fixed_compressed", "fixed_tiny")} == {
        "fixed_compressed": 32,
        "fixed_tiny": 24,
    }
    assert (
        compression_preset("fixed_tiny", ssm)["state_dim"],
        compression_preset("fixed_tiny", ssm)["num_layers"],
    ) == (128, 3)


def test_unlabelled_lines_come_without_targets_and_leave_the_labelled_splits_as_they_were():
    from kdforge.data import build_dataset

    options = {"seed": 1, "val_fraction": 0.2, "test_fraction": 0.2, "lines": 50, "length": 160}
    plain = build_dataset("sar_azimuth", **options)
    data = build_dataset("sar_azimuth", **options, unlabelled_lines=20)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(data, split).x, getattr(plain, split).x)
    assert data.unlabelled is not None and data.unlabelled.x.shape == (20, 1, 160)
    assert data.unlabelled.y.isnan().all() and not data.unlabelled.x.isnan().any()
    assert not any(torch.equal(data.unlabelled.x[0], row) for row in plain.train.x)  # lines of their own
    assert "train 30 + 20 unlabelled, val 10" in data.describe()
    both = data.with_unlabelled()
    assert len(both.train) == 50 and both.unlabelled is None and both.test is data.test
    assert both.labelled == 30 and both.describe() == data.describe()


def test_a_step_matched_student_alone_keeps_the_patience_in_steps(tiny_recipe, tmp_path):
    from rich.console import Console

    from kdforge import Recipe
    from kdforge.session import Session

    ssm = {"name": "ssm", "complex": True, "complex_mode": "channels", "pool": "none", "model_dim": 8, "state_dim": 4}
    tiny_recipe.update(
        data={"name": "sar_azimuth", "lines": 40, "length": 128, "batch_size": 16, "unlabelled_lines": 24},
        teacher={"source": "train", "model": ssm},
        student={"model": ssm},
        losses=[{"name": "reg_task", "kind": "complex_mse"}],
        train={"epochs": 3, "early_stopping": {"patience": 5, "metric": "loss"}},
    )
    alone = Session(Recipe.model_validate(tiny_recipe), tmp_path, Console()).baseline_train()
    # 4 distillation batches an epoch, 2 labelled ones: 12 steps, and 5 epochs of 4 steps are 10 of 2
    assert alone.max_steps == 12 and alone.early_stopping.patience == 10 and alone.early_stopping.metric == "loss"
    assert alone.val_every.steps == 4  # validated after every 4 steps, as the distilled student is (not every 2)
    tiny_recipe["train"]["baseline_budget"] = "epochs"
    same = Session(Recipe.model_validate(tiny_recipe), tmp_path, Console()).baseline_train()
    assert same.max_steps is None and same.early_stopping.patience == 5 and same.val_every == 1


@pytest.mark.parametrize("budget", ["steps", "epochs"])
def test_unlabelled_lines_train_the_distilled_student_only(tiny_recipe, budget):
    """The teacher and the student alone see the labelled lines; the distilled student those and the
    unlabelled ones, against the teacher's outputs alone (its task term skips them). The student alone takes
    as many optimiser steps as the distilled one (more epochs of the labelled lines) unless its budget is epochs."""
    from kdforge import Recipe, run

    ssm = {"name": "ssm", "complex": True, "complex_mode": "channels", "pool": "none"}
    tiny_recipe.update(
        data={"name": "sar_azimuth", "lines": 40, "length": 128, "batch_size": 16, "unlabelled_lines": 24},
        teacher={"source": "train", "model": {**ssm, "model_dim": 8, "state_dim": 4}, "train": {"epochs": 1}},
        student={"model": {**ssm, "model_dim": 8, "state_dim": 4}},
        losses=[
            {"name": "reg_task", "kind": "complex_mse", "weight": 0.5},
            {"name": "reg_distill", "kind": "complex_mse", "weight": 0.5},
        ],
        train={"epochs": 1, "baseline": True, "baseline_budget": budget},
    )
    counts = StageCounts()
    result = run(Recipe.model_validate(tiny_recipe), callbacks=[counts])
    seen, steps = counts.samples, counts.steps
    labelled = 40 - round(0.15 * 40) - round(0.2 * 40)  # the default validation and test fractions: 26 lines
    assert steps["distill"] == 4 and seen["distill"] == labelled + 24  # 50 lines in batches of 16
    assert seen["teacher"] == labelled and steps["teacher"] == 2
    alone = result.results["student_alone"]
    report = (result.run_dir / "report.md").read_text()
    if budget == "steps":  # two epochs of the labelled lines' two batches
        assert steps["baseline"] == 4 and seen["baseline"] == 2 * labelled and alone["steps_as_distilled"] == 4
        assert "trained alone (as many optimiser steps, 4, on the labelled data only)" in report
    else:
        assert steps["baseline"] == 2 and seen["baseline"] == labelled and "steps_as_distilled" not in alone
        assert "trained alone:" in report
    assert all(math.isfinite(result.results[role]["test"]["psnr_db"]) for role in ("student", "student_alone"))
