"""Every file kdforge reads or writes goes through here.

Readers refuse what they cannot trust with one message that names the file and says what
is wrong with it: empty, truncated or damaged files, pickled Python objects (never
unpickled: they can run code), object arrays, text in another encoding, broken JSON.

Writers are atomic: the bytes go to ``<name>.tmp`` beside the target, are flushed and
fsync'ed, then renamed over it. A write that fails (a full disk, a kill) leaves the
previous version of the file as it was; a full disk is reported with the space needed.
Stale ``*.tmp`` files of an interrupted write are removed by :func:`remove_stale_tmp`.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np
import torch

from kdforge.errors import KdforgeError

TMP_SUFFIX = ".tmp"
ALIASES = "kdforge.aliases"  # safetensors metadata: {name: the name whose tensor it shares}
_PICKLE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class FileReadError(KdforgeError):
    """A file that cannot be trusted: missing, empty, damaged, or holding code."""


class FileWriteError(KdforgeError):
    """A file could not be written; its previous version is intact."""


# ---------------------------------------------------------------- reading


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileReadError(f"{what} '{path}' not found" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise FileReadError(f"{what} '{path}' is empty (0 bytes): it was not written completely; write it again")
    return path


def read_text(path: str | Path, what: str = "file", encoding: str = "utf-8", option: str | None = None) -> str:
    """The text of ``path``; a decoding error names the byte and the ``option`` that sets the encoding."""
    path = Path(path)
    if not path.is_file():
        raise FileReadError(f"{what} '{path}' not found")
    try:
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as err:
        fix = f"set {option}: latin-1 (or the file's encoding)" if option else "re-save it as UTF-8"
        raise FileReadError(
            f"{what} '{path}' is not {encoding} text (byte 0x{err.object[err.start]:02x} at offset {err.start}; "
            f"latin-1 or cp1252, perhaps): {fix}"
        ) from None
    except LookupError:
        raise FileReadError(
            f"{what} '{path}': unknown text encoding '{encoding}'"
            + (f"; set {option} to one Python knows, e.g. utf-8 or latin-1" if option else "")
        ) from None


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of ``path``, which must exist and not be empty."""
    path = _existing(path, what)
    try:
        return path.read_bytes()
    except OSError as err:
        raise FileReadError(f"{what} '{path}' cannot be read ({short_reason(err)})") from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parsed JSON of ``path``; a truncated or broken file names the line and column."""
    path = _existing(path, what)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FileReadError(
            f"{what} '{path}' is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): it is truncated "
            "or damaged"
        ) from None


def load_torch(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """A torch file read with ``weights_only=True`` (tensors, numbers, strings and containers
    of them). Pickled Python objects are refused, never run."""
    path = _existing(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = _PICKLE_GLOBAL.search(str(err))
        names = [found[1]] if found else _pickled_globals(path)
        if names is not None:
            shown = f" ({', '.join(names[:3])})" if names else ""
            raise FileReadError(
                f"{what} '{path}' holds pickled Python objects{shown}, "
                "which kdforge never loads (they can run code); "
                "save plain tensors instead: torch.save(model.state_dict(), path), or a .safetensors file"
            ) from None
        raise FileReadError(f"{what} '{path}' is not a readable PyTorch file: it is truncated or damaged") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:  # KeyError: no pickle
        raise FileReadError(
            f"{what} '{path}' is not a readable PyTorch file ({short_reason(err)}): it is truncated or damaged"
        ) from None


def _pickled_globals(path: Path) -> list[str] | None:
    """The Python names a plain pickle file (not a torch archive) would import, read from its opcodes without
    running any; None when the file is no whole pickle."""
    import pickletools

    strings: list[str] = []
    names: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(path.read_bytes()):
            if opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    except (ValueError, EOFError):
        return None
    return list(dict.fromkeys(names))


def load_safetensors(
    path: str | Path, device: str | torch.device = "cpu", what: str = "weights file"
) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a torch pickle under that name, or a damaged
    file, is refused with what it is."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = _existing(path, what)
    with path.open("rb") as handle:
        head = handle.read(9)
    # a zip (torch.save) or a raw pickle stream; a safetensors file starts with its header's length (whose first byte
    # may be 0x80 too) and then the header's "{"
    if head[:2] == b"PK" or (head[:1] == b"\x80" and head[8:9] != b"{"):
        raise FileReadError(
            f"{what} '{path}' is named .safetensors but is a PyTorch pickle file; "
            "rename it to .pt (kdforge reads those with weights_only=True) or convert it with "
            "safetensors.torch.save_file"
        )
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), "pt") as opened:
            aliases = json.loads((opened.metadata() or {}).get(ALIASES, "{}"))
        return {**tensors, **{alias: tensors[name] for alias, name in aliases.items()}}
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise FileReadError(
            f"{what} '{path}' is not a valid safetensors file ({short_reason(err)}): it is truncated or damaged"
        ) from None


def load_npy(
    path: str | Path, mmap_mode: Literal["r+", "r", "w+", "c"] | None = None, what: str = "array file"
) -> np.ndarray:
    """A ``.npy`` array of numbers or strings (memory-mapped with ``mmap_mode``); object arrays are refused."""
    path = _existing(path, what)
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _unreadable(err, path, what, ".npy array") from None
    return _plain(array, path, what)


def random_access(array: np.ndarray) -> np.ndarray:
    """``array`` itself; when it is memory-mapped, the kernel is told its pages are read at random (rows
    drawn by a shuffled order): without the advice each row read pulls ~100 KB of its neighbours into
    memory with it (a 1M x 1536 table showed 4 GB of resident pages after 19,200 rows)."""
    import mmap

    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)
    return array


def check_finite(array: Any, where: str, rows: int = 4096) -> None:
    """Refuse an array of real or complex numbers holding a NaN or an infinity, naming ``where`` it came from
    and the first row that holds one. Read ``rows`` rows at a time, so a memory-mapped array (or a zarr
    store) stays on disk; one pass over it."""
    if np.dtype(array.dtype).kind not in "fc":
        return
    for start in range(0, array.shape[0], rows):
        bad = ~np.isfinite(np.asarray(array[start : start + rows]))
        if bad.any():
            row = start + int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])
            raise FileReadError(
                f"{where} holds NaN or infinite values (the first in row {row}); a model cannot learn from them: "
                "clean or drop those rows"
            )


def load_npz(path: str | Path, what: str = "array file") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read now (numbers or strings; object arrays are refused)."""
    path = _existing(path, what)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _unreadable(err, path, what, ".npz archive") from None
    return {key: _plain(array, path, what, key) for key, array in arrays.items()}


