"""Does the input pipeline keep training fed? Online KD on a CIFAR-style image folder.

A folder of 32x32 PNGs (10 classes, generated once under --root) is read by kdforge's
``image_folder`` dataset: decoded in DataLoader workers, resized, randomly cropped and flipped
(torchvision transforms v2), normalised. Measured on this machine:

1. loader alone: samples/s of one epoch of batches, no training;
2. training: kdforge's Trainer distilling a CNN teacher into a small CNN student from those
   batches, with the time the training loop spent waiting for its next batch (the fraction of
   the epoch; target < 5% on a GPU);
3. overhead: kdforge's epoch time over a hand-written loop doing the same work (torchvision's
   ImageFolder, a DataLoader with the same workers and transforms, the same models, CE + KD,
   AdamW), alternated round by round in one process; the median of the paired ratios (target
   <= 1.05);
4. cached KD: the same student trained from a teacher cache of the folder (``kdforge cache`` with
   one view per epoch: the crops and flips each epoch shows), over the student trained alone (CE,
   no teacher) from the same loader, in the same rounds (target <= 1.10).

    uv run python benchmarks/data.py [--images-per-class 200] [--rounds 8] [--epochs 3] [--device cuda]
    uv run python benchmarks/data.py --memory [--only streaming]

Writes benchmarks/results/data.json and data.md (with ``--device cuda``: the models train on the GPU, under bf16
autocast as kdforge's default there, the samples still decoded by CPU workers; data_cuda.json and .md).

With ``--memory``: the peak memory of a training run as the data grows 1x, 10x, 100x — token
shards of 1M, 10M and 100M generated tokens (memory-mapped; a tiny LM self-distilled for 300
steps), parquet files of 20k, 200k and 2M rows (streamed; an MLP) and 1536-d embedding tables of
10k, 100k and 1M rows (6 GB; memory-mapped; an embed_proj student) — each then evaluated on
every val and test sample, each size in a fresh process, read from /proc: peak anonymous memory
(what the run allocates) and peak resident set (which also counts the file pages the kernel maps
in and may drop), and the student's test metrics (exact on one machine class: the drift check re-runs the
smallest streamed case). Writes data_memory.json and data_memory.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console

from common import command, save
from kdforge.config import OptimConfig, Recipe, TrainConfig
from kdforge.data import build_dataset, make_loader
from kdforge.data.loaders import default_workers, example_inputs
from kdforge.distiller import Distiller
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.runner import build_cache
from kdforge.session import Session
from kdforge.teachers import Teacher
from kdforge.trainer import Trainer

BATCH, LR, T, SIZE = 128, 3e-3, 4.0, 32
KD = [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "temperature": T}]
OPTIONS = {"image_size": SIZE, "train_crop": "random_resized", "min_scale": 0.5, "flip": True}


def make_folder(root: Path, per_class: int) -> Path:
    """train/, val/ and test/ class folders of 32x32 PNGs (each class its own mean colour, plus noise)."""
    folder = root / f"cifar_style_{per_class}"
    if (folder / "test").is_dir():
        return folder
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, size=(10, 3))
    for split, n in (("train", per_class), ("val", max(1, per_class // 5)), ("test", max(1, per_class // 5))):
        for c, colour in enumerate(colours):
            (folder / split / f"class{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 40, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / split / f"class{c}" / f"{i:05d}.png")
    return folder


def models(device: torch.device, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    teacher = build_model("cnn", input_shape=(3, SIZE, SIZE), num_classes=10, width=32, depth=3)
    student = build_model("cnn", input_shape=(3, SIZE, SIZE), num_classes=10, width=16, depth=2)
    return teacher.eval().requires_grad_(False).to(device), student.to(device)


class WaitTimer:
    """Batches whose ``epoch`` counts the time spent waiting for each next batch."""

    def __init__(self, batches: Any):
        self.batches, self.waited = batches, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.batches, name)

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Any]:
        batches = self.batches.epoch(epoch, start)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waited += time.perf_counter() - asked
            yield batch


def loader_rate(data: Any, workers: int) -> float:
    loader = make_loader(data.train, BATCH, shuffle=True, num_workers=workers)
    list(loader.epoch(0))  # start the workers
    start = time.perf_counter()
    samples = sum(len(y) for _, y in loader.epoch(1))
    return samples / (time.perf_counter() - start)


def kdforge_epochs(
    train: Any, teacher: Any, losses: list[dict[str, Any]], val: Any, epochs: int, workdir: Path
) -> tuple[float, float]:
    """kdforge's Trainer on ``train`` batches: (seconds per epoch, fraction of it spent waiting for batches)."""
    _, student = models(train.device)
    train = WaitTimer(train)
    distiller = Distiller(student, teacher, build_losses(losses), example_inputs(train.batches))
    trainer = Trainer(
        distiller,
        OptimConfig(lr=LR, schedule="constant", weight_decay=0.01),
        TrainConfig(epochs=epochs, device=str(train.device)),
        steps_per_epoch=len(train),
        checkpoint_dir=workdir,
    )
    start = time.perf_counter()
    trainer.fit(train, val)
    seconds = time.perf_counter() - start
    return seconds / epochs, train.waited / seconds


