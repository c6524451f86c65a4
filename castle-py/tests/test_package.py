"""The package as a whole: its stubs, its example, its layout."""

import pathlib
import runpy
import subprocess
import sys

import pytest

import castle

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_stubs_match_the_module() -> None:
    allow = ROOT / "castle-py" / "stubtest-allowlist.txt"
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "castle", "--allowlist", str(allow)],
        capture_output=True,
        text=True,
        cwd=ROOT / "castle-py",
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_is_typed() -> None:
    package = pathlib.Path(castle.__file__).parent
    assert (package / "py.typed").is_file() and (package / "_castle.pyi").is_file()


def test_every_public_name_is_exported() -> None:
    for name in castle.__all__:
        assert getattr(castle, name) is not None
    for module, names in [
        (castle.talos, ["generate_secrets", "machine_config", "TalosSecrets", "MachineConfig"]),
        (castle.vault, ["plan", "apply"]),
        (castle.tailscale, ["mint_key", "AuthKey"]),
        (castle.proxmox, ["list_vms"]),
    ]:
        assert sorted(module.__all__) == sorted(names)


def test_the_notebook_example_runs(lab: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CASTLE_EXAMPLE_CONFIG", str(lab))
    runpy.run_path(str(ROOT / "examples" / "notebook.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "critical path: secrets ->" in out
    assert "nothing left: True" in out