def _plain(array: np.ndarray, path: Path, what: str, key: str | None = None) -> np.ndarray:
    """Numbers or strings: what an array can hold without pickling."""
    if array.dtype.kind not in "biufcUS":
        name = f"'{key}' in " if key else ""
        raise FileReadError(f"{what} {name}'{path}' holds {array.dtype} values; kdforge reads numbers and strings only")
    return array


def _unreadable(err: BaseException, path: Path, what: str, kind: str) -> FileReadError:
    """Why NumPy could not read ``path``: it holds Python objects, or it is damaged. (NumPy
    takes any file that is neither ``.npy`` nor ``.npz`` for a pickle: its first bytes decide.)"""
    with path.open("rb") as handle:
        start = handle.read(6)
    numpy_or_pickle = start.startswith((b"\x93NUMPY", b"PK", b"\x80"))
    if numpy_or_pickle and isinstance(err, ValueError) and "object" in str(err).lower():
        return FileReadError(
            f"{what} '{path}' holds Python objects (an object-dtype array), which kdforge never loads (they can run "
            "code); "
            "save a numeric array (np.asarray(values, dtype=np.float32))"
        )
    return FileReadError(f"{what} '{path}' is not a readable {kind} ({short_reason(err)}): it is truncated or damaged")


def short_reason(err: BaseException) -> str:
    """An error's text on one line, cut to a length a message can quote."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def causes(err: BaseException) -> list[BaseException]:
    """``err`` and the errors behind it (its cause, or the error it was raised while handling), in order: libraries
    wrap the error that tells what happened in their own."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def out_of_room(err: BaseException) -> bool:
    """Whether ``err`` (or an error behind it) is a disk with no room left: full, over quota, or over the file size
    limit."""
    room = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return any(isinstance(cause, OSError) and cause.errno in room for cause in causes(err))


# ---------------------------------------------------------------- writing


class _Recorder:
    """A binary file handle that remembers the first OSError its writes raised (libraries
    such as torch wrap it in their own error)."""

    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