def cached_teacher(folder: Path, root: Path, views: int, workers: int, device: torch.device) -> Any:
    """A teacher cache of the folder (a CNN teacher trained one epoch, ``views`` crops of every image), as
    ``teacher.cache`` gives it to a run."""
    raw = {
        "name": "bench-cache",
        "data": {"name": "image_folder", "path": str(folder), **OPTIONS, "batch_size": BATCH, "workers": workers},
        "teacher": {"source": "train", "model": {"name": "cnn", "width": 32, "depth": 3}, "train": {"epochs": 1}},
        "student": {"model": {"name": "cnn", "width": 16, "depth": 2}},
        "losses": KD,
        "train": {"device": str(device)},
        "log": {"dir": str(root / "runs"), "progress": False},
    }
    quiet = Console(file=io.StringIO())
    build_cache(Recipe.from_dict(raw), root / "cache", views=views, console=quiet)
    cached = Recipe.from_dict({**raw, "teacher": {**raw["teacher"], "cache": str(root / "cache")}})
    return Session(cached, root / "runs" / "cached", quiet).acquire_teacher()[0]


def handwritten_epochs(folder: Path, epochs: int, workers: int, device: torch.device) -> float:
    """The same work by hand: torchvision's ImageFolder and DataLoader (pinned memory on a GPU), CE + KD, AdamW (under
    bf16 autocast on a GPU, as kdforge's default there), a validation pass."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    train_tf = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(SIZE, scale=(0.5, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.45] * 3, [0.225] * 3),
        ]
    )
    eval_tf = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(SIZE, antialias=True),
            v2.CenterCrop(SIZE),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.45] * 3, [0.225] * 3),
        ]
    )
    common = {"num_workers": workers, "persistent_workers": workers > 0, "prefetch_factor": 4 if workers else None,
              "pin_memory": device.type == "cuda"}  # fmt: skip
    train = torch.utils.data.DataLoader(
        ImageFolder(str(folder / "train"), train_tf), batch_size=BATCH, shuffle=True, **common
    )
    val = torch.utils.data.DataLoader(ImageFolder(str(folder / "val"), eval_tf), batch_size=512, **common)
    teacher, student = models(device)
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.01)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    start = time.perf_counter()
    for _ in range(epochs):
        student.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad(), autocast:
                t_logits = teacher(x)
            with autocast:
                s_logits = student(x)
            kd = F.kl_div(
                F.log_softmax(s_logits.float() / T, -1),
                F.log_softmax(t_logits.float() / T, -1),
                reduction="batchmean",
                log_target=True,
            )
            loss = 0.1 * F.cross_entropy(s_logits.float(), y) + 0.9 * kd * T * T
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        student.eval()
        with torch.no_grad(), autocast:
            sum(int((student(x.to(device)).argmax(-1) == y.to(device)).sum()) for x, y in val)
    return (time.perf_counter() - start) / epochs


MEMORY_RUN = """
import json, sys, threading, time
from pathlib import Path
import io
from rich.console import Console
import kdforge

