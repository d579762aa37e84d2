"""kdforge.embed: the embedding-distillation functions and config, against reference formulas."""

import numpy as np
import pydantic
import pytest
import torch
from safetensors.torch import save_file

from kdforge.embed import (
    CURRICULUM_CONFIG,
    DEFAULT_OPENAI_CONFIG,
    FAST_CONFIG,
    DistillationConfig,
    combined_distill_loss,
    create_curriculum_schedule,
    curriculum_distill_step,
    distill_loss,
    kl_distill_loss,
    load_teacher_checkpoint,
)
from kdforge.errors import KdforgeError


def test_a_five_stage_curriculum_from_4_to_half():
    schedule = create_curriculum_schedule(4.0, 0.5, 5)
    assert [schedule(s) for s in range(5)] == pytest.approx([4.0, 3.125, 2.25, 1.375, 0.5])
    assert [CURRICULUM_CONFIG.get_tau_for_stage(s) for s in range(5)] == pytest.approx([4.0, 3.125, 2.25, 1.375, 0.5])
    geometric = create_curriculum_schedule(4.0, 0.5, 5, "exponential")
    assert [geometric(s) for s in range(5)] == pytest.approx([4.0 * (0.125 ** (s / 4)) for s in range(5)])
    cosine = create_curriculum_schedule(4.0, 0.5, 3, "cosine")
    assert [cosine(s) for s in range(3)] == pytest.approx([4.0, 2.25, 0.5])
    assert create_curriculum_schedule(2.0, 1.0, 1)(0) == 2.0  # a single stage sits at the start
    with pytest.raises(ValueError, match="stage must be in"):
        schedule(5)
    assert DEFAULT_OPENAI_CONFIG.get_tau_for_stage(3) == DEFAULT_OPENAI_CONFIG.tau  # no curriculum


def test_distill_loss_compares_similarities_across_widths_and_is_zero_when_they_are_kept():
    torch.manual_seed(0)
    codes = torch.randn(16, 5)
    teacher = (
        codes @ torch.linalg.qr(torch.randn(1536, 1536))[0][:5]
    )  # a 1536-d teacher whose similarities a 5-d vector can keep
    assert distill_loss(codes * 2.0, teacher).item() == pytest.approx(0.0, abs=1e-5)
    student = torch.randn(16, 5, requires_grad=True)
    loss = distill_loss(student, teacher, tau=0.5)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0
    assert distill_loss(student, teacher, tau=0.5, reduction="sum").item() == pytest.approx(16 * loss.item(), rel=1e-5)
    per_tau = [distill_loss(student, teacher, tau=tau).item() / tau**2 for tau in (0.1, 1.0, 4.0)]
    assert len({round(v, 6) for v in per_tau}) == 3  # τ changes more than the loss's scale
    with pytest.raises(ValueError, match="reduction"):
        distill_loss(student, teacher, reduction="batchmean")


def test_distill_loss_of_equal_widths_is_one_minus_cosine():
    s, t = torch.randn(6, 8), torch.randn(6, 8)
    expected = (1 - (s * t).sum(1) / s.norm(dim=1) / t.norm(dim=1)).mean()
    assert distill_loss(s, t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert distill_loss(t * 3, t).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_distill_loss_is_batchmean_kl_times_tau_squared():
    s, t, tau = torch.randn(4, 6), torch.randn(4, 6), 2.0
    pt, log_ps = torch.softmax(t / tau, -1), torch.log_softmax(s / tau, -1)
    expected = (pt * (pt.log() - log_ps)).sum(-1).mean() * tau**2
    assert kl_distill_loss(s, t, tau).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl_distill_loss(s, t, tau, reduction="sum").item() == pytest.approx(4 * expected.item(), rel=1e-5)
    assert kl_distill_loss(t, t, tau).item() == pytest.approx(0.0, abs=1e-6)
    per_sample = (pt * (pt.log() - log_ps)).sum(-1) * tau**2
    assert torch.allclose(kl_distill_loss(s, t, tau, reduction="none"), per_sample, atol=1e-6)
    assert kl_distill_loss(s, t, tau, reduction="batchmean").item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="'mean', 'batchmean', 'sum' or 'none'"):
        kl_distill_loss(s, t, tau, reduction="elementwise")


