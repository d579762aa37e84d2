"""``download: true``: the standard datasets' files come over real HTTP from a local server standing in for the
official ones (``KDFORGE_DATA_MIRROR``), are checked against their checksums, unpacked and read. The files served
are small ones the test writes in the official formats, so the test gives their checksums in place of the
published ones; everything else runs as it does against the real servers."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import resource
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from datafiles import cifar_records
from kdforge.data import build_dataset
from kdforge.data import download as downloads
from kdforge.errors import KdforgeError
from kdforge.pretrained import recording


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1, set as KDFORGE_DATA_MIRROR; ``publish(name, data, dataset)``
    puts a file there and makes its MD5 the expected one. Yields (folder, the requests made)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Logged(Quiet):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Logged, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(downloads.MIRROR, f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    remotes = {key: list(value) for key, value in downloads.REMOTES.items()}
    monkeypatch.setattr(downloads, "REMOTES", remotes)

    def publish(dataset, index, data):
        remote = remotes[dataset][index]
        (served / remote.name).write_bytes(data)
        remotes[dataset][index] = downloads.Remote(remote.url, hashlib.md5(data).hexdigest(), remote.members)

    yield served, requests, publish
    server.shutdown()
    server.server_close()


def cifar10_archive(n=20):
    """The official archive's layout (cifar-10-batches-bin/...), with ``n`` records per file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, member in enumerate(downloads.REMOTES["cifar10"][0].members):
            data, _ = cifar_records(n, 10, seed=i)
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def idx_gz(array):
    path = io.BytesIO()
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.write(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path.getvalue()


def test_cifar_downloads_checks_unpacks_and_reads_then_reuses_what_is_there(mirror, tmp_path):
    served, requests, publish = mirror
    publish("cifar10", 0, cifar10_archive())
    folder = tmp_path / "data" / "cifar10"  # does not exist yet
    with recording() as sources:
        bundle = build_dataset("cifar", path=str(folder), download=True, seed=0, val_fraction=0.2)
    assert requests == ["/cifar-10-binary.tar.gz"] and bundle.num_classes == 10
    assert len(bundle.test) == 20 and len(bundle.train) + len(bundle.val) == 100
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".bin") == sorted(
        p.rsplit("/", 1)[1] for p in downloads.REMOTES["cifar10"][0].members
    )
    assert sources[0]["id"] == "cifar10/cifar-10-binary.tar.gz" and sources[0]["md5"] == downloads.md5_of(
        folder / "cifar-10-binary.tar.gz"
    )
    build_dataset("cifar", path=str(folder), download=True, seed=0)
    assert len(requests) == 1  # its files are there: nothing fetched again


def test_mnist_variants_download_their_four_files(mirror, tmp_path):
    served, requests, publish = mirror
    rng = np.random.default_rng(0)
    labels = {"train": np.arange(30) % 10, "t10k": np.arange(10)}
    for index, name in enumerate(downloads._IDX):
        part = name.split("-")[0]
        kind = "images" if "images" in name else "labels"
        array = rng.integers(0, 256, size=(len(labels[part]), 28, 28)) if kind == "images" else labels[part]
        publish("kmnist", index, idx_gz(np.asarray(array)))
    bundle = build_dataset("mnist", path=str(tmp_path / "k"), download=True, variant="kmnist", seed=0)
    assert len(requests) == 4 and bundle.num_classes == 10 and len(bundle.test) == 10


def test_a_damaged_download_is_refused_and_nothing_of_it_is_kept(mirror, tmp_path):
    served, requests, publish = mirror
    archive = cifar10_archive()
    publish("cifar10", 0, archive)
    (served / "cifar-10-binary.tar.gz").write_bytes(archive[:-100] + b"\0" * 100)  # corrupted on the way
    folder = tmp_path / "c10"
    with pytest.raises(KdforgeError, match=r"has MD5 [0-9a-f]{32}, not the published [0-9a-f]{32}.*was deleted"):
        build_dataset("cifar", path=str(folder), download=True, seed=0)
    assert list(folder.iterdir()) == []  # no half file, no .part, nothing a later run would trust


def test_offline_a_missing_dataset_is_one_message(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KdforgeError, match="is missing and downloads are off"):
        build_dataset("mnist", path=str(tmp_path / "m"), download=True, seed=0)
    assert mirror[1] == []


def test_an_unreachable_server_is_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv(downloads.MIRROR, "http://127.0.0.1:9/")  # the discard port: nothing listens
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(KdforgeError, match="downloading http://127.0.0.1:9/train-images-idx3-ubyte.gz failed"):
        build_dataset("mnist", path=str(tmp_path / "m"), download=True, seed=0)


class Cut(Quiet):
    """Sends a file's headers and half of it, then hangs up: a connection lost midway."""

    def do_GET(self):
        data = (self.server.served / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


def test_a_download_cut_off_midway_is_one_message_and_leaves_nothing(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / "cifar-10-binary.tar.gz").write_bytes(cifar10_archive())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    server.served = served
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(downloads.MIRROR, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    folder = tmp_path / "c10"
    try:
        with pytest.raises(KdforgeError, match="downloading http://127.0.0.1:.*/cifar-10-binary.tar.gz failed"):
            build_dataset("cifar", path=str(folder), download=True, seed=0)
    finally:
        server.shutdown()
        server.server_close()
    assert list(folder.iterdir()) == []


def test_a_full_disk_is_one_message_and_leaves_nothing(mirror, tmp_path):
    """The disk runs out of room midway (here: the process's file size limit, which fails a write as a full disk
    does)."""
    archive = cifar10_archive()
    mirror[2]("cifar10", 0, archive)
    folder = tmp_path / "c10"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(archive) // 2, hard))  # Python ignores SIGXFSZ: writes fail
    try:
        with pytest.raises(
            KdforgeError, match=r"no room left to write '.*cifar-10-binary\.tar\.gz\.part' \(.*too large"
        ):
            build_dataset("cifar", path=str(folder), download=True, seed=0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(folder.iterdir()) == []


def test_what_a_killed_download_left_is_never_trusted(mirror, tmp_path):
    """A kill during a download leaves ``.part`` (or, from elsewhere, a damaged archive): neither is read."""
    served, requests, publish = mirror
    archive = cifar10_archive()
    publish("cifar10", 0, archive)
    folder = tmp_path / "c10"
    folder.mkdir()
    (folder / "cifar-10-binary.tar.gz.part").write_bytes(archive[:1000])  # where a killed download stopped
    (folder / "cifar-10-binary.tar.gz").write_bytes(archive[:5000])  # a damaged archive in its place
    bundle = build_dataset("cifar", path=str(folder), download=True, seed=0)
    assert requests == ["/cifar-10-binary.tar.gz"] and len(bundle.test) == 20  # fetched again, checked, read
    assert not (folder / "cifar-10-binary.tar.gz.part").exists()
