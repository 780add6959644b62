"""Image files: which files in a folder are images, and reading one safely (pixel limit, EXIF
orientation, 16-bit grayscale), for folder datasets and for predict."""
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from stages.lib.quoting import shown

log = logging.getLogger("images")

# A folder's images: files with these suffixes, in any case, in the folder and its sub-folders.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
# The most pixels one image may decode to: an 8K frame (7680x4320, 33.2M) fits, and on its way to the
# cache such an image takes at most about 0.6 GB (decoded, as RGB, as float32 for resizing). A file that
# claims more is skipped like any unreadable file, however small it is; a JPEG is first decoded reduced.
MAX_PIXELS = 2**25
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# A progressive JPEG refines the image scan by scan, about ten of them; each is decoded over the whole
# frame, so a file repeating one scan a thousand times costs a thousand decodes at the pixel limit.
MAX_JPEG_SCANS = 100
START_OF_SCAN = b"\xff\xda"  # never inside compressed data, where a 0xff byte is followed by 0x00 or a restart


def read_image(path: Path, reduced: bool = False) -> np.ndarray:
    """An image file as uint8 RGB, turned as its EXIF orientation says (as viewers show it), or ValueError.

    Grayscale, palette and alpha are converted; 16-bit grayscale is scaled to 8 bits. `reduced`: a JPEG
    is decoded at an eighth of its width and height, which reads every byte of the file (a truncated or
    broken one fails the same way) for a fraction of the work; enough to find out whether a file reads.
    """
    try:
        if not Path(path).is_file():  # a FIFO or a device: opening it could wait forever
            raise ValueError("not a regular file" if Path(path).exists() else "no such file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked below
            with Image.open(path) as image:
                if image.format == "JPEG":
                    _require_few_scans(Path(path))
                _reduce_jpeg(image, reduced)
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ValueError(f"{width}x{height} pixels is more than the {MAX_PIXELS:,} pixels an "
                                     f"image may have here; shrink it")
                return _as_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as error:  # PIL's own limit, twice its default warning size
        raise ValueError(f"cannot read image {shown(Path(path))}: it claims more than the {MAX_PIXELS:,} pixels an "
                         f"image may have here; shrink it") from error
    except Exception as error:  # whatever part of the decoder notices a malformed file
        raise ValueError(f"cannot read image {shown(Path(path))}: {shown(error)}") from error


def _require_few_scans(path: Path) -> None:
    """Count a JPEG's scans before decoding any: the pixel limit bounds memory, this bounds time."""
    scans, tail = 0, b""
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            scans += (tail + block).count(START_OF_SCAN)
            tail = block[-1:]
    if scans > MAX_JPEG_SCANS:
        raise ValueError(f"{scans} JPEG scans, more than the {MAX_JPEG_SCANS} an image may have here; "
                         f"save it again as a plain JPEG")


def _reduce_jpeg(image: Image.Image, reduced: bool) -> None:
    """JPEG decodes at 1/2, 1/4 or 1/8 scale for almost nothing: use it for photos over MAX_PIXELS, and
    the smallest scale when `reduced`."""
    width, height = image.size
    if image.format != "JPEG":
        return
    if reduced:
        image.draft("RGB", (1, 1))  # the smallest scale at least 1x1: libjpeg's 1/8
    elif width * height > MAX_PIXELS:
        # draft picks the smallest scale at least this size: under half the limit's side, so under the limit.
        shrink = 2 * (width * height / MAX_PIXELS) ** 0.5
        image.draft("RGB", (int(width / shrink) + 1, int(height / shrink) + 1))


def _as_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit levels at 255 (an almost white image): scale 0-65535 to 0-255.
        levels = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        image = Image.fromarray(((levels * 255 + 32767) // 65535).astype(np.uint8), "L")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def image_files(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """The image files in `folder` and its sub-folders, sorted; the same rule for datasets and predict.

    Names with an image suffix, in any case; hidden files and folders are left out. Only regular files
    (after following links) are kept: reading a FIFO or a device could wait forever.
    """
    found = []
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = Path(root) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not path.is_file():
                log.warning("skipping %s: not a regular file", shown(path))
                if skipped is not None:
                    skipped.append(str(path))
                continue
            found.append(path)
    return sorted(found)
