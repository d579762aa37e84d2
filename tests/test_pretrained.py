"""Models named by hub id: transformers downloads them over real HTTP from a stand-in hub on 127.0.0.1
(:mod:`hubserver`) into the Hugging Face cache of ``HF_HOME``, and the same recipe then runs offline from that cache.
kdforge runs as users run it, a command with ``HF_ENDPOINT`` and ``HF_HOME`` in its environment; nothing reaches the
internet."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys

import pytest
import yaml

from datafiles import write_causal_lm, write_tokenizer
from hubserver import Hub
from kdforge.errors import KdforgeError

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The stand-in hub, serving ``org/tiny-llama``: a 2-block Llama with its tokenizer (trained here)."""
    served = Hub()
    folder = tmp_path_factory.mktemp("tiny-llama")
    write_tokenizer(folder)
    write_causal_lm(folder, 320, "llama", layers=2)
    served.commit = served.add("org/tiny-llama", folder)
    yield served
    served.close()


def kdforge(*args, hub, home, offline=False, flag=False, largest_file=None):
    """``kdforge ARGS`` in a process whose hub is the stand-in one and whose caches (Hugging Face's, torch's) are in
    ``home`` (``largest_file``: the bytes a file may grow to before a write fails, as on a full disk)."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env["TORCH_HOME"] = str(home / "torch")
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, "-m", "kdforge", *(["--offline"] if flag else []), *map(str, args)]
    limit = None if largest_file is None else lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (largest_file,) * 2)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def written(tmp_path, recipe):
    """``recipe`` (its runs under ``tmp_path``) as a YAML file; returns its path."""
    path = tmp_path / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump({**recipe, "log": {"dir": str(tmp_path / "runs"), "progress": False}}))
    return path


def lm_recipe(tmp_path, teacher="org/tiny-llama", tokenizer="org/tiny-llama", **model):
    """A tiny language-model distillation whose tokenizer, teacher and student all come from the hub."""
    recipe = {
        "name": "hub-lm",
        "seed": 0,
        "data": {"name": "text_lm", "tokenizer": tokenizer, "length": 32, "batch_size": 16, "max_chars": 20_000},
        "teacher": {"source": "hf", "model": {"name": teacher, "output": "causal_lm", **model}},
        "student": {"model": {"name": "hf_causal_lm", "path": "org/tiny-llama", "layers": [0]}},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5}],
        "train": {"epochs": 1, "baseline": False},
    }
    return written(tmp_path, recipe)


def test_models_named_by_hub_id_are_fetched_into_the_hf_cache_then_a_run_is_offline(hub, tmp_path):
    """The cluster's way: ``kdforge fetch`` where there is a network, then the job with ``--offline``."""
    home = tmp_path / "hf"
    code, out = kdforge("fetch", lm_recipe(tmp_path), hub=hub, home=home)
    assert code == 0, out
    assert "org/tiny-llama" in out and hub.commit[:12] in out and "tokenizer" in out and "MiB" in out
    assert not (tmp_path / "runs").exists()  # nothing ran
    cached = home / "hub" / "models--org--tiny-llama"
    assert (cached / "refs" / "main").read_text() == hub.commit and (cached / "snapshots" / hub.commit).is_dir()
    assert any(r.startswith("GET /org/tiny-llama/resolve/") for r in hub.requests)  # really downloaded over HTTP

    asked = len(hub.requests)
    code, out = kdforge("train", lm_recipe(tmp_path), hub=hub, home=home, flag=True)
    assert code == 0, out
    code, out = kdforge("check", lm_recipe(tmp_path), hub=hub, home=home, offline=True)  # HF_HUB_OFFLINE=1
    assert code == 0 and "check passed" in out, out
    assert len(hub.requests) == asked  # offline: the cache alone
    (run_dir,) = (tmp_path / "runs").glob("hub-lm-*")
    results = json.loads((run_dir / "results.json").read_text())
    resolved = {
        "id": "org/tiny-llama",
        "revision": "main",
        "commit": hub.commit,
        "path": str(cached / "snapshots" / hub.commit),
    }
    assert results["sources"] == [{**resolved, "what": what} for what in ("tokenizer", "Hugging Face model")]
    from huggingface_hub import ModelCard  # the Hub's own reader of model cards

    for folder, library in ((run_dir, "kdforge"), (run_dir / "student_hf", "transformers")):
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == library and card.data.base_model == "org/tiny-llama"
        assert "knowledge-distillation" in card.data.tags and card.data.pipeline_tag == "text-generation"
        assert "| student + KD |" in card.text and "name: hub-lm" in card.text


