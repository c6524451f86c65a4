"""The exception tree: each kind of trouble has its class and the CLI's message."""

import pathlib
from typing import Any

import pytest

import castle


def line_of(text: str, needle: str, nth: int = 1) -> int:
    lines = text.splitlines()
    found = [i for i, line in enumerate(lines) if line.strip() == needle]
    return found[nth - 1] + 1


def test_the_tree() -> None:
    for cls in [castle.ConfigError, castle.SecretError, castle.ProviderError, castle.TimeoutError, castle.Cancelled]:
        assert issubclass(cls, castle.CastleError)
    assert issubclass(castle.CastleError, Exception)
    assert castle.CastleError.__module__ == "castle"


def test_a_config_error_names_file_line_column_and_key(lab: pathlib.Path) -> None:
    text = lab.read_text().replace("vmid = 422", "vmid = 421", 1)
    with pytest.raises(castle.ConfigError) as err:
        castle.Config.from_toml(text, lab.parent)
    line = line_of(text, "vmid = 421", nth=2)
    assert f"castle.toml:{line}:8: nodes[1].vmid" in str(err.value)
    [issue] = [i for i in err.value.issues if i["key"] == "nodes[1].vmid"]
    assert (issue["file"], issue["line"], issue["column"]) == ("castle.toml", line, 8)


def test_a_syntax_error_is_located_in_the_loaded_file(lab: pathlib.Path) -> None:
    text = lab.read_text()
    lab.write_text(text.replace("template_vmid = 9000", "template_vmid = 9000x"))
    with pytest.raises(castle.ConfigError) as err:
        castle.Config.load(lab)
    line = line_of(text, "template_vmid = 9000")
    assert str(err.value).startswith(f"{lab}:{line}:")
    assert err.value.issues[0]["line"] == line


def test_every_issue_is_reported_at_once(lab: pathlib.Path) -> None:
    text = lab.read_text().replace("vmid = 422", "vmid = 421", 1).replace("vmid = 423", "vmid = 999", 1)
    with pytest.raises(castle.ConfigError) as err:
        castle.Config.from_toml(text, lab.parent)
    keys = [i["key"] for i in err.value.issues]
    assert "nodes[1].vmid" in keys and "nodes[2].vmid" in keys
    assert len(str(err.value).splitlines()) == len(err.value.issues)


def test_a_missing_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(castle.ConfigError, match="cannot read"):
        castle.Config.load(tmp_path / "nowhere.toml")


def test_a_missing_secret_is_a_config_error_at_load(lab: pathlib.Path) -> None:
    (lab.parent / "secrets" / "github-token").unlink()
    with pytest.raises(castle.ConfigError, match="github-token") as err:
        castle.Config.load(lab)
    assert any(i["key"] == "components.flux.token" for i in err.value.issues)


def test_validate_checks_the_file_and_lists_an_absent_secret(lab: pathlib.Path) -> None:
    assert castle.Config.validate(lab) == []
    (lab.parent / "secrets" / "github-token").unlink()
    absent = castle.Config.validate(lab)
    # Every ref to that one file is named, each at its own line.
    assert "components.flux.token" in [i["key"] for i in absent]
    assert all("github-token" in i["message"] and i["line"] > 0 for i in absent), absent
    text = lab.read_text().replace("vmid = 422", "vmid = 421", 1)
    lab.write_text(text)
    with pytest.raises(castle.ConfigError, match="already used") as err:
        castle.Config.validate(lab)
    assert [i["key"] for i in err.value.issues] == ["nodes[1].vmid"]


def test_a_missing_secret_is_a_secret_error_with_the_failed_report(lab: pathlib.Path) -> None:
    cluster = castle.Castle(castle.Config.load(lab))
    # Gone after validation, as when someone deletes it while a run starts.
    (lab.parent / "secrets" / "github-token").unlink()
    with pytest.raises(castle.SecretError, match="github-token") as err:
        cluster.create()
    # The CLI prints the same message after `error: `.
    assert str(err.value).startswith("step `secrets` failed: ")
    report = err.value.report
    assert report is not None and report.status == "failed"
    assert {s["id"]: s["status"] for s in report.steps}["secrets"] == "failed"


def test_a_raising_callback_cancels_the_run_and_its_exception_surfaces(lab: pathlib.Path) -> None:
    cluster = castle.Castle(castle.Config.load(lab))

    def on_event(e: dict[str, Any]) -> None:
        if e["event"] == "step_started" and e["step"] == "platform":
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        cluster.create(on_event=on_event)
    done = {s["id"] for s in cluster.status()["steps"] if s["status"] == "done"}
    assert "verify" not in done
    assert cluster.create(resume=True).status == "succeeded"
