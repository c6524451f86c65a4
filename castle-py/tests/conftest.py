import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def lab(tmp_path: pathlib.Path) -> pathlib.Path:
    """A private copy of the built-in lab on a fast clock; returns its castle.toml."""
    src = ROOT / "examples" / "lab"
    for sub in ["secrets", "manifests"]:
        shutil.copytree(src / sub, tmp_path / sub)
    text = (src / "castle.toml").read_text().replace("time_scale = 0.02", "time_scale = 0.002")
    (tmp_path / "castle.toml").write_text(text)
    return tmp_path / "castle.toml"