def test_a_teacher_sharded_for_its_size_is_fetched_without_being_built(hub, tmp_path, monkeypatch):
    """On a login node (one process) ``kdforge fetch`` downloads a ``teacher.shard`` teacher's files, as it does a
    whole one's (which a run then finds offline: the first test), and never builds it, so it need not fit there."""
    home = tmp_path / "hf"
    recipe = yaml.safe_load(lm_recipe(tmp_path).read_text())
    recipe["teacher"]["shard"] = True
    code, out = kdforge("fetch", written(tmp_path, recipe), hub=hub, home=home)
    assert code == 0 and "Hugging Face model" in out and "torchrun" not in out, out
    snapshot = home / "hub" / "models--org--tiny-llama" / "snapshots" / hub.commit
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {f.name for f in snapshot.iterdir()}


def test_a_revision_pins_the_commit_and_a_missing_one_is_named(hub, tmp_path):
    """A model takes ``revision:``; a tokenizer, named where only a name fits, takes it after ``@``."""
    home = tmp_path / "hf"
    pinned = f"org/tiny-llama@{hub.commit}"
    code, out = kdforge("fetch", lm_recipe(tmp_path, tokenizer=pinned, revision=hub.commit), hub=hub, home=home)
    assert code == 0 and f"│ tokenizer │ {hub.commit} │ {hub.commit[:12]} │" in out, out
    for tokenizer, model, missing in (
        ("org/tiny-llama", "v9", "Hugging Face model"),
        ("org/tiny-llama@v9", None, "tokenizer"),
    ):
        code, out = kdforge("check", lm_recipe(tmp_path, tokenizer=tokenizer, revision=model), hub=hub, home=home)
        assert code == 2 and "Traceback" not in out, out
        assert f"{missing} 'org/tiny-llama' has no revision 'v9'" in out


def test_a_download_cut_off_midway_is_one_message_and_the_next_run_completes_it(hub, tmp_path):
    home = tmp_path / "hf"
    hub.cut.add("org/tiny-llama/model.safetensors")  # half of it comes, then the network fails
    try:
        code, out = kdforge("fetch", lm_recipe(tmp_path), hub=hub, home=home)
    finally:
        hub.cut.clear()
    assert code == 2 and "Traceback" not in out, out
    assert f"downloading Hugging Face model 'org/tiny-llama' from {hub.url} failed (" in out
    assert "run the command again: the files already downloaded are kept" in out
    snapshot = home / "hub" / "models--org--tiny-llama" / "snapshots" / hub.commit
    assert (snapshot / "tokenizer.json").is_file() and not (snapshot / "model.safetensors").exists()
    code, out = kdforge("fetch", lm_recipe(tmp_path), hub=hub, home=home)
    assert code == 0 and (snapshot / "model.safetensors").is_file(), out


def test_a_full_cache_disk_is_one_message(hub, tmp_path):
    """The weights (166 kB) do not fit; the tokenizer (10 kB) did."""
    code, out = kdforge("fetch", lm_recipe(tmp_path), hub=hub, home=tmp_path / "hf", largest_file=100_000)
    assert code == 2 and "Traceback" not in out, out
    assert f"no room left in the Hugging Face cache ({tmp_path / 'hf' / 'hub'}) for Hugging Face model" in out
    assert "File too large" in out and "set HF_HOME to a larger disk" in out


@pytest.mark.parametrize(
    "teacher,offline,names",
    [
        (
            "org/no-such-model",
            False,
            ["'org/no-such-model' is neither a folder on this machine nor a repository", "hf auth login"],
        ),
        ("org/no-such-model", True, ["'org/tiny-llama' is not in the Hugging Face cache", "HF_HUB_OFFLINE"]),
    ],
    ids=["unknown id", "offline miss"],
)
def test_a_name_that_cannot_be_had_is_one_message(hub, tmp_path, teacher, offline, names):
    """(Offline with an empty cache, the first name read, the data's tokenizer, is the one missing.)"""
    code, out = kdforge("check", lm_recipe(tmp_path, teacher=teacher), hub=hub, home=tmp_path / "hf", offline=offline)
    assert code == 2 and "Traceback" not in out, out
    for name in names:
        assert name in out, out


