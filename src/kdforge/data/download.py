"""The standard datasets' official files, fetched when a recipe says ``download: true``, as torchvision fetches
them: each file is downloaded (with a progress bar) under a temporary name, checked against its published MD5,
and only then renamed into place, so that an interrupted or damaged download is never read; an archive is then
unpacked into the dataset's ``path`` (only the files the reader needs, never a path outside it). Files already
there with the right checksum are not fetched again.

``KDFORGE_DATA_MIRROR`` replaces each file's server and folder with a base URL of your own (a mirror on a cluster,
or the tests' local server); the file names stay the official ones.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from kdforge.errors import KdforgeError
from kdforge.files import FileReadError, out_of_room, short_reason
from kdforge.pretrained import note, offline

MIRROR = "KDFORGE_DATA_MIRROR"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One official file: where it is, its published MD5, and the members to take out of it (an archive), or
    none (a file kept as it is, e.g. MNIST's gzipped idx files, which the reader reads gzipped)."""

    url: str
    md5: str
    members: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[1]

    def source(self) -> str:
        mirror = os.environ.get(MIRROR, "").rstrip("/")
        return f"{mirror}/{self.name}" if mirror else self.url


_CIFAR10 = [
    f"cifar-10-batches-bin/{name}" for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]
]
_IDX = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]

#: the files of each downloadable dataset (checksums as their authors publish them)
REMOTES: dict[str, list[Remote]] = {
    "cifar10": [
        Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            tuple(_CIFAR10),
        )
    ],
    "cifar100": [
        Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            "03b5dce01913d631647c71ecec9e9cb8",
            ("cifar-100-binary/train.bin", "cifar-100-binary/test.bin"),
        )
    ],
    "mnist": [
        Remote(f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}", md5)
        for name, md5 in zip(
            _IDX,
            [
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ],
        )
    ],
    "fashion_mnist": [
        Remote(f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}", md5)
        for name, md5 in zip(
            _IDX,
            [
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ],
        )
    ],
    "kmnist": [
        Remote(f"http://codh.rois.ac.jp/kmnist/dataset/kmnist/{name}", md5)
        for name, md5 in zip(
            _IDX,
            [
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ],
        )
    ],
}


def fetch_dataset(dataset: str, folder: Path) -> None:
    """Make ``folder`` hold ``dataset``'s files (a key of :data:`REMOTES`): what is missing is downloaded and
    checked, archives are unpacked; each file is recorded (for ``results.json``) with its URL and checksum."""
    folder.mkdir(parents=True, exist_ok=True)
    for remote in REMOTES[dataset]:
        wanted = [folder / Path(member).name for member in remote.members] or [folder / remote.name]
        if not all(path.is_file() for path in wanted):
            archive = folder / remote.name
            if not (archive.is_file() and md5_of(archive) == remote.md5):
                download(remote, archive)
            if remote.members:
                unpack(archive, remote.members, folder)
        note({"id": f"{dataset}/{remote.name}", "what": "dataset file", "url": remote.source(), "md5": remote.md5,
              "path": str(folder)})  # fmt: skip


def download(remote: Remote, target: Path) -> None:
    """``remote`` to ``target``, through ``target``.part; refused (and removed) unless its MD5 is the published one."""
    source = remote.source()
    if offline():
        raise KdforgeError(
            f"'{target}' is missing and downloads are off (HF_HUB_OFFLINE): download it where there is a network "
            f"(from {source}), or run once without --offline"
        )
    part = target.with_name(target.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(urllib.request.Request(source, headers={"User-Agent": "kdforge"})) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with part.open("wb") as out, _bar() as bar:
                task = bar.add_task(f"downloading {remote.name}", total=size)
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.advance(task, len(chunk))
            if size is not None and received < size:
                raise http.client.IncompleteRead(b"", size - received)
    except (URLError, OSError, http.client.HTTPException) as err:  # refused, unreachable, or cut off midway
        part.unlink(missing_ok=True)
        if out_of_room(err):
            raise KdforgeError(
                f"no room left to write '{part}' ({short_reason(err)}): free space on that disk, or give a path on "
                "another, and run the command again"
            ) from None
        raise KdforgeError(f"downloading {source} failed ({err!r}); run the command again") from None
    except BaseException:  # Ctrl-C or a kill: nothing half-written stays to be trusted
        part.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != remote.md5:
        part.unlink()
        raise FileReadError(
            f"the file downloaded from {source} has MD5 {digest.hexdigest()}, not the published {remote.md5}: it is "
            "damaged or not the official file, and was deleted; run the command again (or check "
            f"{MIRROR}, if you set it)"
        )
    part.replace(target)


def _bar() -> Progress:
    """A download's progress bar (size, speed, time left), on stderr, gone when done."""
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    return Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def unpack(archive: Path, members: tuple[str, ...], folder: Path) -> None:
    """Take ``members`` out of the tar ``archive`` into ``folder`` (by their base names)."""
    try:
        with tarfile.open(archive) as tar:
            for member in members:
                source = tar.extractfile(member)
                if source is None:
                    raise KeyError(member)
                part = folder / (Path(member).name + ".part")
                with source, part.open("wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                part.replace(folder / Path(member).name)
    except (tarfile.TarError, KeyError, EOFError, OSError) as err:
        raise FileReadError(f"archive '{archive}' cannot be unpacked ({err}); delete it and run again") from None


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
