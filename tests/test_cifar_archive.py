"""The CIFAR-10 reader: pixel- and label-exact on a fabricated archive, and safe on a hostile one."""
import hashlib
import io
import pickle
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from stages.lib import cifar10
from stages.lib.datasets import synthetic_split
from stages.lib.params import OFFLINE_RUN
from tests.helpers import cifar_batch, fabricated_cifar, write_tarball


def test_reads_every_batch_pixel_and_label_exact(tmp_path):
    archive, splits = fabricated_cifar(tmp_path / "cifar.tar.gz")
    train, test = cifar10.read(archive)
    expected_train = np.concatenate([splits[f"data_batch_{i}"][0] for i in range(1, 6)])
    expected_labels = np.concatenate([splits[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert train.images.shape == (25, 32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, expected_train)
    np.testing.assert_array_equal(train.labels, expected_labels)
    np.testing.assert_array_equal(test.images, splits["test_batch"][0])
    np.testing.assert_array_equal(test.labels, splits["test_batch"][1])


def test_channel_order_is_red_green_blue(tmp_path):
    # The format stores 1024 red values, then 1024 green, then 1024 blue.
    row = np.concatenate([np.full(1024, 200), np.full(1024, 100), np.full(1024, 50)]).astype(np.uint8)
    batch = pickle.dumps({b"data": row[None, :], b"labels": [3]}, protocol=2)
    members = {f"cifar-10-batches-py/{name}": batch for name in (*cifar10.TRAIN_BATCHES, "test_batch")}
    train, _ = cifar10.read(write_tarball(tmp_path / "rgb.tar.gz", members))
    assert train.images[0, 5, 7].tolist() == [200, 100, 50]
    assert train.labels.tolist() == [3] * 5


def test_a_wrong_checksum_is_an_error_when_verifying(tmp_path):
    archive, _ = fabricated_cifar(tmp_path / "cifar.tar.gz")
    with pytest.raises(ValueError, match=r"data.archive: .*not the official 6d958be0.*data.verify: false"):
        cifar10.verify(archive, verify=True)


def test_an_unverified_archive_is_accepted_with_a_warning(tmp_path, caplog):
    archive, _ = fabricated_cifar(tmp_path / "cifar.tar.gz")
    checksum = cifar10.verify(archive, verify=False)
    assert checksum == cifar10.sha256_of(archive) and len(checksum) == 64
    assert "data.verify is false" in caplog.text


def test_a_crafted_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    members = {f"cifar-10-batches-py/{name}": pickle.dumps(Payload(), protocol=2)
               for name in (*cifar10.TRAIN_BATCHES, "test_batch")}
    with pytest.raises(ValueError, match="is not a CIFAR-10 batch.*refusing to load"):
        cifar10.read(write_tarball(tmp_path / "evil.tar.gz", members))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd-like", "cifar-10-batches-py/../../up"])
def test_members_that_climb_out_are_rejected(tmp_path, name):
    archive = write_tarball(tmp_path / "climb.tar.gz", {name: b"x"})
    with pytest.raises(ValueError, match="refusing unsafe member"):
        cifar10.read(archive)


def test_link_members_are_rejected(tmp_path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match="refusing unsafe member"):
        cifar10.read(archive)


def test_a_truncated_archive_is_a_clear_error(tmp_path):
    archive, _ = fabricated_cifar(tmp_path / "cifar.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable tar.gz archive"):
        cifar10.read(archive)


def test_labels_outside_0_to_9_are_an_error(tmp_path):
    images = np.zeros((2, 32, 32, 3), np.uint8)
    members = {f"cifar-10-batches-py/{name}": cifar_batch(images, [1, 12])
               for name in (*cifar10.TRAIN_BATCHES, "test_batch")}
    with pytest.raises(ValueError, match="integer labels in 0-9"):
        cifar10.read(write_tarball(tmp_path / "labels.tar.gz", members))


def test_a_missing_batch_is_named(tmp_path):
    images = np.zeros((1, 32, 32, 3), np.uint8)
    members = {f"cifar-10-batches-py/{name}": cifar_batch(images, [0]) for name in cifar10.TRAIN_BATCHES}
    with pytest.raises(ValueError, match="lacks test_batch"):
        cifar10.read(write_tarball(tmp_path / "partial.tar.gz", members))


def test_download_writes_the_archive_whole(tmp_path, monkeypatch):
    source, _ = fabricated_cifar(tmp_path / "source.tar.gz")
    monkeypatch.setattr(cifar10, "URL", source.as_uri())
    target = tmp_path / "raw" / "cifar-10-python.tar.gz"
    cifar10.download(target, target)
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_the_download_shows_a_progress_bar_in_a_terminal(tmp_path, monkeypatch):
    source, _ = fabricated_cifar(tmp_path / "source.tar.gz")
    monkeypatch.setattr(cifar10, "URL", source.as_uri())
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", terminal)
    cifar10.download(tmp_path / "archive.tar.gz", tmp_path / "archive.tar.gz")
    assert "CIFAR-10: 100%" in terminal.getvalue(), terminal.getvalue()


def test_a_failed_download_says_where_to_put_the_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "URL", (tmp_path / "nowhere.tar.gz").as_uri())
    archive = tmp_path / "raw" / "cifar-10-python.tar.gz"
    with pytest.raises(FileNotFoundError, match=rf"download it by hand to {archive}") as error:
        cifar10.locate(archive)
    assert str(error.value).endswith(f"run on synthetic data offline: {OFFLINE_RUN}")  # a command to paste
    assert not archive.exists() and not cifar10.shared_archive().exists()
    assert not list(tmp_path.rglob("*partial*"))


def test_runs_without_the_archive_share_one_download(tmp_path, monkeypatch):
    """Queued experiments start in fresh workspaces without data/raw: the first downloads the shared copy
    while the others wait for it, then all read it."""
    source, _ = fabricated_cifar(tmp_path / "source.tar.gz")
    monkeypatch.setattr(cifar10, "URL", source.as_uri())
    downloads, download = [], cifar10.download

    def slow_download(target, archive):
        downloads.append(target)
        time.sleep(0.5)  # long enough for every other run to find the copy missing and queue on the lock
        download(target, archive)

    monkeypatch.setattr(cifar10, "download", slow_download)
    workspaces = [tmp_path / f"workspace-{index}" / "data/raw/cifar-10-python.tar.gz" for index in range(3)]
    with ThreadPoolExecutor(len(workspaces)) as runs:
        located = list(runs.map(cifar10.locate, workspaces))
    assert downloads == [cifar10.shared_archive()]
    assert located == [cifar10.shared_archive()] * 3
    assert cifar10.shared_archive().read_bytes() == source.read_bytes()
    assert not any(workspace.exists() for workspace in workspaces)


def test_synthetic_data_is_deterministic_and_balanced():
    first, second = synthetic_split(200, seed=7, split_index=0), synthetic_split(200, seed=7, split_index=0)
    np.testing.assert_array_equal(first.images, second.images)
    assert np.bincount(first.labels).tolist() == [20] * 10
    assert first.images.shape == (200, 32, 32, 3) and first.images.dtype == np.uint8
    assert not np.array_equal(first.images, synthetic_split(200, seed=7, split_index=1).images)


def test_the_synthetic_images_are_the_ones_the_tests_thresholds_were_measured_on():
    # The digest of 5,600 images (two chunks of the random stream, many blocks of noise) as first generated:
    # a change to how they are drawn would silently move every accuracy the tests expect.
    images = synthetic_split(5600, seed=42, split_index=0).images
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "eafa9b9fad7d19c6618e59751f4a19a45e2f628ee74102cce4f21a8eb86732cb")


@pytest.mark.parametrize("where", ["/dev/zero", "a folder"])
def test_an_archive_path_that_is_not_a_file_is_named_and_never_downloaded_over(tmp_path, monkeypatch, where):
    archive = tmp_path if where == "a folder" else Path(where)
    monkeypatch.setattr(cifar10, "download", lambda *args: pytest.fail("it would download"))
    with pytest.raises(ValueError, match=rf"^data.archive: {archive} is not a regular file; point it at"):
        cifar10.locate(archive)