def test_a_name_that_is_neither_a_folder_nor_a_hub_id_is_refused_before_any_request():
    from transformers import AutoConfig

    from kdforge.pretrained import load_pretrained

    with pytest.raises(KdforgeError, match="'not a valid id!' is neither a folder on this machine nor a hub id"):
        load_pretrained(AutoConfig.from_pretrained, "not a valid id!", "Hugging Face model")


def test_a_model_that_ships_its_own_code_needs_trust_remote_code(hub, tmp_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("custom")
    auto_map = {"AutoConfig": "configuration_kd.KdConfig", "AutoModelForCausalLM": "modeling_kd.KdModel"}
    (folder / "config.json").write_text(json.dumps({"model_type": "kd-custom", "auto_map": auto_map}))
    tokenizer = {"auto_map": {"AutoTokenizer": ["tokenization_kd.KdTokenizer", None]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    for module in ("configuration_kd", "tokenization_kd"):
        (folder / f"{module}.py").write_text("raise SystemExit('this code must not run')\n")
    hub.add("org/custom", folder)
    code, out = kdforge("check", lm_recipe(tmp_path, teacher="org/custom"), hub=hub, home=tmp_path / "hf")
    assert code == 2 and "Traceback" not in out and "must not run" not in out, out
    assert "'org/custom' runs its own code" in out and "trust_remote_code: true" in out
    code, out = kdforge("check", lm_recipe(tmp_path, tokenizer="org/custom"), hub=hub, home=tmp_path / "hf")
    assert code == 2 and "Traceback" not in out and "must not run" not in out, out
    assert "tokenizer 'org/custom' runs its own code" in out and "save it with save_pretrained" in out


def test_a_gated_model_says_how_to_get_access(hub, tmp_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gated")
    write_causal_lm(folder, 320, "llama", layers=1)
    hub.add("org/gated", folder)
    hub.gated.add("org/gated")
    code, out = kdforge("check", lm_recipe(tmp_path, teacher="org/gated"), hub=hub, home=tmp_path / "hf")
    assert code == 2 and "'org/gated' is gated" in out and "HF_TOKEN" in out, out


def test_a_timm_teacher_downloads_its_pretrained_weights_through_the_hub(hub, tmp_path, tmp_path_factory):
    """timm fetches ``timm/<model>.<tag>`` from the hub (here the stand-in one) into the Hugging Face cache."""
    import timm
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    weights = timm.create_model("test_resnet.r160_in1k", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, folder / "model.safetensors")
    commit = hub.add("timm/test_resnet.r160_in1k", folder)
    recipe = {
        "name": "timm-hub",
        "data": {"name": "digits", "batch_size": 64},
        "teacher": {"source": "timm", "model": {"name": "test_resnet.r160_in1k"}, "pretrained": True},
        "student": {"model": {"name": "mlp", "hidden": [16]}},
        "losses": [{"name": "kd"}],
    }
    path = written(tmp_path, recipe)
    home = tmp_path / "hf"
    code, out = kdforge("fetch", path, hub=hub, home=home)
    assert code == 0 and "timm/test_resnet.r160_in1k" in out and commit[:12] in out, out
    assert (home / "hub" / "models--timm--test_resnet.r160_in1k" / "snapshots" / commit / "model.safetensors").exists()
    code, out = kdforge("check", path, hub=hub, home=home, flag=True)
    assert code == 0 and "RANDOM classifier head" in out, out  # a 1000-class head rebuilt for 10 digits


def test_torchvision_weights_by_name_are_read_from_the_torch_cache(hub, tmp_path):
    """torchvision's download server is not served here: its cache is filled as torchvision fills it (the file
    named as its URL names it, under TORCH_HOME/hub/checkpoints), and the weights resolve from there."""
    import torch
    import torchvision

    home = tmp_path / "cache"
    checkpoints = home / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), checkpoints / "squeezenet1_1-b8a52dc0.pth")
    teacher = {"source": "torchvision", "model": {"name": "squeezenet1_1", "weights": "IMAGENET1K_V1"}}
    recipe = {
        "name": "tv",
        "data": {"name": "digits", "batch_size": 64},
        "teacher": {**teacher, "pretrained": True, "adapt": {"size": 64, "channels": 3}},
        "student": {"model": {"name": "mlp", "hidden": [16]}},
        "losses": [{"name": "kd"}],
    }
    path = written(tmp_path, recipe)
    code, out = kdforge("fetch", path, hub=hub, home=home, flag=True)  # offline: from the cache alone
    assert code == 0 and "torchvision/squeezenet1_1" in out and "IMAGENET1K_V1" in out and "b8a52dc0" in out, out
    assert "randomly initialised classifier" in out  # ImageNet's 1000 classes, rebuilt for 10


def test_torchvision_weights_missing_offline_or_misnamed_are_one_message(tmp_path, monkeypatch):
    from kdforge.pretrained import torchvision_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KdforgeError, match=r"squeezenet1_1.IMAGENET1K_V1 are not in the torch cache .*TORCH_HOME"):
        torchvision_weights("squeezenet1_1", "DEFAULT")
    with pytest.raises(
        KdforgeError, match=r"'squeezenet1_1' has no weights 'IMAGENET1K_V9' \(did you mean 'IMAGENET1K_V1'\?\)"
    ):
        torchvision_weights("squeezenet1_1", "IMAGENET1K_V9")


@pytest.fixture(scope="module")
def numbers(hub, tmp_path_factory):
    """``org/numbers`` on the stand-in hub: a dataset repository with train, validation and test parquet files, as
    the hub lays them out (``data/train-00000-of-00001.parquet``); returns its commit."""
    import datasets

    folder = tmp_path_factory.mktemp("numbers")
    (folder / "data").mkdir()
    rows = datasets.Dataset.from_dict(
        {"x": [[i / 60, (i % 3) / 3] for i in range(60)], "y": [i % 3 for i in range(60)]}
    )
    rows.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    rows.select(range(15)).to_parquet(str(folder / "data" / "validation-00000-of-00001.parquet"))
    rows.select(range(15, 30)).to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return hub.add("datasets/org/numbers", folder)


def numbers_recipe(tmp_path, **data):
    recipe = {
        "name": "hub-data",
        "data": {"name": "hf", "path": "org/numbers", "input": "x", "label": "y", "batch_size": 16, **data},
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 1}},
        "student": {"model": {"name": "mlp", "hidden": [4]}},
        "losses": [{"name": "kd"}],
    }
    return written(tmp_path, recipe)


