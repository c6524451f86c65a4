//! `wait_task` on tokio's paused clock: exact poll times, deadline, success rules.

use std::time::Duration;

use castle_proxmox::{Error, Latency, MockProxmox, ProxmoxApi, TaskExit, wait_task};
use tokio::time::Instant;

fn mock(start_seconds: f64) -> MockProxmox {
    let m = MockProxmox::new().with_latency(Latency {
        start: start_seconds,
        ..Latency::instant().scaled(1.0)
    });
    m.add_vm(421, "cp-1", &["castle"], false).unwrap();
    m
}

#[tokio::test(start_paused = true)]
async fn polls_from_250ms_doubling_to_2s() {
    let m = mock(5.0);
    let task = m.start("pve", 421).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        wait_task(&m, &task, Duration::from_secs(60)).await.unwrap(),
        TaskExit::Ok
    );
    // Polls at 0, 0.25, 0.75, 1.75, 3.75 (running) and 5.75 s (stopped).
    assert_eq!(started.elapsed(), Duration::from_millis(5750));
    assert_eq!(m.calls("task_status"), 6);
}

#[tokio::test(start_paused = true)]
async fn a_quick_task_is_seen_at_the_first_backoff_step() {
    let m = mock(0.2);
    let task = m.start("pve", 421).await.unwrap();
    let started = Instant::now();
    wait_task(&m, &task, Duration::from_secs(60)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_holds_and_names_the_task() {
    let m = mock(100.0);
    let task = m.start("pve", 421).await.unwrap();
    let started = Instant::now();
    let e = wait_task(&m, &task, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(matches!(e, Error::Timeout { .. }));
    assert!(e.to_string().contains("qmstart of 421"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn transient_poll_failures_are_polled_through() {
    let m = mock(3.0);
    let task = m.start("pve", 421).await.unwrap();
    let flaky = m
        .clone()
        .with_faults(castle_proxmox::Faults::transient(1, 0.5));
    assert_eq!(
        wait_task(&flaky, &task, Duration::from_secs(60))
            .await
            .unwrap(),
        TaskExit::Ok
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_poll_failure_ends_the_wait() {
    let m = mock(3.0);
    let task = m.start("pve", 421).await.unwrap();
    m.fail_permanently("task_status", "Permission check failed")
        .unwrap();
    let e = wait_task(&m, &task, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
}
