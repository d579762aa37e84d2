"""Where and how a model runs: the device, mixed precision, torch.compile, gradient
checkpointing, seeds, determinism and the random state a checkpoint carries."""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.utils.checkpoint

from kdforge.errors import KdforgeError
from kdforge.taps import block_names

Compilable = TypeVar("Compilable", bound=Callable[..., Any])


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KdforgeError(f"train.device is '{device}' but CUDA is not available here; use 'auto' or 'cpu'")
    return torch.device(device)


def autocast_for(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``auto``: bf16 autocast on CUDA, off on CPU; ``bf16`` / ``fp16``: that dtype anywhere;
    ``off``: full precision. fp16 needs a gradient scaler (the Trainer makes one)."""
    if amp == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_dtype(dtype: str, device: torch.device, key: str) -> None:
    """Refuse weights of ``dtype`` that ``device`` cannot run (float16 on a CPU; bfloat16 on a GPU older than
    Ampere), naming ``key``."""
    if dtype == "float16" and device.type == "cpu":
        raise KdforgeError(f"{key}: float16 weights run on GPUs; on the CPU give bfloat16 (or float32)")
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise KdforgeError(f"{key}: this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16; give float16")


def compiled(module: Compilable) -> Compilable:
    """``torch.compile(module)`` (a module or a function); where compiling is unsupported it runs eagerly, with a
    warning (graphs that fail to compile fall back too, instead of stopping training)."""
    import warnings

    import torch._dynamo
    import torch._functorch.config

    torch._dynamo.config.suppress_errors = True
    # Backward graphs are otherwise compiled at the first backward, outside that fallback: a
    # kernel the compiler cannot build there (Triton did so for rwkv_spiking on an H100) would
    # stop training. Compiled with the forward, their failures fall back like any other.
    torch._functorch.config.force_non_lazy_backward_lowering = True
    try:
        return cast(Compilable, torch.compile(module))
    except Exception as err:  # noqa: BLE001 - any failure to set up compilation means: run eagerly
        warnings.warn(f"torch.compile is unavailable here ({err}); training without it", stacklevel=2)
        return module


def threads_per_job(jobs: int) -> int:
    """Each of ``jobs`` processes' share of the cores: more threads each would only make their pools fight."""
    return max(1, (os.cpu_count() or 1) // jobs)


def where_measured(threads: int | None = None) -> dict[str, Any]:
    """The machine and libraries a result was measured with: what decides whether another run can reproduce it
    exactly (the same :func:`machine_class`) or only within its spread. ``threads``: the runs' own thread count
    where they ran in other processes (default: this one's)."""
    import platform

    record = {
        "cpu": _cpuinfo("model name") or platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_own_capability": _own_capability(),
        "threads": threads or torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    return {"machine_class": machine_class(record), **record}


def machine_class(measured_on: dict[str, Any]) -> str | None:
    """The class of machines on which a result's float values repeat exactly: the CPU model, PyTorch's CPU
    capability (the instruction set its kernels use), the thread count and the GPU, from a :func:`where_measured`
    record's own fields (a record without them: the class it states, if any). The CPU model counts, not only the
    instruction set: oneDNN picks its kernels per CPU, and an AMD and an Intel AVX-512 CPU computed one
    benchmark's loss differently in its eighth digit. Kernels forced below the CPU's own level name that level too
    ("AVX2 on an AVX512 CPU")."""
    if any(measured_on.get(key) is None for key in ("cpu", "cpu_capability", "threads")):
        return measured_on.get("machine_class")
    kernels, own, gpu = measured_on["cpu_capability"], measured_on.get("cpu_own_capability"), measured_on.get("gpu")
    if own and own != kernels:  # kernels forced below the CPU's own (ATEN_CPU_CAPABILITY); its BLAS is not
        kernels += f" on an {own} CPU"
    return f"{measured_on['cpu']}, {kernels}, {measured_on['threads']} threads" + (f", {gpu}" if gpu else "")


def _own_capability() -> str | None:
    """The instruction-set level PyTorch would pick on this CPU unless ``ATEN_CPU_CAPABILITY`` forces a lower one, from
    the CPU's flags (Linux; None elsewhere). It tells a forced AVX2 run on an AVX-512 CPU from one on an AVX2 CPU:
    MKL picks its code path from the CPU itself, so the two round matrix products differently."""
    line = _cpuinfo("flags")
    if line is None:
        return None
    flags = set(line.split())
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    return "AVX2" if {"avx2", "fma"} <= flags else "DEFAULT"


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` of /proc/cpuinfo (Linux; None elsewhere, or where the CPU does not list it)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith(field)), None)
    except OSError:
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """With ``enabled``, only deterministic kernels run inside (an op without one raises,
    naming it) and cuDNN does not autotune; the previous settings come back after."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's requirement for repeatable matmuls
    previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


def checkpoint_blocks(model: torch.nn.Module) -> None:
    """Gradient checkpointing of each block of ``model``'s block list: in training, a block's
    activations are recomputed during backward instead of stored. Forward hooks on a block
    (feature taps) still see its output once."""
    modules = dict(model.named_modules())
    for name in block_names(model, "auto"):
        block = modules[name]
        block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward: Any, *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def _rng_state() -> dict[str, Any]:
    """Torch RNG only: shuffling uses its own seeded generator, so dropout and other
    in-model randomness are all that must continue where they stopped."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def layer_grad_norms(named: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, float]:
    """L2 norm of the gradient of each layer (the parameters of one module together)."""
    squares: dict[str, torch.Tensor] = {}
    for name, p in named:
        if p.grad is not None:
            whole = getattr(p.grad, "full_tensor", None)  # a sharded (DTensor) gradient; importing the class costs ~1 s
            grad = whole() if whole is not None else p.grad
            layer = name.rpartition(".")[0] or name
            squares[layer] = squares.get(layer, 0.0) + grad.float().square().sum()
    return {layer: float(total.sqrt()) for layer, total in squares.items()}  # one sync per layer, every N steps only