def test_a_hub_dataset_by_id_is_prepared_in_the_datasets_cache_then_read_offline(hub, numbers, tmp_path):
    home = tmp_path / "hf"
    code, out = kdforge("fetch", numbers_recipe(tmp_path), hub=hub, home=home)
    assert code == 0 and "org/numbers" in out and numbers[:12] in out and "Hugging Face dataset" in out, out
    asked = len(hub.requests)
    code, out = kdforge("check", numbers_recipe(tmp_path), hub=hub, home=home, flag=True)
    assert code == 0 and "check passed" in out and len(hub.requests) == asked, out
    code, out = kdforge("check", numbers_recipe(tmp_path, streaming=True), hub=hub, home=tmp_path / "empty")
    assert code == 0 and "check passed" in out, out  # streamed from the hub, nothing prepared first
    assert not (tmp_path / "empty" / "datasets").exists() or not any((tmp_path / "empty" / "datasets").rglob("*.arrow"))


@pytest.mark.parametrize(
    "data,offline,names",
    [
        ({"path": "org/no-such-data"}, False, ["'org/no-such-data' is neither a folder on this machine nor"]),
        ({"path": "org/no-such-data"}, True, ["'org/no-such-data'", "not in the Hugging Face cache", "hf/datasets"]),
        ({"revision": "v9"}, False, ["'org/numbers' has no revision 'v9'"]),
    ],
    ids=["unknown id", "offline miss", "unknown revision"],
)
def test_a_hub_dataset_that_cannot_be_had_is_one_message(hub, numbers, tmp_path, data, offline, names):
    code, out = kdforge("check", numbers_recipe(tmp_path, **data), hub=hub, home=tmp_path / "hf", offline=offline)
    assert code == 2 and "Traceback" not in out, out
    for name in names:
        assert name in out, out


