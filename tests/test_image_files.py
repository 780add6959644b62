"""Image files are read as people see them, and a folder's images are chosen by one rule everywhere."""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from stages import predict
from stages.lib.datasets import read_folder
from stages.lib.images import MAX_PIXELS, image_files, read_image
from stages.lib.resizing import resize_bilinear
from tests.helpers import png_claiming


def test_a_16_bit_gradient_keeps_its_order_and_range(tmp_path):
    levels = np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)
    Image.fromarray(levels).save(tmp_path / "gradient.png")
    with Image.open(tmp_path / "gradient.png") as image:
        assert image.mode in ("I;16", "I")  # stored as 16-bit levels
    gray = read_image(tmp_path / "gradient.png")[..., 0].ravel().astype(int)
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray) >= 0)  # the order of the levels is kept
    assert np.abs(gray - np.arange(1024) * 64 / 257).max() <= 1  # and their proportions


def test_the_exif_orientation_is_applied(tmp_path):
    """A phone portrait is stored sideways with orientation 6: viewers turn it 90 degrees clockwise."""
    stored = np.zeros((20, 40, 3), np.uint8)  # wide as stored: red left half, blue right half
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "portrait.png", exif=exif)
    shown = read_image(tmp_path / "portrait.png")
    assert shown.shape == (40, 20, 3)  # tall, as viewers show it
    assert shown[:20, :, 0].min() == 255 and shown[20:, :, 2].min() == 255  # the left half is now on top


@pytest.mark.parametrize("side", [13_000, 60_000])  # PIL itself warns about the first and refuses the second
def test_a_file_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_claiming(side, side))
    limit = "more than the 33,554,432 pixels an image may have here; shrink it"
    with pytest.raises(ValueError, match=rf"^cannot read image .*bomb.png: .* {limit}$"):
        read_image(tmp_path / "bomb.png")


def test_a_large_jpeg_is_decoded_reduced(tmp_path):
    Image.new("RGB", (8192, 8192), (200, 30, 30)).save(tmp_path / "large.jpg", quality=50)
    pixels = read_image(tmp_path / "large.jpg")
    assert pixels.shape[0] * pixels.shape[1] <= MAX_PIXELS < 8192 * 8192
    assert np.abs(pixels.mean(axis=(0, 1)) - (200, 30, 30)).max() < 5


