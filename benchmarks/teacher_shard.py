"""Memory per process of a teacher sharded across processes (``teacher.shard: true``) against the whole teacher
on every process, measured as kdforge builds and runs it under torchrun: 2 gloo processes on this CPU.

The teacher is a 16-block Llama (hidden 2048, 0.81B parameters: 1.6 GB in bfloat16) written with ``save_pretrained``
(float32, one file); each process
builds it from the recipe (``teacher: {source: hf, dtype: bfloat16, shard: ...}``: loaded in bfloat16, so that its
weights are the process's own memory, not pages of the mapped file), runs it on four batches, and reports the
bytes of teacher weights it then holds (its shard, or the whole) and the peaks of its own memory (``RssAnon``,
sampled every 2 ms, glibc set to return freed tensors at once) above what it held before the teacher was built:
while building it, and while running it::

    uv run python benchmarks/teacher_shard.py      # ~3 min on 2 CPU cores; writes results/teacher_shard.{json,md}
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import rendered, save

COMMAND = "uv run python benchmarks/teacher_shard.py"
LLAMA = {"model_type": "llama", "vocab_size": 256, "hidden_size": 2048, "num_hidden_layers": 16,
         "num_attention_heads": 16, "intermediate_size": 5504, "max_position_embeddings": 256}  # fmt: skip


def own_memory() -> int:
    """This process's anonymous resident memory (what it owns, not the mapped files), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def rank_job(folder: str, shard: bool, out: str) -> None:
    """One torchrun process: build the teacher as a run does, run it, report its memory."""
    import torch
    import torch.distributed as dist
    from rich.console import Console

    from kdforge.config import Recipe
    from kdforge.session import Session

    recipe = Recipe.from_dict({
        "name": "shard", "data": {"name": "text_lm", "tokenizer": "bytes", "length": 128, "batch_size": 8,
                                  "max_chars": 50_000},
        "teacher": {"source": "hf", "shard": shard, "dtype": "bfloat16", "model": {"name": folder,
                    "output": "causal_lm"}},
        "student": {"model": {"name": "mlp"}}, "losses": [{"name": "kd"}], "log": {"dir": tempfile.mkdtemp()},
    })  # fmt: skip
    session = Session(recipe, Path(tempfile.mkdtemp()), Console(file=io.StringIO()))
    before, peaks, done = own_memory(), {"build": 0, "run": 0}, threading.Event()
    phase = ["build"]

    def sample() -> None:
        while not done.is_set():
            peaks[phase[0]] = max(peaks[phase[0]], own_memory())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    teacher, _ = session.live_teacher()
    phase[0] = "run"
    with torch.no_grad():
        for batch in session.data.train.x[: 4 * 8].split(8):
            teacher(batch)
    done.set()
    sampler.join()
    local = sum(getattr(p, "_local_tensor", p).numel() * p.element_size() for p in teacher.module.parameters())
    found = {"rank": dist.get_rank(), "weights_gb": local / 1e9,
             **{f"peak_{name}_gb": (peak - before) / 1e9 for name, peak in peaks.items()}}  # fmt: skip
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, found)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(gathered))


def main() -> None:
    import torch
    from rich.table import Table
    from transformers import AutoConfig, AutoModelForCausalLM

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**LLAMA))
        whole_gb = sum(p.numel() for p in model.parameters()) * 2 / 1e9
        model.save_pretrained(tmp)
        for shard in (False, True):
            out = Path(tmp) / f"ranks-{shard}.json"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                       __file__, "--rank-job", tmp, str(shard), str(out)]  # fmt: skip
            # glibc keeps freed blocks for reuse, and would show its high-water mark: a fixed mmap threshold gives every
            # large tensor its own mapping, returned as soon as it is freed, so the process's memory is what it uses
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
            subprocess.run(command, check=True, env=env, capture_output=True, text=True)
            for entry in json.loads(out.read_text()):
                rows.append({"teacher": "sharded" if shard else "whole", **entry})
    table = Table(title=f"A {whole_gb:.2f} GB bfloat16 teacher on 2 processes (gloo, CPU)")
    for column in ("teacher", "process", "weights held", "peak own memory building it", "peak running it"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["teacher"], str(row["rank"]), *(f"{row[key]:.3f} GB" for key in ("weights_gb", "peak_build_gb",
                                                                                  "peak_run_gb"))
        )  # fmt: skip
    save("teacher_shard", {"whole_gb": whole_gb, "rows": rows}, rendered(table, COMMAND))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank-job"]:
        rank_job(sys.argv[2], sys.argv[3] == "True", sys.argv[4])
    else:
        main()