def test_text_datasets_read_a_hub_datasets_text_column(hub, tmp_path, tmp_path_factory):
    import datasets

    from kdforge.data.text import docstrings

    folder = tmp_path_factory.mktemp("texts")
    (folder / "data").mkdir()
    texts = sorted(set(docstrings(["json", "csv"])))[:60]
    datasets.Dataset.from_dict({"text": texts}).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    commit = hub.add("datasets/org/texts", folder)
    model = {"name": "lm_transformer", "width": 16, "depth": 1, "heads": 2}
    recipe = {
        "name": "hub-texts",
        "data": {"name": "text_lm", "files": [{"path": "org/texts", "revision": commit}], "length": 32},
        "teacher": {"source": "train", "model": model, "train": {"epochs": 1}},
        "student": {"model": model},
        "losses": [{"name": "ce"}],
    }
    path = written(tmp_path, recipe)
    code, out = kdforge("fetch", path, hub=hub, home=tmp_path / "hf")
    assert code == 0 and "org/texts" in out and commit[:12] in out, out


def test_a_sentence_transformers_teacher_by_hub_id(hub, tmp_path, tmp_path_factory):
    """A tiny sentence encoder (a config-built BERT, the packaged MiniLM's tokenizer, mean pooling) published as
    ``org/tiny-encoder``, distilled into a small embedding student from its id."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kdforge.data.text import tokenizer_path

    bert = tmp_path_factory.mktemp("bert")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path("minilm"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    encoder = tmp_path_factory.mktemp("encoder")
    word = models.Transformer(str(bert), max_seq_length=32)
    SentenceTransformer(modules=[word, models.Pooling(16, "mean")]).save(str(encoder))
    commit = hub.add("org/tiny-encoder", encoder)
    recipe = {
        "name": "hub-encoder",
        "data": {
            "name": "text_corpus",
            "max_texts": 200,
            "encoding": "tokens",
            "tokenizer": "minilm",
            "max_length": 32,
        },
        "teacher": {"source": "sentence-transformers", "model": {"name": "org/tiny-encoder"}},
        "student": {"model": {"name": "embed_tokens", "dim": 8}},
        "losses": [{"name": "cosine"}],
    }
    path = written(tmp_path, recipe)
    code, out = kdforge("fetch", path, hub=hub, home=tmp_path / "hf")
    assert code == 0 and "org/tiny-encoder" in out and commit[:12] in out, out


def test_the_readme_hub_lm_example_runs_as_written(hub, tmp_path, tmp_path_factory):
    """The README's recipe that names a hub LM and a hub dataset, word for word, trains: the repositories it names
    are stood in for by tiny ones of the same names and layout (a 2-block Qwen2 with a tokenizer trained here,
    wikitext's ``wikitext-2-raw-v1`` subset as parquet files, declared in its card)."""
    import datasets

    from kdforge.data.text import docstrings

    (recipe,) = [
        found
        for block in re.findall(r"```yaml\n(.*?)```", open(README).read(), re.S)
        if (found := yaml.safe_load(block)).get("teacher", {}).get("source") == "hf"
    ]
    qwen = tmp_path_factory.mktemp("qwen")
    write_tokenizer(qwen)
    write_causal_lm(qwen, 384, "qwen2", layers=2)  # its vocabulary padded past its tokenizer's 321 tokens, as Qwen's
    hub.add("Qwen/Qwen2.5-0.5B", qwen)
    wikitext = tmp_path_factory.mktemp("wikitext")
    (wikitext / "wikitext-2-raw-v1").mkdir()
    texts = sorted(set(docstrings(["json", "csv", "argparse", "email", "logging"])))  # 144 texts, 48k characters
    for split, rows in (("train", texts[40:]), ("validation", texts[:20]), ("test", texts[20:40])):
        table = datasets.Dataset.from_dict({"text": rows})
        table.to_parquet(str(wikitext / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet"))
    splits = "".join(
        f"  - split: {name}\n    path: wikitext-2-raw-v1/{name}-*\n" for name in ("train", "validation", "test")
    )
    card = f"---\nconfigs:\n- config_name: wikitext-2-raw-v1\n  data_files:\n{splits}---\n"  # the hub's subsets
    (wikitext / "README.md").write_text(card)
    hub.add("datasets/Salesforce/wikitext", wikitext)
    code, out = kdforge("train", written(tmp_path, recipe), hub=hub, home=tmp_path / "hf")
    assert code == 0, out
    (run_dir,) = (tmp_path / "runs").glob(f"{recipe['name']}-*")
    results = json.loads((run_dir / "results.json").read_text())
    assert {source["id"] for source in results["sources"]} == {"Qwen/Qwen2.5-0.5B", "Salesforce/wikitext"}
    assert results["student"]["test"]["perplexity"] < 320  # better than a uniform guess