def test_a_folder_is_checked_with_jpegs_decoded_at_an_eighth_and_broken_ones_still_fail(tmp_path):
    photo = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for name in ("a", "b"):
        Image.fromarray(photo).save(tmp_path / f"{name}.jpg", quality=90)
    assert read_image(tmp_path / "a.jpg", reduced=True).shape == (30, 40, 3)
    assert read_image(tmp_path / "a.jpg").shape == (240, 320, 3)
    whole = (tmp_path / "a.jpg").read_bytes()
    folder = tmp_path / "train" / "photos"
    folder.mkdir(parents=True)
    (folder / "whole.jpg").write_bytes(whole)
    (folder / "truncated.jpg").write_bytes(whole[:len(whole) // 2])  # the header is whole: only decoding fails
    broken = bytearray(whole)
    broken[len(broken) // 2:len(broken) // 2 + 50] = b"\xff" * 50
    (folder / "broken.jpg").write_bytes(bytes(broken))
    (tmp_path / "train" / "other").mkdir()
    (tmp_path / "train" / "other" / "b.jpg").write_bytes((tmp_path / "b.jpg").read_bytes())
    train, _, _, skipped = read_folder(tmp_path)
    assert sorted(skipped) == [str(folder / "broken.jpg"), str(folder / "truncated.jpg")]
    assert list(train.images.paths) == [tmp_path / "train/other/b.jpg", folder / "whole.jpg"]


def write_png(path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(path, format="PNG")


def test_the_folder_rule_is_one_and_the_same_for_datasets_and_predict(tmp_path, caplog):
    folder = tmp_path / "train" / "red"
    for name in ("a.png", "B.PNG", "nested/c.png", "d.jpeg"):
        write_png(folder / name)
    write_png(folder / "notes.txt")  # a PNG by content, but not named as an image
    write_png(folder / ".hidden.png")
    write_png(folder / ".cache" / "e.png")
    os.mkfifo(folder / "fifo.png")  # opening it would wait forever
    expected = [folder / name for name in ("B.PNG", "a.png", "d.jpeg", "nested/c.png")]
    with caplog.at_level(logging.WARNING):
        assert image_files(folder) == expected
    assert f"skipping {folder / 'fifo.png'}: not a regular file" in caplog.text
    assert predict.image_paths([str(folder)]) == expected
    write_png(tmp_path / "train" / "blue" / "f.png", (30, 30, 200))
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # not a class
    train, _, classes, skipped = read_folder(tmp_path)
    assert classes == ("blue", "red") and list(train.images.paths) == [tmp_path / "train/blue/f.png", *expected]
    assert skipped == [str(folder / "fifo.png")]


def test_a_file_name_cannot_forge_a_log_line(tmp_path, caplog):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "train" / name[0] / name)
    forged = tmp_path / "train" / "a" / "x\nerror: forged line.png"
    forged.write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        _, _, _, skipped = read_folder(tmp_path)
    assert skipped == [str(forged)]
    assert "x\\nerror: forged line.png" in caplog.text
    assert not any(line.startswith("error:") for record in caplog.records for line in record.getMessage().splitlines())


@pytest.mark.parametrize("source, target", [((32, 32), (224, 224)), ((37, 53), (64, 64)), ((500, 333), (224, 224)),
                                            ((224, 224), (32, 32)), ((7, 300), (29, 31)), ((32, 32), (32, 32))])
def test_prepare_resizes_bit_for_bit_as_the_saved_models_resize_layer(source, target):
    import keras

    images = np.random.default_rng(sum(source)).integers(0, 256, (2, *source, 3)).astype(np.uint8)
    expected = keras.ops.convert_to_numpy(keras.layers.Resizing(*target)(images.astype(np.float32)))
    resized = resize_bilinear(images, *target)
    assert resized.dtype == np.float32 and resized.shape == expected.shape
    np.testing.assert_array_equal(resized, expected)


def jpeg_with_repeated_scans(path, repeats: int) -> None:
    """A progressive JPEG whose last scan comes `repeats` times: each decodes over the whole frame again."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        path, "JPEG", progressive=True)
    data = path.read_bytes()
    last_scan = data[data.rindex(b"\xff\xda"):data.rindex(b"\xff\xd9")]
    path.write_bytes(data[:data.rindex(b"\xff\xd9")] + last_scan * repeats + b"\xff\xd9")


def test_a_jpeg_of_absurdly_many_scans_is_refused_before_decoding(tmp_path):
    jpeg_with_repeated_scans(tmp_path / "few.jpg", 1)
    assert read_image(tmp_path / "few.jpg").shape == (64, 64, 3)
    jpeg_with_repeated_scans(tmp_path / "many.jpg", 1000)
    with pytest.raises(ValueError, match=r"many.jpg: 10\d\d JPEG scans, more than the 100 an image may have"):
        read_image(tmp_path / "many.jpg")


def test_a_folder_dataset_stays_inside_its_folder_and_each_file_in_one_class(tmp_path, caplog):
    root, elsewhere = tmp_path / "dataset", tmp_path / "elsewhere"
    write_png(root / "train/red/a.png")
    write_png(elsewhere / "b.png")
    (root / "train/blue").symlink_to(elsewhere)  # a class folder that leads out of the dataset
    with pytest.raises(ValueError, match=r"^data.path: .*train/blue links to .*elsewhere, outside .*; copy or move"):
        read_folder(root)
    (root / "train/blue").unlink()
    (root / "train/blue").symlink_to(root / "train/red")  # the same images under a second class
    with pytest.raises(ValueError, match=r"^data.path: .*red/a.png and .*blue/a.png are one file"):
        read_folder(root)
    (root / "train/blue").unlink()
    write_png(root / "train/blue/c.png", (30, 30, 200))
    (root / "train/blue/d.png").symlink_to(elsewhere / "b.png")  # one file that leads out
    with caplog.at_level(logging.WARNING):
        train, _, classes, skipped = read_folder(root)
    assert list(train.images.paths) == [root / "train/blue/c.png", root / "train/red/a.png"]
    assert skipped == [str(root / "train/blue/d.png")] and "a link to a file outside data.path" in caplog.text


def test_a_copy_of_an_image_in_another_class_is_reported(tmp_path, caplog):
    write_png(tmp_path / "train/red/a.png")
    (tmp_path / "train/blue").mkdir()
    (tmp_path / "train/blue/copy.png").write_bytes((tmp_path / "train/red/a.png").read_bytes())
    write_png(tmp_path / "train/blue/own.png", (30, 30, 200))
    with caplog.at_level(logging.WARNING):
        train, _, _, _ = read_folder(tmp_path)
    assert len(train.images) == 3  # reported, not dropped: which label is right is the user's call
    assert f"{tmp_path / 'train/red/a.png'} holds the same bytes as {tmp_path / 'train/blue/copy.png'}" in caplog.text
