"""Memory and time are bounded by the work, never by what a small input claims to hold."""
import json
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from stages.lib.params import ParamsError, load_params
from tests.helpers import bad_archive, run_measured, write_params

# Nine lines, 414 bytes: each line nine references to the line before, 9**9 strings in all.
ALIAS_BOMB = "".join(
    f"- &a{level} [{', '.join(['lol'] * 9 if level == 0 else [f'*a{level - 1}'] * 9)}]\n" for level in range(9))


def bombed_params(tmp_path, where: str):
    write_params(tmp_path, {})
    text = (tmp_path / "params.yaml").read_text()
    bomb = ALIAS_BOMB.replace("\n", "\n    ")
    if where == "document":
        text = ALIAS_BOMB
    elif where == "section":
        text = text.replace("data:\n", f"data:\n  bomb:\n    {bomb}\n", 1)
    else:
        text = text.replace("  seed: 42\n", f"  seed:\n    {bomb}\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("where", ["document", "section", "value"])
def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, where):
    path = bombed_params(tmp_path, where)
    tracemalloc.start()
    start = time.monotonic()
    with pytest.raises(ParamsError) as error:
        load_params(path)
    seconds, (_, peak) = time.monotonic() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 5 and peak < 500e6, (seconds, peak)
    assert str(error.value).startswith(f"{path}: line ") and "aliases" in str(error.value)
    assert len(str(error.value)) < 200


def test_a_stage_given_an_alias_bomb_says_so_in_one_line_and_uses_no_more_memory(tmp_path):
    """Side by side with the same stage failing on a mistyped key: the bomb costs nothing more."""
    typo = tmp_path / "typo"
    typo.mkdir()
    write_params(typo, {"data": {"sed": 1}})
    baseline, _, baseline_peak = run_measured(typo, "-m", "stages.prepare")
    assert baseline.stderr.strip().splitlines()[-1].startswith("error: data.sed: unknown key")
    bombed_params(tmp_path, "value")
    result, _, peak = run_measured(tmp_path, "-m", "stages.prepare")
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(result.stderr) < 10_000
    assert result.stderr.strip().splitlines()[-1].startswith("error: params.yaml: line ")
    assert peak < baseline_peak + 100e6, (peak, baseline_peak)


def write_png_bomb(path, side: int) -> None:
    """A 1-bit PNG that claims side x side pixels in a few kilobytes."""
    Image.new("1", (side, side)).save(path, optimize=True)


def test_decompression_bombs_are_skipped_and_memory_stays_bounded(tmp_path):
    images = tmp_path / "images"
    for name, colour in (("dark", 40), ("light", 210)):
        folder = images / "train" / name
        folder.mkdir(parents=True)
        for index in range(12):
            Image.fromarray(np.full((24, 24, 3), colour, np.uint8)).save(folder / f"{index}.png")
    bombs = images / "train" / "dark"
    write_png_bomb(bombs / "bomb_0.png", 13_000)
    for index in range(1, 10):
        (bombs / f"bomb_{index}.png").write_bytes((bombs / "bomb_0.png").read_bytes())
    write_params(tmp_path, {"data": {"source": "folder", "path": str(images), "val_size": 4, "limit": None}})
    result, seconds, peak = run_measured(tmp_path, "-m", "stages.prepare")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "data/prepared/info.json").read_text())
    assert sorted(info["skipped_unreadable"]) == sorted(str(bombs / f"bomb_{i}.png") for i in range(10))
    assert "13000x13000 pixels is more than the 33,554,432 pixels" in result.stderr
    assert sum(info["counts"].values()) == 24
    assert peak < 1.5e9, peak


@pytest.mark.parametrize("case", ["member of 3 GB", "array of a terabyte"])
def test_an_archive_claiming_gigabytes_is_refused_before_they_are_read(tmp_path, case):
    archive = bad_archive(tmp_path, case)
    write_params(tmp_path, {"data": {"source": "cifar10", "archive": str(archive), "verify": False,
                                     "val_size": 10, "limit": None}})
    result, seconds, peak = run_measured(tmp_path, "-m", "stages.prepare")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.archive: "), result.stderr
    assert seconds < 10 and peak < 500 * 2**20, (seconds, peak / 2**20)
