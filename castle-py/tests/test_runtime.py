"""Castle works with the GIL released, and Ctrl-C cancels a run cleanly."""

import os
import pathlib
import signal
import threading
import time

import pytest

import castle


def test_another_thread_makes_progress_during_create(lab: pathlib.Path) -> None:
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        # Pure Python work: it runs only while the GIL is free.
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            sum(range(1000))

    other = threading.Thread(target=spin)
    other.start()
    try:
        started = time.monotonic()
        castle.Castle(castle.Config.load(lab)).create()
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        other.join()
    assert elapsed > 0.3
    assert ticks > 1000, f"the other thread ran only {ticks} times in {elapsed:.2f}s"


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_cancels_a_lab_create_cleanly(slow_lab: pathlib.Path) -> None:
    cluster = castle.Castle(castle.Config.load(slow_lab))
    sent: list[float] = []

    def interrupt() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(1.0, interrupt)
    timer.start()
    with pytest.raises(castle.Cancelled, match="interrupted") as err:
        cluster.create()
    timer.join()
    assert time.monotonic() - sent[0] < 10, "the run did not stop at its next safe point"

    report = err.value.report
    assert report is not None and report.status == "cancelled"
    statuses = {s["id"]: s["status"] for s in report.steps}
    assert statuses["secrets"] == "done" and statuses["verify"] != "done"

    # The journal says where it stopped and resume finishes the rest.
    journal = {s["id"]: s["status"] for s in cluster.status()["steps"]}
    assert journal.get("verify") != "done"
    assert cluster.create(resume=True).status == "succeeded"
