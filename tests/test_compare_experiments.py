"""`python -m stages.compare`: experiments as `dvc exp show --json` gives them, into one table per comparable group."""
from hypothesis import given, strategies as st
import numpy as np
import pytest
from PIL import Image

from stages import compare

from stages.lib import paths
from stages.lib.scores import accuracy_interval
from tests.helpers import TINY, merged, repo_params


def run_data(backbone: str, accuracy: float, changes: dict | None = None, prepared: str = "e98a0c2e.dir") -> dict:
    """One run's `data`, shaped as `dvc exp show --json` gives it."""
    params = merged(merged(repo_params(), TINY), {"model": {"backbone": backbone}, **(changes or {})})
    return {
        "params": {"params.yaml": {"data": params}},
        "metrics": {
            str(paths.METRICS_FILE): {"data": {"accuracy": accuracy, "loss": 1.0, "macro_f1": 0.5,
                                               "test_images": 400}},
            str(paths.EXTRACT_TIMING): {"data": {"extract": {"images": 800, "build_seconds": 1.0, "seconds": 5.0,
                                                             "images_per_second": 160.0}}},
            str(paths.TRAIN_TIMING): {"data": {"head_seconds": 3.5}},
        },
        "outs": {str(paths.PREPARED): {"hash": prepared}, str(paths.INFERENCE_MODEL): {"size": 35_000_000}},
    }


def shown(*experiments: tuple[str, dict | None], baseline: dict | None = None) -> list[dict]:
    return [
        {"rev": "workspace", "name": None, "data": run_data("densenet121", 0.99)},  # uncommitted: left out
        {"rev": "aa7f1f966ec2", "name": "main", "data": baseline or {"params": {}, "metrics": {}}, "experiments": [
            {"name": name, "revs": [{"rev": f"{index:040d}", "name": name, "data": data}]}
            for index, (name, data) in enumerate(experiments)]},
    ]


def table_rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| backbone")]


def test_one_group_one_row_per_experiment_best_first(workdir):
    table = compare.compare(shown(("puffy-myth", run_data("densenet121", 0.6375)),
                                  ("jural-rort", run_data("vgg16", 0.7)),
                                  ("failed-run", None)))
    assert table.startswith("## all runs share their data, image size and head\n")
    assert table_rows(table) == [
        ["vgg16", "jural-rort", "0.700 (0.652–0.744)", "0.500", "160.0", "5.0", "3.5", "35.0"],
        ["densenet121", "puffy-myth", "0.637 (0.588–0.684)", "0.500", "160.0", "5.0", "3.5", "35.0"],
    ]
    assert paths.COMPARE_TABLE.read_text() == table
    with Image.open(paths.COMPARE_PNG) as picture:
        pixels = np.asarray(picture.convert("L"))
    assert pixels.std() > 20, "the chart is blank"  # white page with bars and text


def test_a_perfect_or_null_score_still_has_an_interval(workdir):
    # ± 2 standard errors would be ± 0 here: a certainty that 400 test images cannot give.
    table = compare.compare(shown(("easy", run_data("convnext_tiny", 1.0)), ("hard", run_data("vgg16", 0.0))))
    assert [row[2] for row in table_rows(table)] == ["1.000 (0.990–1.000)", "0.000 (0.000–0.010)"]
    assert paths.COMPARE_PNG.is_file()  # error bars of length zero on one side draw


@given(accuracy=st.floats(0, 1), images=st.integers(1, 100_000))
def test_the_interval_holds_the_accuracy_within_0_and_1(accuracy, images):
    low, high = accuracy_interval(accuracy, images)
    assert 0 <= low <= accuracy <= high <= 1
    assert high - low > 0


def test_runs_on_other_data_or_with_another_head_are_shown_apart(workdir):
    table = compare.compare(shown(
        ("a", run_data("densenet121", 0.6)), ("b", run_data("vgg16", 0.5)),
        ("c", run_data("vgg16", 0.8, {"train": {"head": "linear"}})),
        ("d", run_data("vgg16", 0.4, {"data": {"image_size": 64}}, prepared="77777777.dir")),
        ("e", run_data("densenet121", 0.7, {"extract": {"engine": "xla", "batch_size": 8}})),  # speed knobs only
        baseline=run_data("densenet121", 0.65)))
    headings = [line for line in table.splitlines() if line.startswith("## ")]
    assert headings == [
        "## data.image_size=32, train.head=mlp, data/prepared=e98a0c2e",
        "## data.image_size=32, train.head=linear, data/prepared=e98a0c2e",
        "## data.image_size=64, train.head=mlp, data/prepared=77777777",
    ]
    groups = [[row[1] for row in table_rows(section)] for section in table.split("## ")[1:]]
    assert groups == [["e", "main", "a", "b"], ["c"], ["d"]]


def test_nothing_to_compare_is_one_clear_error(workdir):
    with pytest.raises(ValueError, match="no commit or experiment here has test metrics.*dvc exp run --queue"):
        compare.compare(shown(("failed-run", None)))
    assert not paths.COMPARE_TABLE.exists()


def test_outside_a_dvc_repository_the_error_is_dvc_s_own_line(workdir, capsys):
    with pytest.raises(SystemExit) as exit:
        compare.main([])
    assert exit.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: `dvc exp show --json` failed:") and "DVC repository" in error, error
    assert len(error.splitlines()) == 1


def test_hand_edited_metrics_are_skipped_or_left_blank_never_a_traceback(workdir, caplog):
    edited = run_data("vgg16", 0.5)
    edited["metrics"][str(paths.METRICS_FILE)]["data"] = {"accuracy": 0.7, "test_images": 0, "macro_f1": "high"}
    edited["metrics"][str(paths.TRAIN_TIMING)]["data"] = {"head_seconds": [1, 2]}
    unusable = run_data("resnet50", 0.5)
    unusable["metrics"][str(paths.METRICS_FILE)]["data"]["accuracy"] = "0.9"
    table = compare.compare(shown(("edited", edited), ("unusable", unusable), ("plain\x1b[31m", run_data("vgg16", 0.6))))
    rows = table_rows(table)
    assert [row[:2] for row in rows] == [["vgg16", "edited"], ["vgg16", "plain\\x1b[31m"]]
    assert rows[0][2:7] == ["0.700", "–", "160.0", "5.0", "–"]  # no interval without a test count, no F1, no head time
    assert "skipping unusable: its metrics/metrics.json holds accuracy '0.9', not a number from 0 to 1" in caplog.text