peak = {"anon_kb": 0, "hwm_kb": 0}
def sample():
    while True:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        peak["anon_kb"] = max(peak["anon_kb"], int(fields["RssAnon"].split()[0]))
        peak["hwm_kb"] = int(fields["VmHWM"].split()[0])
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
recipe = kdforge.Recipe.from_dict(json.loads(sys.argv[1]))
started = time.perf_counter()
result = kdforge.run(recipe, console=Console(file=io.StringIO()))
time.sleep(0.2)
print(json.dumps({**peak, "seconds": time.perf_counter() - started, "test": result.results["student"]["test"]}))
"""


def token_shard(root: Path, size: int) -> dict[str, Any]:
    """``size`` memory-mapped tokens and a tiny LM self-distilled on them (EMA teacher)."""
    shard = root / f"tokens_{size}.bin"
    if not shard.exists():
        np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint16).tofile(shard)
    return {
        "data": {"name": "tokens", "path": str(shard), "vocab_size": 256, "length": 128, "val_fraction": 0.01}
        | {"test_fraction": 0.01},
        "teacher": {"source": "ema", "decay": 0.99},
        "student": {"model": {"name": "lm_transformer", "width": 32, "depth": 1, "heads": 2}},
        "files": [shard],
    }


def parquet_stream(root: Path, size: int) -> dict[str, Any]:
    """``size`` rows of 32 numbers in parquet files, streamed (val and test: 2,000 rows each); an MLP
    self-distilled on them (EMA teacher)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / f"rows_{size}"
    if not (folder / "test.parquet").exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name, n in (("train", size), ("val", 2000), ("test", 2000)):
            with pq.ParquetWriter(
                folder / f"{name}.parquet.tmp", pa.schema([("x", pa.list_(pa.float32(), 32)), ("y", pa.int64())])
            ) as out:
                for start in range(0, n, 100_000):
                    x = rng.normal(size=(min(100_000, n - start), 32)).astype(np.float32)
                    rows = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 32)
                    out.write_table(pa.table({"x": rows, "y": pa.array(x[:, :10].argmax(1))}))
            (folder / f"{name}.parquet.tmp").rename(folder / f"{name}.parquet")
    return {
        "data": {"name": "hf", "path": str(folder / "train.parquet"), "val": str(folder / "val.parquet")}
        | {"test": str(folder / "test.parquet"), "input": "x", "label": "y", "streaming": True},
        "teacher": {"source": "ema", "decay": 0.99},
        "student": {"model": {"name": "mlp", "hidden": [64]}},
        "files": list(folder.glob("*.parquet")),
    }


def embedding_table(root: Path, size: int) -> dict[str, Any]:
    """``size`` x 1536 float32 embeddings (an API-sized table) in one memory-mapped .npy, compressed to 64
    dimensions by an embed_proj student against the table itself."""
    path = root / f"table_{size}.npy"
    if not path.exists():
        table = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", np.float32, (size, 1536))
        rng = np.random.default_rng(0)
        for start in range(0, size, 50_000):
            table[start : start + 50_000] = rng.standard_normal((min(50_000, size - start), 1536), np.float32)
        table.flush()
        del table
        path.with_suffix(".tmp.npy").rename(path)
    return {
        "data": {"name": "embedding_table", "path": str(path), "memory_map": True, "val_fraction": 0.2}
        | {"test_fraction": 0.2},  # >= 2,000 rows each at every size: the metrics compare 2,000 rows
        "teacher": {"source": "table"},
        "student": {"model": {"name": "embed_proj", "dim": 64, "hidden": [256]}},
        "losses": [{"name": "sim_kl", "temperature": 0.1}, {"name": "proj_mse"}],
        "files": [path],
    }


KD_MEMORY = [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 1.0}]
MEMORY_CASES = {
    "memory-mapped token shards": (token_shard, "tokens", (1_000_000, 10_000_000, 100_000_000)),
    "hf parquet rows, streaming": (parquet_stream, "rows", (20_000, 200_000, 2_000_000)),
    "embedding table 1536-d, memory-mapped": (embedding_table, "rows", (10_000, 100_000, 1_000_000)),
}


def memory_recipe(setup: dict[str, Any], root: Path) -> dict[str, Any]:
    """The recipe of one memory run: 300 steps of 64 samples on ``setup``'s data (a :data:`MEMORY_CASES` maker's),
    then every val and test sample; its run directory under ``root``."""
    return {
        "name": "memory",
        "data": {**setup["data"], "batch_size": 64, "eval_batch_size": 64, "workers": 0},
        "teacher": setup["teacher"],
        "student": setup["student"],
        "losses": setup.get("losses", KD_MEMORY),
        "train": {"max_steps": 300, "baseline": False},
        "log": {"dir": str(root / "runs"), "progress": False},
    }


