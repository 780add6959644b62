"""The page `dvc plots show` and `dvc plots diff` write draws its Vega charts with no network: the repository's
HTML template carries Vega, Vega-Lite and Vega-Embed inline, so the page also works wherever it is moved."""
import configparser
import os
import re
import shutil
import subprocess

from tests.helpers import GIT_IDENTITY, REPO, dvc

SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.DOTALL | re.IGNORECASE)


def tiny_repo(folder):
    """A git + DVC repository with this repository's DVC config and plots template, and one Vega plot."""
    folder.mkdir()
    env = {**os.environ, **GIT_IDENTITY}
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True, env=env)
    dvc(folder, "init", "-q")
    shutil.copy2(REPO / ".dvc/config", folder / ".dvc/config")
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc/config")
    if template := config.get("plots", "html_template", fallback=None):
        template = (REPO / ".dvc" / template).resolve().relative_to(REPO)  # DVC reads it from the .dvc folder
        (folder / template).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / template, folder / template)
    (folder / "loss.tsv").write_text("step\tloss\n0\t2.3\n1\t1.9\n")
    (folder / "dvc.yaml").write_text("plots:\n  - loss.tsv:\n      x: step\n      y: loss\n")
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "one plot"], cwd=folder, check=True, env=env)
    return folder


def assert_draws_offline(page: str) -> None:
    scripts = SCRIPT_TAG.findall(page)
    external = [attributes for attributes, _ in scripts if "src" in attributes]
    assert not external, f"the page loads scripts from elsewhere: {external}"
    code = "\n".join(text for _, text in scripts)
    for library in ("vega", "vegaLite", "vegaEmbed"):  # the globals the plot divs' vegaEmbed(...) calls need
        assert re.search(rf"\.{library}\s*=", code), f"the page's scripts define no {library}"
    assert re.search(r"vegaEmbed\('#", code)  # and the page has a Vega chart to draw


def test_plots_show_and_diff_write_a_page_that_draws_offline(tmp_path):
    repo = tiny_repo(tmp_path / "repo")
    dvc(repo, "plots", "show", "-o", str(tmp_path / "show"))
    assert_draws_offline((tmp_path / "show/index.html").read_text())

    (repo / "loss.tsv").write_text("step\tloss\n0\t2.2\n1\t1.7\n")
    dvc(repo, "plots", "diff", "-o", str(tmp_path / "diff"))  # the workspace against HEAD
    assert_draws_offline((tmp_path / "diff/index.html").read_text())