class _Counter:
    """A sink that only counts bytes: how much space a write needs."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        self.size += len(memoryview(data).cast("B"))
        return len(data)

    def flush(self) -> None:
        pass


def _open_tmp(path: Path) -> IO[bytes]:
    """Where an atomic write's bytes go first (tests replace it to simulate a full disk)."""
    return open(path, "wb")


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on ``<path>.tmp``, fsync it, and rename it over ``path``.

    If anything fails, the temporary file is removed and ``path`` is as it was. A full disk
    raises :class:`FileWriteError` with the space the file needs and the space free.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    recorder = None
    try:
        with _open_tmp(tmp) as handle:
            recorder = _Recorder(handle)
            write(cast(IO[bytes], recorder))  # a file object in all but name
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = (recorder.error if recorder is not None else None) or (err if isinstance(err, OSError) else None)
        if cause is None:
            raise
        raise _write_error(path, cause, write) from None
    _fsync_folder(path.parent)
    return path


def write_folder_atomic(path: str | Path, fill: Callable[[Path], Any]) -> Path:
    """Call ``fill(folder)`` on an empty ``<path>.tmp`` folder, then put it in place of ``path`` (a folder
    written by another library, e.g. ``save_pretrained``). If ``fill`` fails, ``path`` is as it was."""
    path = Path(path)
    tmp, old = path.with_name(path.name + TMP_SUFFIX), path.with_name(path.name + ".old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise FileWriteError(f"could not write '{path}': {err.strerror or err}") from None
        raise
    if path.exists():
        os.replace(path, old)  # a folder cannot be renamed over another: the old one steps aside, then goes
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_folder(path.parent)
    return path


def _write_error(path: Path, err: OSError, write: Callable[[IO[bytes]], Any]) -> FileWriteError:
    kept = f"the previous '{path.name}' is intact" if path.exists() else f"no '{path.name}' was written"
    if out_of_room(err):
        counter = _Counter()
        try:
            write(cast(IO[bytes], counter))
            needed = f"it needs {_size(counter.size)}, "
        except Exception:  # the size is a courtesy: never hide the real error behind another
            needed = ""
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        reason = (err.strerror or "no space left on device").lower()
        return FileWriteError(
            f"could not write '{path}': {reason} ({needed}{_size(free)} free there); {kept}. "
            "Free some space (or set log.dir elsewhere) and run again; kdforge train --resume RUN_DIR continues a run"
        )
    return FileWriteError(f"could not write '{path}': {err.strerror or err}; {kept}")


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, value: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(value, indent=indent) + "\n")


def save_torch(value: Any, path: str | Path) -> Path:
    """``torch.save`` through an atomic write."""
    return write_atomic(path, lambda handle: torch.save(value, handle))


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path) -> Path:
    """A ``.safetensors`` file of ``tensors`` (moved to CPU, made contiguous), atomically. A tensor stored under
    two names (tied weights: a language model's embedding and head) is written once, the other name recorded
    as its alias, which :func:`load_safetensors` gives back."""
    from safetensors.torch import save

    first: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr()
        view = (storage, tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
        if tensor.numel() and view in first:
            aliases[name] = first[view]
        else:
            first.setdefault(view, name)
    kept = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if k not in aliases}
    return write_bytes(path, save(kept, metadata={ALIASES: json.dumps(aliases)} if aliases else None))


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    return write_atomic(path, lambda handle: np.save(handle, array, allow_pickle=False))


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Several arrays in one uncompressed ``.npz`` archive."""
    # numpy's stub reads **kwds as its allow_pickle flag
    return write_atomic(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]


def save_figure(fig: Any, path: str | Path, **options: Any) -> Path:
    """A matplotlib figure, in the format its suffix names."""
    path = Path(path)
    return write_atomic(path, lambda handle: fig.savefig(handle, format=path.suffix.lstrip("."), **options))


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to a log (``metrics.jsonl``): what is already there stays as it is."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as err:
        raise FileWriteError(
            f"could not append to '{path}': {err.strerror or err}; the lines already there are intact. "
            "Free some space (or set log.dir elsewhere); kdforge train --resume RUN_DIR continues the run"
        ) from None


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove what interrupted atomic writes left under ``folder``; returns what was removed."""
    folder = Path(folder)
    stale = [p for p in folder.rglob(f"*{TMP_SUFFIX}") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_writable(folder: str | Path, what: str) -> Path:
    """Make ``folder`` (and its parents) and prove a file can be written there, before any work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".kdforge-write-check-{uuid.uuid4().hex}{TMP_SUFFIX}"  # one per caller, even in threads
        write_bytes(probe, b"ok")
        probe.unlink()
    except FileExistsError:
        raise FileWriteError(
            f"{what} '{folder}' cannot be made: a file of that name is in the way; remove it or choose another folder"
        ) from None
    except (OSError, FileWriteError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise FileWriteError(
            f"{what} '{folder}' is not writable ({reason}); choose a folder you can write to"
        ) from None
    return folder