def memory(root: Path, only: str | None = None) -> None:
    """Peak memory of a run as the data grows 1x, 10x, 100x (see the module docstring)."""
    import json
    import subprocess
    import sys

    from common import earlier_results, going_on_from

    earlier = earlier_results("data_memory", "--only") if only else {"rows": []}
    rows = [r for r in earlier["rows"] if only not in r["case"]]  # with --only: the other cases' rows stay as measured
    for case, (make, unit, sizes) in MEMORY_CASES.items():
        if only and only not in case:
            continue
        for size in sizes:
            setup = make(root, size)
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_RUN, json.dumps(memory_recipe(setup, root))],
                capture_output=True,
                text=True,
                check=True,
            )
            found = json.loads(out.stdout.strip().splitlines()[-1])
            data_mb = sum(f.stat().st_size for f in setup["files"]) / 2**20
            rows.append({"case": case, "unit": unit, "size": size, "data_mb": data_mb, **found})
            print(rows[-1])
    rows.sort(key=lambda r: list(MEMORY_CASES).index(r["case"]))  # stable: sizes stay in order
    text = "\n".join(
        [
            "# Peak memory of a training run as the data grows",
            "",
            "Each run trains 300 steps of 64 samples (a student self-distilled from its EMA teacher), then evaluates",
            "on every val and test sample; one fresh process per size, memory read from /proc, CPU. Token shards:",
            "a tiny LM on 128-token windows, val and test 1% of the tokens each. Parquet rows: an MLP on 32 numbers",
            "a row, streamed (`hf`, `streaming: true`: one counting pass over the labels, then shuffled through a",
            "10,000-row buffer), val and test 2,000 rows each. Embedding table: 1536-d float32 rows in one .npy,",
            "memory-mapped, compressed to 64 dimensions by an embed_proj student (the table is the teacher); val and",
            "test 20% each, of which the metrics compare 2,000 rows. The peak resident set also counts the file's",
            "pages mapped in (the table was just written, so it sits in the page cache and each row read maps its",
            "cached neighbours too): shared, clean pages the kernel drops when memory is wanted. data_memory.json also",
            "holds each run's test metrics.",
            "",
            "| data | size | on disk | peak anonymous memory | peak resident set | run time |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['case']} | {r['size']:,} {r['unit']} | {r['data_mb']:.0f} MB | {r['anon_kb'] / 1024:.0f} MB "
                f"| {r['hwm_kb'] / 1024:.0f} MB | {r['seconds']:.0f} s |"
                for r in rows
            ),
            "",
            "    uv run python benchmarks/data.py --memory",
            "",
        ]
    )
    out = {"benchmark": "data_memory", "rows": rows, "torch": torch.__version__, **going_on_from(earlier)}
    save("data_memory", out, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--root", type=Path, help="where the data are written (default: a new temporary folder)")
    parser.add_argument("--memory", action="store_true", help="peak memory as the data grows, instead")
    parser.add_argument("--only", help="with --memory: measure only the cases whose name holds this, keep the rest")
    parser.add_argument("--device", default="cpu", help="where the models train: cpu or cuda (results: data_cuda)")
    args = parser.parse_args()
    if args.root is None:  # this invocation's own folder, removed after: no other run's files, none left behind
        with tempfile.TemporaryDirectory(prefix="kdforge-bench-data-") as root:
            args.root = Path(root)
            return measure(args)
    return measure(args)


def measure(args: argparse.Namespace) -> None:
    if args.memory:
        args.root.mkdir(parents=True, exist_ok=True)
        return memory(args.root, args.only)
    folder = make_folder(args.root, args.images_per_class)
    data = build_dataset("image_folder", path=str(folder), **OPTIONS)
    workers, device = default_workers(), torch.device(args.device)
    rate = loader_rate(data, workers)
    print(f"loader alone ({workers} workers): {rate:,.0f} samples/s")
    teacher = Teacher(models(device)[0])
    val = make_loader(data.val, 512, num_workers=workers, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        cache = cached_teacher(folder, Path(tmp), args.epochs, workers, device)

        def train(cached: bool = False) -> Any:
            """New training batches (new workers, as the hand-written loop starts its own each round)."""
            batches = make_loader(data.train, BATCH, shuffle=True, num_workers=workers, device=device)
            if cached:  # as teacher.cache sets them: sample indices, and epoch e shows view e % views
                batches.indexed, batches.cached_views = True, args.epochs
            return batches

        variants = {
            "kd": lambda work: kdforge_epochs(train(), teacher, KD, val, args.epochs, work),
            "hand": lambda work: (handwritten_epochs(folder, args.epochs, workers, device), 0.0),
            "alone": lambda work: kdforge_epochs(train(), None, [{"name": "ce"}], val, args.epochs, work),
            "cached": lambda work: kdforge_epochs(train(cached=True), cache, KD, val, args.epochs, work),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        waits = []
        for r in range(args.rounds):
            order = list(variants)[r % 4 :] + list(variants)[: r % 4]  # a different one goes first each round
            for name in order:
                gc.collect()  # the last DataLoaders go before new workers fork (they would inherit them)
                seconds, waited = variants[name](Path(tmp) / f"round{r}-{name}")
                times[name].append(seconds)
                if name == "kd":
                    waits.append(waited)
            print(
                f"round {r + 1}: kdforge {times['kd'][-1]:.3f} s/epoch (waiting for data {100 * waits[-1]:.1f}%), "
                f"hand-written {times['hand'][-1]:.3f}; student alone {times['alone'][-1]:.3f}, "
                f"cached KD {times['cached'][-1]:.3f} s/epoch"
            )
    kd_times, hand_times, alone_times, cached_times = (times[k] for k in ("kd", "hand", "alone", "cached"))
    where = "CPU" if device.type == "cpu" else f"{torch.cuda.get_device_name(device)}, bf16 autocast"
    ratios = [k / h for k, h in zip(kd_times, hand_times)]
    cached_ratios = [c / a for c, a in zip(cached_times, alone_times)]
    k_mean = statistics.mean(kd_times)
    steps = len(data.train) / BATCH
    result = {
        "benchmark": "data",
        "setup": f"image_folder of {len(data.train)} train / {len(data.val)} val 32x32 PNGs, 10 classes, batch "
        f"{BATCH}, random resized crop + flip, CNN(32x3) teacher -> CNN(16x2) student, CE+KD, AdamW, {where}",
        "workers": workers,
        "loader_samples_per_s": rate,
        "train_samples_per_s": len(data.train) / k_mean,
        "kdforge_s_per_epoch": kd_times,
        "handwritten_s_per_epoch": hand_times,
        "wait_fraction": waits,
        "paired_ratio_median": statistics.median(ratios),
        "paired_ratios": ratios,
        "target_ratio": 1.05,
        "alone_s_per_epoch": alone_times,
        "cached_kd_s_per_epoch": cached_times,
        "cached_over_alone_median": statistics.median(cached_ratios),
        "cached_over_alone": cached_ratios,
        "target_cached_ratio": 1.10,
        "target_wait_fraction_gpu": 0.05,
        "steps_per_epoch": steps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
    }
    text = "\n".join(
        [
            f"# Input pipeline: online KD on a CIFAR-style image folder ({where})",
            "",
            f"{result['setup']}; {workers} worker(s), {os.cpu_count()} cores, {args.rounds} rounds of "
            f"{args.epochs} epochs.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| loader alone | {rate:,.0f} samples/s |",
            f"| training (kdforge) | {result['train_samples_per_s']:,.0f} samples/s |",
            f"| time waiting for data | {100 * statistics.mean(waits):.1f}% ± {100 * statistics.pstdev(waits):.1f}% "
            "of the epoch |",
            f"| kdforge / hand-written epoch time | {statistics.median(ratios):.3f} (median of paired rounds; "
            "target <= 1.05) |",
            f"| cached KD / student alone epoch time | {statistics.median(cached_ratios):.3f} (median of paired "
            f"rounds; target <= 1.10; {args.epochs} cached views) |",
            "",
            "    " + command(),
            "",
        ]
    )
    save("data" if device.type == "cpu" else f"data_{device.type}", result, text)


if __name__ == "__main__":
    main()
