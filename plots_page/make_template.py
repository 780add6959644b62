"""Write plots_page/template.html: DVC's own plots page with Vega, Vega-Lite and Vega-Embed inlined, in place
of the CDN scripts it loads, so the page that `dvc plots show` and `dvc plots diff` write draws offline and
wherever it is moved. The versions are those the installed dvc_render names; the files come from npm.

    python plots_page/make_template.py      # after upgrading DVC, or to rebuild the template
"""
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from dvc_render.html import PAGE_HTML
from dvc_render.vega import VegaRenderer

TEMPLATE = Path(__file__).resolve().parent / "template.html"


def pinned_packages() -> list[tuple[str, str]]:
    """(name, version) of each script dvc_render loads from jsdelivr, in its order."""
    packages = re.findall(r"cdn\.jsdelivr\.net/npm/([\w-]+)@([\w.-]+)", VegaRenderer.SCRIPTS)
    assert [name for name, _ in packages] == ["vega", "vega-lite", "vega-embed"], VegaRenderer.SCRIPTS
    return packages


def inline_script(folder: Path, name: str, version: str) -> str:
    """The package's browser build (the file jsdelivr serves) in a <script>, its licence in a comment."""
    subprocess.run(["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", str(folder)],
                   check=True, stdout=subprocess.DEVNULL)
    with tarfile.open(folder / f"{name}-{version}.tgz") as tar:
        build = tar.extractfile(f"package/build/{name}.min.js").read().decode()
        licence = tar.extractfile("package/LICENSE").read().decode().strip()
    assert "</script" not in build.lower() and "*/" not in licence, name  # neither may end its container early
    assert not re.search(r"\{(scripts|plot_divs|refresh_tag)\}", build), name  # dvc_render's placeholders
    return f"<script>\n/* {name}@{version}, from npm (build/{name}.min.js).\n\n{licence}\n*/\n{build}\n</script>"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        scripts = "\n".join(inline_script(Path(folder), name, version) for name, version in pinned_packages())
    page = PAGE_HTML.replace("{scripts}", f"<!-- Written by plots_page/make_template.py. -->\n{scripts}", 1)
    TEMPLATE.write_text(page, encoding="utf8")
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