def test_combined_and_curriculum_steps_weigh_distillation_by_alpha():
    s, t, recon = torch.randn(8, 5), torch.randn(8, 384), torch.tensor(0.3)
    d = distill_loss(s, t, tau=0.1)
    assert combined_distill_loss(s, t, recon, alpha=0.7).item() == pytest.approx(0.7 * d.item() + 0.3 * 0.3, rel=1e-5)
    assert combined_distill_loss(s, t).item() == pytest.approx(d.item(), rel=1e-6)
    assert combined_distill_loss(s, t, recon).item() == pytest.approx(0.5 * d.item() + 0.5 * 0.3, rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        combined_distill_loss(s, t, recon, alpha=1.5)
    schedule = create_curriculum_schedule(4.0, 0.5, 5)
    steps = [curriculum_distill_step(s, t, stage, schedule, alpha=0.7, reconstruction_loss=recon) for stage in range(5)]
    assert [tau for _, tau in steps] == pytest.approx([4.0, 3.125, 2.25, 1.375, 0.5])
    assert steps[0][0].item() == pytest.approx(combined_distill_loss(s, t, recon, 0.7, tau=4.0).item(), rel=1e-6)
    assert len({round(loss.item(), 6) for loss, _ in steps}) == 5  # the curriculum changes the loss


def test_the_original_guides_examples_run_as_written(tmp_path, monkeypatch):
    """The original API's guide passes alpha without a reconstruction loss, in its curriculum loop and its full
    training example: the loss is the distillation loss alone, and the alpha that weighs nothing is said once."""
    import warnings

    from kdforge.families.embedding import api

    monkeypatch.setattr(api, "_WARNED_ALPHA", [])
    schedule = create_curriculum_schedule(start_tau=4.0, end_tau=0.5, num_stages=5, schedule_type="linear")
    student, teacher = torch.randn(32, 5), torch.randn(32, 1536)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        steps = [
            curriculum_distill_step(
                student_vec=student, teacher_vec=teacher, stage=stage, tau_schedule=schedule, alpha=0.7
            )
            for stage in range(5)
        ]
    assert len([w for w in said if "alpha=0.7" in str(w.message)]) == 1
    assert steps[2][0].item() == pytest.approx(distill_loss(student, teacher, tau=2.25).item(), rel=1e-6)

    # the full training example: a checkpoint of teacher embeddings, a linear student, stages of epochs
    torch.save({"embeddings": torch.randn(64, 1536)}, tmp_path / "teacher_1536d.pt")
    config = DistillationConfig(
        teacher_checkpoint=str(tmp_path / "teacher_1536d.pt"), teacher_dim=1536, student_dim=5, device="cpu",
        curriculum=True, curriculum_stages=3, curriculum_tau_schedule=(4.0, 0.5), alpha=0.7, batch_size=32,
        learning_rate=1e-2,
    )  # fmt: skip
    embeddings = load_teacher_checkpoint(config.teacher_checkpoint, device=config.device)["embeddings"]
    model = torch.nn.Linear(config.teacher_dim, config.student_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = create_curriculum_schedule(*config.curriculum_tau_schedule, num_stages=config.curriculum_stages)
    losses = []
    for stage in range(config.curriculum_stages):
        for start in range(0, len(embeddings), config.batch_size):
            batch = embeddings[start : start + config.batch_size]
            loss, tau = curriculum_distill_step(model(batch), batch, stage, schedule, alpha=config.alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert tau == 0.5 and all(np.isfinite(losses))


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


def test_load_teacher_checkpoint_reads_tensors_and_tables_and_refuses_pickled_code(tmp_path):
    embeddings = torch.randn(3, 4)
    torch.save({"embeddings": embeddings, "texts": ["a", "b", "c"], "dim": 4}, tmp_path / "teacher.pt")
    loaded = load_teacher_checkpoint(tmp_path / "teacher.pt")
    assert torch.equal(loaded["embeddings"], embeddings) and loaded["texts"] == ["a", "b", "c"]
    save_file({"embeddings": embeddings}, str(tmp_path / "teacher.safetensors"))
    assert torch.equal(load_teacher_checkpoint(str(tmp_path / "teacher.safetensors"))["embeddings"], embeddings)
    np.save(tmp_path / "table.npy", embeddings.numpy())
    assert torch.equal(load_teacher_checkpoint(tmp_path / "table.npy")["embeddings"], embeddings)
    np.savez(tmp_path / "table.npz", embeddings=embeddings.numpy(), ids=np.arange(3))
    assert load_teacher_checkpoint(tmp_path / "table.npz")["ids"].tolist() == [0, 1, 2]
    torch.save({"embeddings": embeddings, "hook": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(KdforgeError, match=r"pickled Python objects \(posix.system\).*never loads"):
        load_teacher_checkpoint(tmp_path / "evil.pt")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(KdforgeError, match="object-dtype array.*never loads"):
        load_teacher_checkpoint(tmp_path / "objects.npy")
    with pytest.raises(KdforgeError, match="not found"):
        load_teacher_checkpoint(tmp_path / "missing.pt")


def test_distillation_config_validates_round_trips_and_reads_old_names():
    config = DistillationConfig(
        teacher_dim=384,
        student_dim=16,
        tau=2.0,
        alpha=0.7,
        curriculum=True,
        curriculum_stages=4,
        curriculum_tau_schedule=(2.0, 0.5),
    )
    assert DistillationConfig.from_dict(config.to_dict()) == config
    with pytest.warns(DeprecationWarning, match="max_epochs is now epochs"):
        old = DistillationConfig.from_dict({"teacher_dim": 384, "max_epochs": 7, "validation_split": 0.2})
    assert (old.epochs, old.validation) == (7, 0.2)
    with pytest.warns(DeprecationWarning, match="validation_split is now validation"):
        assert DistillationConfig(max_epochs=7, validation_split=0.2) == old.model_copy(update={"teacher_dim": 1536})
    with pytest.raises(pydantic.ValidationError, match="give max_epochs or epochs, not both"):
        DistillationConfig(max_epochs=7, epochs=8)
    with pytest.raises(KdforgeError, match="no field.*save_evry.*valid: teacher_checkpoint"):
        DistillationConfig.from_dict({"save_evry": 10})
    # every field of the original's config (src/atlas/training/configs.py) is accepted, as the original names it
    original = {
        "teacher_checkpoint": None, "teacher_dim": 1536, "student_dim": 5, "tau": 1.0, "alpha": 0.5,
        "loss_type": "kl", "device": "cpu", "curriculum": False, "curriculum_stages": 3,
        "curriculum_tau_schedule": (3.0, 0.5), "batch_size": 32, "learning_rate": 1e-4, "max_epochs": 100,
        "save_dir": "checkpoints", "save_every": 10, "validation_split": 0.1, "early_stopping_patience": 5,
    }  # fmt: skip
    with pytest.warns(DeprecationWarning):
        moved = DistillationConfig.from_dict(original)
    assert (moved.loss_type, moved.save_every, moved.early_stopping_patience) == ("kl", 10, 5)
    for bad in (
        {"device": "gpu"},
        {"alpha": 1.5},
        {"tau": 0},
        {"curriculum_stages": 0},
        {"curriculum_tau_schedule": (1.0, -1.0)},
        {"loss_type": "mse"},
        {"save_every": 0},
    ):
        with pytest.raises(pydantic.ValidationError):
            DistillationConfig(**bad)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        FAST_CONFIG.tau = 3.0  # a shared preset cannot be changed by accident
    assert FAST_CONFIG.model_copy(update={"tau": 3.0}).tau == 3.0 and (FAST_CONFIG.batch_size, FAST_CONFIG.epochs) == (
        64,
        20,
    )


def test_the_uncentred_svd_keeps_the_direction_every_vector_shares_and_pca_drops_it():
    from kdforge.families.embedding.baselines import pca_projection

    torch.manual_seed(0)
    shared = torch.nn.functional.normalize(torch.cat([torch.zeros(3), torch.randn(13)]), dim=0)
    spread = torch.tensor([2.0] * 3 + [0.1] * 13)  # the vectors differ along the first three axes...
    x = 5 * shared + spread * torch.randn(400, 16)  # ...and all lean one way, as sentence embeddings do
    mean, components = pca_projection(x, 3)
    zero, singular = pca_projection(x, 3, centred=False)
    assert torch.equal(zero, torch.zeros(16, dtype=torch.float64))
    assert abs(float(singular[:, 0] @ shared.double())) > 0.99  # the first singular vector is the shared lean
    assert (components.T @ shared.double()).abs().max() < 0.1  # centring removed it
    torch.testing.assert_close(singular.T @ singular, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(mean, x.double().mean(0))
