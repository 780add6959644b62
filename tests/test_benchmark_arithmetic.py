"""The benchmark's arithmetic: the extrapolated crossover, the counted forward FLOPs, the suites' ratios."""
import os
import shutil
import subprocess

import keras
import pytest

from benchmarks.linear_probe import HEAD_FIT, timing
from benchmarks.run import crossover, parse_args
from benchmarks.startup import PHASES, TIMED, timed_function
from benchmarks.throughput import forward_flops
from tests.helpers import GIT_IDENTITY, REPO


def test_crossover_finds_where_the_ratio_reaches_eight():
    rows = [{"images": n, "ours_seconds": 100 + 0.1 * n, "seed_seconds": 10 + 1.0 * n} for n in (100, 400)]
    line = crossover(rows)
    assert line["limit_ratio"] == pytest.approx(10)
    assert line["reaches_target_from_images"] == pytest.approx(3950)  # 8 * (100 + 0.1 n) = 10 + n
    slower = [{**row, "seed_seconds": 10 + 0.5 * row["images"]} for row in rows]
    assert crossover(slower)["reaches_target_from_images"] is None  # tends to 5x: never 8x


def test_one_size_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--sizes", "1440"])
    assert "--sizes needs two sizes or more" in capsys.readouterr().err
    assert parse_args(["--sizes", "60,1440"]).sizes == [60, 1440]


def test_forward_flops_count_each_kernel_weight_once_per_output_position():
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    features = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(features)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    assert forward_flops(model) == 2 * (8 * 8 * 3 * 3 * 3 * 4 + 4 * 4 * 3 * 3 * 4 + 4 * 5)


def test_the_presets_set_their_sizes_and_exclude_each_other(capsys):
    large = parse_args(["--large"])
    assert (large.sizes, large.image_size) == ([2000, 12000], 64)
    assert parse_args(["--large", "--sizes", "100,200"]).sizes == [100, 200]  # an option given wins
    with pytest.raises(SystemExit):
        parse_args(["--quick", "--large"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_each_timed_phase_names_a_function_that_exists():
    # A Keras release that moves fit or save would otherwise leave its phase at 0 s without a word.
    for phase in TIMED:
        owner, name = timed_function(phase)
        assert callable(getattr(owner, name)), phase
    assert set(TIMED) < set(PHASES)


def test_each_head_fit_the_linear_probe_times_exists_and_an_uncalled_one_is_an_error():
    for head, (owner, name) in HEAD_FIT.items():
        assert callable(getattr(owner, name)), head
    with pytest.raises(RuntimeError, match="stages.train.fit was never called"):
        with timing(*HEAD_FIT["mlp"]):
            pass


def commit_ci_run(repo, last_line: str, status: int) -> None:
    """A commit whose `.ci/run` only prints a last line, as pytest's summary would be, and exits."""
    (repo / ".ci/run").write_text(f"echo '{last_line}'\nexit {status}\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", last_line], cwd=repo, check=True, env={**os.environ, **GIT_IDENTITY})


def test_suite_time_gives_each_commits_suite_as_a_ratio_to_the_first(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks/suite_time.sh", repo / "benchmarks")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    commit_ci_run(repo, "====== 1 failed, 89 passed in 600.00s (0:10:00) ======", 1)  # a failure still has a time
    commit_ci_run(repo, "====== 205 passed in 270.00s (0:04:30) ======", 0)
    commit_ci_run(repo, "ERROR: No matching distribution found for tensorflow", 1)  # no install, no time
    result = subprocess.run(["bash", "benchmarks/suite_time.sh", "HEAD~2", "HEAD~1", "HEAD"], cwd=repo,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "cores" in lines[0]
    assert lines[1].endswith("1 failed, 89 passed in 600.00s; ratio to the first 1.000"), lines
    assert lines[2].endswith("205 passed in 270.00s; ratio to the first 0.450"), lines
    assert "no pytest summary" in lines[3], lines
    refused = subprocess.run(["bash", "benchmarks/suite_time.sh", "HEAD"], cwd=repo, capture_output=True, text=True)
    assert refused.returncode == 2 and "usage:" in refused.stderr
