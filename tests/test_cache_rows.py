"""The .npy caches written and read a block of rows at a time: np.save's bytes, and no growth in memory."""
import numpy as np
import pytest

from stages.lib.cache import RowReader, RowWriter

MIB = 1 << 20


def resident_mib() -> float:
    """This process's resident memory, file pages of memory maps included (what `time -f %M` reports)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def test_rows_written_in_blocks_are_np_save_s_bytes_and_read_back_exactly(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, (10, 4, 3, 3), dtype=np.uint8)
    with RowWriter(tmp_path / "blocks.npy", rows.shape, np.uint8) as cache:
        for start in range(0, 10, 4):
            cache.append(rows[start:start + 4])
    np.save(tmp_path / "whole.npy", rows)
    assert (tmp_path / "blocks.npy").read_bytes() == (tmp_path / "whole.npy").read_bytes()
    reader = RowReader(tmp_path / "blocks.npy")
    assert len(reader) == 10 and reader.shape == rows.shape
    for block in (slice(0, 4), slice(8, 12), slice(3, 3), slice(None)):
        np.testing.assert_array_equal(reader[block], rows[block])


def test_missing_rows_are_an_error_on_either_side(tmp_path):
    with pytest.raises(ValueError, match="3 rows written of 5"):
        with RowWriter(tmp_path / "short.npy", (5, 2), np.float32) as cache:
            cache.append(np.zeros((3, 2), np.float32))
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.zeros((5, 2), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:-8])
    with pytest.raises(ValueError, match="shorter than its header says"):
        RowReader(truncated)[3:5]


def test_reading_a_cache_through_keeps_memory_flat(tmp_path):
    path = tmp_path / "cache.npy"
    with RowWriter(path, (64, MIB), np.uint8) as cache:  # 64 MiB
        for _ in range(64):
            cache.append(np.ones((1, MIB), np.uint8))
    reader, before = RowReader(path), resident_mib()
    assert sum(int(reader[row:row + 4][0, 0]) for row in range(0, 64, 4)) == 16
    read_growth = resident_mib() - before
    mapped, before = np.load(path, mmap_mode="r"), resident_mib()
    assert sum(int(mapped[row:row + 4].sum() > 0) for row in range(0, 64, 4)) == 16
    mapped_growth = resident_mib() - before
    assert mapped_growth > 48, mapped_growth  # a map keeps every page it touched resident: why RowReader reads
    assert read_growth < 16, read_growth


def test_a_header_claiming_more_than_the_file_holds_is_refused_before_any_read(tmp_path):
    path = tmp_path / "claims.npy"
    with open(path, "wb") as file:  # a header of 10**9 columns, and the 24 bytes of a (3, 2) float32 array
        np.lib.format.write_array_header_1_0(file, {"descr": "<f4", "fortran_order": False, "shape": (3, 10**9)})
        file.write(bytes(24))
    with pytest.raises(ValueError, match=r"claims.npy is shorter than its header says \(12,000,000,000 bytes"):
        RowReader(path)


@pytest.mark.parametrize("rows", [np.zeros((2, 4), np.float16), np.zeros((2, 8), np.float32),
                                  np.zeros((5, 4), np.float32)], ids=["float16", "twice as wide", "too many"])
def test_rows_of_another_type_width_or_count_are_refused_not_cast(tmp_path, rows):
    with pytest.raises(ValueError, match=r"given"):
        with RowWriter(tmp_path / "features.npy", (4, 4), np.float32) as cache:
            cache.append(rows)
