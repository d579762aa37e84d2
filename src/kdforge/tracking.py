"""Experiment trackers as callbacks: TensorBoard, Weights & Biases, MLflow.

Each gets, under the stage's name (``teacher/``, ``distill/``, ``baseline/``): every loss
part, the learning rate, every logged scalar (temperatures, scheduled weights, gate
losses) and the throughput every ``log.every_steps`` optimiser steps; per-layer gradient
norms when the trainer measured them (``log.grad_stats_every``); each epoch's train and
validation metrics, and with ``log.weight_histograms`` a histogram of each student weight
tensor (MLflow, which has no histograms, gets their mean, std, min and max). One tracker
serves all stages of a run and is closed at its end. Only rank 0 tracks.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdforge.callbacks import Callback
from kdforge.errors import KdforgeError
from kdforge.taps import unwrap

if TYPE_CHECKING:
    from kdforge.config import Recipe
    from kdforge.trainer import Trainer


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"val": {"accuracy": 0.9}} -> {"val/accuracy": 0.9}; numbers only."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


class Tracker(Callback):
    """Collects what to log; subclasses send it with :meth:`send` and release in :meth:`close`."""

    def __init__(self, every: int, histograms: bool = False):
        self.every, self.histograms = every, histograms
        self.samples, self.since = 0, time.perf_counter()

    def on_fit_start(self, trainer: Trainer) -> None:
        self.samples, self.since = 0, time.perf_counter()

    def on_step_end(self, trainer: Trainer, samples: int) -> None:
        self.samples += samples
        metrics = {f"grad_norm/{k}": v for k, v in trainer.grad_norms.items()}
        if trainer.pos.step % self.every == 0:
            now = time.perf_counter()
            metrics.update(
                trainer.losses(), lr=trainer.step_lr, samples_per_s=self.samples / max(now - self.since, 1e-9)
            )
            self.samples, self.since = 0, now
        if metrics:
            self.send({f"{trainer.stage}/{k}": v for k, v in metrics.items()}, trainer.stage, trainer.pos.step)

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.send({f"{trainer.stage}/val/{k}": v for k, v in record["val"].items()}, trainer.stage, trainer.pos.step)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        epoch = flatten({k: v for k, v in record.items() if k in ("train", "val", "val_terms", "epoch", "diagnostics")})
        self.send({f"{trainer.stage}/epoch/{k}": v for k, v in epoch.items()}, trainer.stage, trainer.pos.step)
        if self.histograms and not trainer.sharded:  # a sharded student's weights would need every rank to gather them
            weights = {
                f"{trainer.stage}/weights/{name}": p.detach().float().cpu()
                for name, p in unwrap(trainer.distiller.student).named_parameters()
            }
            self.send_histograms(weights, trainer.stage, trainer.pos.step)

    def send_histograms(self, tensors: dict[str, torch.Tensor], stage: str, step: int) -> None:
        """Where a tracker has no histograms: each tensor's mean, std, min and max."""
        stats = {f"{key}/{name}": float(fn(t)) for key, t in tensors.items() for name, fn in _SUMMARIES.items()}
        self.send(stats, stage, step)

    def send(self, metrics: dict[str, Any], stage: str, step: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None: ...


class TensorBoardTracker(Tracker):
    """Event files in ``<run dir>/tensorboard`` (``tensorboard --logdir RUN_DIR``)."""

    def __init__(self, run_dir: Path, every: int, histograms: bool = False):
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(every, histograms)
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def send(self, metrics: dict[str, Any], stage: str, step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def send_histograms(self, tensors: dict[str, torch.Tensor], stage: str, step: int) -> None:
        for key, tensor in tensors.items():
            self.writer.add_histogram(key, tensor, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A Weights & Biases run in ``<run dir>/wandb``; ``offline`` (the default) needs no
    network (``wandb sync`` uploads it later). Each stage has its own step axis."""

    def __init__(self, run_dir: Path, every: int, histograms: bool, recipe: Recipe):
        import wandb

        super().__init__(every, histograms)
        self.wandb = wandb
        self.stages: set[str] = set()
        self.run = wandb.init(
            project=recipe.log.wandb_project,
            name=run_dir.name,
            dir=str(run_dir),
            mode=recipe.log.wandb_mode,
            config=recipe.to_dict(),
        )

    def send(self, metrics: dict[str, Any], stage: str, step: int) -> None:
        if stage not in self.stages:
            self.stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.run.log({**metrics, f"{stage}/step": step})

    def send_histograms(self, tensors: dict[str, torch.Tensor], stage: str, step: int) -> None:
        histogram = lambda t: self.wandb.Histogram(np_histogram=np.histogram(t.numpy(), bins=64))  # noqa: E731
        self.send({key: histogram(t) for key, t in tensors.items()}, stage, step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    """An MLflow run: by default in a local SQLite store in the run directory
    (``<run dir>/mlflow.db``; ``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db``),
    or at ``log.mlflow_uri``. The recipe is logged as the run's parameters."""

    def __init__(self, run_dir: Path, every: int, histograms: bool, recipe: Recipe):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        super().__init__(every, histograms)
        uri = recipe.log.mlflow_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(recipe.name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(recipe.name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        params = [Param(k, str(v)[:500]) for k, v in _flat_recipe(recipe.to_dict()).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def send(self, metrics: dict[str, Any], stage: str, step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


_SUMMARIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": torch.mean,
    "std": lambda t: t.std() if t.numel() > 1 else torch.zeros(()),
    "min": torch.min,
    "max": torch.max,
}


def _flat_recipe(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat_recipe(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in _flat_recipe(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): tree}


def build_trackers(recipe: Recipe, run_dir: Path) -> list[Tracker]:
    """The trackers ``log`` asks for."""
    every, histograms = recipe.log.every_steps, recipe.log.weight_histograms
    wanted = [
        (recipe.log.tensorboard, "tensorboard", lambda: TensorBoardTracker(run_dir, every, histograms)),
        (recipe.log.wandb, "wandb", lambda: WandbTracker(run_dir, every, histograms, recipe)),
        (recipe.log.mlflow, "mlflow", lambda: MlflowTracker(run_dir, every, histograms, recipe)),
    ]
    trackers: list[Tracker] = []
    for on, package, make in wanted:
        if on:
            if importlib.util.find_spec(package) is None:
                raise KdforgeError(f"log.{package} needs the {package} package: pip install 'kdforge[tracking]'")
            trackers.append(make())
    return trackers
