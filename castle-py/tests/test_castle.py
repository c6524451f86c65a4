import os
import pathlib
import runpy
import signal
import subprocess
import sys
import threading
import time

import pytest

import castle

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_a_lab_rebirth_from_python_with_events(lab: pathlib.Path) -> None:
    events: list[dict] = []
    c = castle.Castle(castle.Config.load(lab))
    report = c.create(on_event=events.append)
    assert report.status == "succeeded"
    assert report.critical_path[0] == "secrets" and report.critical_path[-1] == "verify"
    assert {s["id"] for s in report.steps} == set(c.steps())
    kinds = {e["event"] for e in events}
    assert {"run_started", "step_started", "step_finished", "run_finished"} <= kinds
    again = c.create(resume=True)
    assert all(s["status"] == "skipped" for s in again.steps)
    assert c.plan()["steps"][0]["id"] == "secrets"
    c.destroy()
    assert c.status()["nothing_left"] is True


def test_config_errors_carry_line_numbers(lab: pathlib.Path) -> None:
    text = lab.read_text().replace("vmid = 422", "vmid = 421", 1)
    with pytest.raises(castle.ConfigError) as err:
        castle.Config.from_toml(text, lab.parent)
    line = text.splitlines().index("vmid = 421", text.splitlines().index("vmid = 421") + 1) + 1
    assert f"castle.toml:{line}:8: nodes[1].vmid" in str(err.value)
    assert issubclass(castle.ConfigError, castle.CastleError)


def test_a_missing_secret_is_a_secret_error(lab: pathlib.Path) -> None:
    (lab.parent / "secrets" / "github-token").unlink()
    with pytest.raises(castle.ProviderError, match="github-token"):
        castle.Castle(castle.Config.load(lab)).create()


def test_no_secret_is_visible_in_repr_or_str() -> None:
    secrets = castle.talos.generate_secrets()
    assert "PRIVATE KEY" not in repr(secrets) and "redacted" in repr(secrets)
    assert "PRIVATE KEY" in secrets.reveal_yaml() or "k8s" in secrets.reveal_yaml()
    cfg = castle.talos.machine_config(secrets, "lab", "https://192.168.1.210:6443", "cp-1", "controlplane", "192.168.1.211/24", "192.168.1.1")
    assert "kind: HostnameConfig" in cfg and "type: controlplane" in cfg


def test_the_gil_is_released_while_castle_works(lab: pathlib.Path) -> None:
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    started = time.monotonic()
    castle.Castle(castle.Config.load(lab)).create()
    elapsed = time.monotonic() - started
    stop.set()
    t.join()
    assert elapsed > 0.3
    assert ticks > 50, f"the other thread ran only {ticks} times in {elapsed:.2f}s"


def test_ctrl_c_cancels_the_run_cleanly(lab: pathlib.Path) -> None:
    text = lab.read_text().replace("time_scale = 0.002", "time_scale = 0.05")
    lab.write_text(text)
    c = castle.Castle(castle.Config.load(lab))
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(castle.Cancelled):
        c.create()
    status = c.status()
    assert any(s["status"] in ("cancelled", "done") for s in status["steps"])
    report = c.create(resume=True)
    assert report.status == "succeeded"


def test_the_notebook_example_runs(lab: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTLE_EXAMPLE_CONFIG", str(lab))
    runpy.run_path(str(ROOT / "examples" / "notebook.py"), run_name="__main__")


def test_the_stubs_match_the_module() -> None:
    allow = ROOT / "castle-py" / "stubtest-allowlist.txt"
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "castle._castle", "--allowlist", str(allow)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
