"""The embedding family's hooks: what it adds to every run (see :class:`kdforge.family.Family`)."""

from __future__ import annotations

from typing import Any

import torch

from kdforge.errors import KdforgeError
from kdforge.families.embedding.baselines import projection_baselines
from kdforge.family import Family, register_family


class Embeddings(Family):
    name = "embedding"
    description = (
        "compact embedding students: a sentence encoder's vectors in a few dimensions, with their neighbourhoods"
    )
    roles = (
        ("pca", "PCA of the teacher"),
        ("uncentred_svd", "uncentred SVD of the teacher"),
        ("random_projection", "random projection"),
    )

    def check_run(self, session: Any) -> None:
        teacher = session.recipe.teacher
        if session.data.task == "embedding" and (
            teacher is None or teacher.source in ("train", "ema") or teacher.cache
        ):
            raise KdforgeError(
                f"dataset '{session.data.name}' has no labels: its targets are a trained encoder's embeddings. Give "
                "teacher.source "
                "sentence-transformers, hf (output: mean) or table; text teachers remember their embeddings, so "
                "teacher.cache is not needed"
            )

    @torch.no_grad()
    def prepare_data(self, session: Any, teacher: Any) -> None:
        """Every split's targets become the teacher's embeddings of its inputs (each computed
        once; the teacher remembers them for training)."""
        if session.data.task != "embedding":
            return
        size = session.recipe.data.eval_batch_size
        for name, loader in (("train", session.train), ("val", session.val), ("test", session.test)):
            if not hasattr(loader, "x"):  # a memory-mapped table: each row is its own target
                if not isinstance(teacher.module, torch.nn.Identity):
                    raise KdforgeError(
                        "a memory-mapped embedding table is its own teacher: use teacher: {source: table} (no path)"
                    )
                continue
            starts = range(0, len(loader.x), size)
            loader.y = torch.cat(
                [
                    teacher(loader.x[i : i + size]).float()
                    for i in session.track(starts, f"teacher embeds the {name} split")
                ]
            )

    def baselines(self, session: Any, student: Any, results: dict[str, Any]) -> dict[str, Any] | None:
        """No labels to learn alone from: what simple projections of the teacher keep instead."""
        if session.data.task != "embedding":
            return None
        with torch.no_grad():
            width = student.eval()(session.example).shape[-1]
        return projection_baselines(session, width, results["teacher"]["latency_ms"])


register_family(Embeddings())
