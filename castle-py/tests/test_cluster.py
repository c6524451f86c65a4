"""A lab rebirth from Python: plan, create with events, resume, status, destroy."""

import pathlib
import threading
from typing import Any

import pytest

import castle


def test_a_lab_rebirth_from_python_with_events(lab: pathlib.Path) -> None:
    cluster = castle.Castle(castle.Config.load(lab))
    assert cluster.last_report() is None
    assert [s["action"] for s in cluster.plan()["steps"]] == ["run"] * len(cluster.steps())

    events: list[dict[str, Any]] = []
    threads: set[int] = set()

    def on_event(e: dict[str, Any]) -> None:
        events.append(e)
        threads.add(threading.get_ident())

    report = cluster.create(on_event=on_event)

    assert report.status == "succeeded" and report.action == "create" and report.cluster == "lab"
    assert report.critical_path[0] == "secrets" and report.critical_path[-1] == "verify"
    assert report.makespan_ms > 0
    steps = report.steps
    assert [s["id"] for s in steps] == cluster.steps()
    assert all(s["status"] == "done" and s["duration_ms"] >= 0 and s["attempts"] >= 1 for s in steps)
    assert "critical" in report.table() or "verify" in report.table()
    assert report.svg().lstrip().startswith("<")
    assert (report.run_dir / "report.json").is_file()
    assert report.to_dict()["critical_path"] == report.critical_path

    # Every event arrived, in order, as a plain dict, on the calling thread.
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    started = {e["step"] for e in events if e["event"] == "step_started"}
    finished = {e["step"] for e in events if e["event"] == "step_finished"}
    assert started == finished == set(cluster.steps())
    assert threads == {threading.get_ident()}

    again = cluster.create(resume=True)
    assert again.status == "succeeded"
    assert all(s["status"] == "skipped" for s in again.steps)
    last = cluster.last_report()
    assert last is not None and last.run_id == again.run_id

    status = cluster.status()
    assert status["cluster"] == "lab" and status["nothing_left"] is False
    assert {s["id"] for s in status["steps"]} == set(cluster.steps())

    gone = cluster.destroy(on_event=lambda e: None)
    assert gone.action == "destroy" and gone.status == "succeeded"
    assert cluster.status()["nothing_left"] is True


def test_only_runs_the_chosen_steps(lab: pathlib.Path) -> None:
    cluster = castle.Castle(castle.Config.load(lab))
    report = cluster.create(only=["secrets", "vault-jwt"])
    ran = {s["id"] for s in report.steps if s["status"] == "done"}
    assert ran == {"secrets", "vault-jwt"}
    with pytest.raises(TypeError, match="list of step ids"):
        cluster.create(only="secrets")


def test_vault_through_the_cluster_config(lab: pathlib.Path) -> None:
    cluster = castle.Castle(castle.Config.load(lab))
    plan = cluster.vault_plan()
    assert plan["changes"], "a fresh lab Vault needs the whole spec"
    cluster.vault_apply()
    assert cluster.vault_plan()["changes"] == []


def test_mint_key_through_the_cluster_config(lab: pathlib.Path) -> None:
    key = castle.Castle(castle.Config.load(lab)).mint_key()
    assert key.reveal()
    assert key.reveal() not in repr(key) and key.reveal() not in str(key)


def test_doctor_and_the_live_plan_from_python(lab: pathlib.Path) -> None:
    cluster = castle.Castle(castle.Config.load(lab))
    report = cluster.doctor()
    assert report["ok"] is True
    assert {f["system"] for f in report["findings"]} >= {"proxmox", "tailscale", "vault", "git", "network", "talos"}
    assert all(f["status"] == "pass" for f in report["findings"])
    steps = cluster.plan()["steps"]
    units = [s for s in steps if s["id"].startswith("platform/")]
    assert [c["action"] for s in units for c in s["changes"]] == ["clone", "clone", "clone"]
    platform = next(s for s in steps if s["id"] == "platform")
    assert "linked clones on local-lvm (lvmthin)" in platform["changes"][0]["fields"]


def test_doctor_names_a_sealed_vault(lab: pathlib.Path) -> None:
    text = lab.read_text()
    lab.write_text(text.replace("[lab]\n", '[lab]\ninject = ["vault-sealed"]\n'))
    report = castle.Castle(castle.Config.load(lab)).doctor()
    assert report["ok"] is False
    failed = [f for f in report["findings"] if f["status"] == "fail"]
    assert failed and failed[0]["system"] == "vault" and "unseal" in failed[0]["fix"]
