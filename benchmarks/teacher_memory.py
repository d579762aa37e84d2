"""How much memory loading a Hugging Face teacher takes, against the size of its weights: a teacher must be held
once, not twice (no float32 copy beside the bfloat16 one, no state dict beside the model).

A 270M-parameter Llama (1.1 GB in float32) is written with ``save_pretrained`` (safetensors), then loaded as kdforge
loads an ``hf`` teacher (``teacher: {source: hf, dtype: ..., model: {name: FOLDER, output: causal_lm}}``) in a fresh
process per dtype. A thread samples the process's anonymous memory (``RssAnon``: what the process owns; the
weights file's pages that the kernel maps in are ``RssFile``, reclaimable, and reported apart) every 2 ms; the
figure ("copies held") is its peak rise during the load over the bytes the loaded weights take. After one forward,
own + mapped memory shows where the weights live (float32 ones stay in the file's mapped pages, never copied)::

    uv run python benchmarks/teacher_memory.py      # ~2 min on 2 CPU cores; writes results/teacher_memory.{json,md}
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import rendered, save

COMMAND = "uv run python benchmarks/teacher_memory.py"
LLAMA = {"model_type": "llama", "vocab_size": 256, "hidden_size": 1024, "num_hidden_layers": 16,
         "num_attention_heads": 16, "intermediate_size": 4096, "max_position_embeddings": 256}  # fmt: skip
DTYPES = ("float32", "bfloat16")


def write_model(folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(**LLAMA)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)


def memory() -> dict[str, int]:
    """This process's resident memory now, in bytes: anonymous (its own) and file-backed (mapped files)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def load(folder: str, dtype: str) -> dict[str, float]:
    """Load ``folder`` as an ``hf`` teacher in ``dtype`` (in this process); the memory it took."""
    from rich.console import Console

    from kdforge.config import Recipe
    from kdforge.session import Session
    from kdforge.teachers import TEACHER_SOURCES

    recipe = Recipe.from_dict({
        "name": "memory", "data": {"name": "text_lm", "tokenizer": "bytes", "length": 16, "max_chars": 2_000},
        "teacher": {"source": "hf", "dtype": dtype, "model": {"name": folder, "output": "causal_lm"}},
        "student": {"model": {"name": "mlp"}}, "losses": [{"name": "kd"}],
        "log": {"dir": tempfile.mkdtemp()},
    })  # fmt: skip
    session = Session(recipe, Path(tempfile.mkdtemp()), Console(file=io.StringIO()))
    before, peak, done = memory(), memory(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = memory()
            for key in peak:
                peak[key] = max(peak[key], now[key])
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    module, _ = TEACHER_SOURCES.get("hf")(session, recipe.teacher, session.run_dir / "teacher")
    done.set()
    sampler.join()
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    import torch

    with torch.no_grad():  # a forward reads every weight: float32 ones from the mapped file's pages
        module(torch.randint(0, 256, (1, 16)))
    after = memory()
    return {
        "dtype": dtype,
        "weights_gb": weights / 1e9,
        "peak_own_gb": (peak["RssAnon"] - before["RssAnon"]) / 1e9,
        "peak_mapped_gb": (peak["RssFile"] - before["RssFile"]) / 1e9,
        "copies": (peak["RssAnon"] - before["RssAnon"]) / weights,
        "after_forward_own_gb": (after["RssAnon"] - before["RssAnon"]) / 1e9,
        "after_forward_mapped_gb": (after["RssFile"] - before["RssFile"]) / 1e9,
    }


def main() -> None:
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_model(Path(tmp))
        file_gb = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors")) / 1e9
        for dtype in DTYPES:  # a fresh process each: nothing freed by one load lowers the next one's peak
            out = subprocess.run(
                [sys.executable, __file__, "--load", tmp, dtype], capture_output=True, text=True, check=True
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    table = Table(title=f"Loading a {file_gb:.2f} GB float32 safetensors teacher (270M parameters)")
    columns = ("dtype", "weights loaded", "peak own memory", "peak mapped file", "copies held", "after a forward")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["dtype"],
            f"{row['weights_gb']:.2f} GB",
            f"{row['peak_own_gb']:.2f} GB",
            f"{row['peak_mapped_gb']:.2f} GB",
            f"{row['copies']:.2f}",
            f"{row['after_forward_own_gb']:.2f} + {row['after_forward_mapped_gb']:.2f} GB",
        )
    save("teacher_memory", {"file_gb": file_gb, "rows": rows}, rendered(table, COMMAND))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        print(json.dumps(load(sys.argv[2], sys.argv[3])))
    else:
        main()
