//! The executor on tokio's paused clock: times are exact.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::events::Recorder;
use crate::journal::{Journal, StepStatus};

#[derive(Debug)]
struct Fake {
    id: String,
    deps: Vec<String>,
    duration: Duration,
    script: Mutex<VecDeque<StepError>>,
    runs: AtomicU32,
    destroys: AtomicU32,
    memory: bool,
    fingerprint: Mutex<String>,
}

fn fake(id: &str, deps: &[&str], secs: u64) -> Arc<Fake> {
    Arc::new(Fake {
        id: id.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        duration: Duration::from_secs(secs),
        script: Mutex::new(VecDeque::new()),
        runs: AtomicU32::new(0),
        destroys: AtomicU32::new(0),
        memory: false,
        fingerprint: Mutex::new("v1".into()),
    })
}

impl Fake {
    fn failing(self: Arc<Self>, errors: Vec<StepError>) -> Arc<Self> {
        *self.script.lock().unwrap() = errors.into();
        self
    }
    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Step for Fake {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.lock().unwrap().clone()
    }
    fn keeps_outputs_in_memory(&self) -> bool {
        self.memory
    }
    fn node(&self) -> Option<&str> {
        // `platform/cp-1` is node cp-1's unit.
        self.id.split_once('/').map(|(_, node)| node)
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        ctx.guard(async {
            tokio::time::sleep(self.duration).await;
            Ok(())
        })
        .await?;
        match self.script.lock().unwrap().pop_front() {
            Some(e) => Err(e),
            None => Ok(serde_json::json!({ "step": self.id })),
        }
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        self.destroys.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn graph(steps: &[&Arc<Fake>]) -> Graph {
    Graph::new(
        steps
            .iter()
            .map(|s| Arc::clone(*s) as Arc<dyn Step>)
            .collect(),
    )
    .unwrap()
}

async fn run(
    g: Graph,
    options: ExecOptions,
    dir: &std::path::Path,
    cancel: Cancel,
) -> (RunOutcome, Vec<Event>) {
    let recorder = Recorder::new();
    let events = Events::new().with(Arc::new(recorder.clone()));
    let mut journal = Journal::open(dir, "lab").unwrap();
    let outcome = Executor::new(g, options, events, cancel)
        .run(Action::Create, &mut journal, "run")
        .await
        .unwrap();
    (outcome, recorder.events())
}

fn quick_retry() -> ExecOptions {
    ExecOptions {
        retry: RetryPolicy::standard().with_initial(Duration::from_secs(1)),
        ..ExecOptions::default()
    }
}

#[tokio::test(start_paused = true)]
async fn independent_steps_overlap_so_the_makespan_is_the_critical_path() {
    let dir = tempfile::tempdir().unwrap();
    let a = fake("secrets", &[], 1);
    let b = fake("vault", &["secrets"], 30);
    let c = fake("platform", &["secrets"], 100);
    let d = fake("talos", &["platform", "vault"], 50);
    let (outcome, _) = run(
        graph(&[&a, &b, &c, &d]),
        ExecOptions::default(),
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert!(outcome.error.is_none());
    assert_eq!(outcome.report.makespan_ms, 151_000);
    assert_eq!(
        outcome.report.critical_path,
        ["secrets", "platform", "talos"]
    );
    let vault = outcome
        .report
        .steps
        .iter()
        .find(|s| s.id == "vault")
        .unwrap();
    assert_eq!(
        vault.start_ms,
        Some(1000),
        "vault starts the moment secrets is done"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let steps: Vec<Arc<Fake>> = (0..4).map(|i| fake(&format!("s{i}"), &[], 10)).collect();
    let g = Graph::new(
        steps
            .iter()
            .map(|s| Arc::clone(s) as Arc<dyn Step>)
            .collect(),
    )
    .unwrap();
    let (outcome, _) = run(
        g,
        ExecOptions {
            concurrency: 2,
            ..ExecOptions::default()
        },
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert_eq!(outcome.report.makespan_ms, 20_000);
}

/// Each node flows on its own: a node's second unit starts when its own first
/// unit ends, not when every node's did; the units are not counted against the
/// executor's concurrency (here one step at a time), and the report puts each in
/// its node's lane.
#[tokio::test(start_paused = true)]
async fn node_units_flow_on_their_own_outside_the_concurrency_bound() {
    let dir = tempfile::tempdir().unwrap();
    let vms: Vec<Arc<Fake>> = (0..5)
        .map(|i| fake(&format!("platform/n{i}"), &[], 10 * (i + 1)))
        .collect();
    let applies: Vec<Arc<Fake>> = (0..5)
        .map(|i| {
            let vm = format!("platform/n{i}");
            fake(&format!("talos/n{i}"), &[vm.as_str()], 5)
        })
        .collect();
    let bootstrap = fake("bootstrap", &["talos/n0"], 1);
    let other = fake("vault", &[], 3);
    let mut all: Vec<&Arc<Fake>> = vms.iter().chain(&applies).collect();
    all.push(&bootstrap);
    all.push(&other);
    let (outcome, _) = run(
        graph(&all),
        ExecOptions {
            concurrency: 1,
            ..ExecOptions::default()
        },
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert!(outcome.error.is_none());
    let at = |id: &str| {
        let s = outcome.report.steps.iter().find(|s| s.id == id).unwrap();
        (s.start_ms.unwrap(), s.end_ms.unwrap(), s.node.clone())
    };
    for i in 0..5u64 {
        assert_eq!(at(&format!("platform/n{i}")).0, 0, "every VM at once");
        assert_eq!(
            at(&format!("talos/n{i}")).0,
            10_000 * (i + 1),
            "node {i}'s apply follows its own VM"
        );
        assert_eq!(
            at(&format!("talos/n{i}")).2.as_deref(),
            Some(format!("n{i}").as_str())
        );
    }
    assert_eq!(
        at("bootstrap").0,
        15_000,
        "bootstrap waits for the first node only"
    );
    assert_eq!(at("bootstrap").2, None);
    assert_eq!(outcome.report.makespan_ms, 55_000);
}

/// `--only platform` runs the platform step's units too; a prefix of a step's
/// name is not a step.
#[tokio::test(start_paused = true)]
async fn only_names_a_step_with_its_units() {
    let a = fake("platform", &[], 1);
    let b = fake("platform/n0", &["platform"], 1);
    let c = fake("talos", &[], 1);
    let only = |names: &[&str]| ExecOptions {
        only: Some(names.iter().map(|n| n.to_string()).collect()),
        ..ExecOptions::default()
    };
    let state = crate::journal::JournalState::empty("lab");
    let selected = Executor::new(
        graph(&[&a, &b, &c]),
        only(&["platform"]),
        Events::new(),
        Cancel::new(),
    )
    .selection(&state)
    .unwrap();
    assert_eq!(selected, ["platform", "platform/n0"]);
    let err = Executor::new(
        graph(&[&a, &b, &c]),
        only(&["plat"]),
        Events::new(),
        Cancel::new(),
    )
    .selection(&state)
    .unwrap_err()
    .to_string();
    assert!(err.contains("`plat`, which is not a step"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_failure_blocks_only_its_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let a = fake("platform", &[], 5).failing(vec![
        StepError::permanent("vm 421: template 9000 does not exist").on("vm 421"),
    ]);
    let b = fake("talos", &["platform"], 5);
    let c = fake("vault", &[], 20);
    let (outcome, events) = run(
        graph(&[&a, &b, &c]),
        ExecOptions::default(),
        dir.path(),
        Cancel::new(),
    )
    .await;
    let err = outcome.error.unwrap().to_string();
    assert!(
        err.contains("platform") && err.contains("template 9000"),
        "{err}"
    );
    assert_eq!(b.runs(), 0);
    assert_eq!(c.runs(), 1, "an unrelated step still finishes");
    assert!(events.iter().any(|e| matches!(e, Event::StepBlocked { step, reason, .. } if step == "talos" && reason.contains("platform"))));
    let journal = Journal::peek(dir.path()).unwrap();
    assert_eq!(journal.steps["platform"].status, StepStatus::Failed);
    assert_eq!(journal.steps["vault"].status, StepStatus::Done);
    assert!(!journal.steps.contains_key("talos"));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff_and_permanent_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = fake("flaky", &[], 1).failing(vec![
        StepError::transient("503 sealed"),
        StepError::transient("503 sealed"),
    ]);
    let broken = fake("broken", &[], 1).failing(vec![StepError::permanent(
        "403 permission denied on sys/auth",
    )]);
    let (outcome, events) = run(
        graph(&[&flaky, &broken]),
        quick_retry(),
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert_eq!(flaky.runs(), 3);
    assert_eq!(broken.runs(), 1);
    let delays: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepRetried { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [1000, 2000]);
    let flaky_timing = outcome
        .report
        .steps
        .iter()
        .find(|s| s.id == "flaky")
        .unwrap();
    assert_eq!(flaky_timing.duration_ms, 3000 + 3000);
    assert_eq!(flaky_timing.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_server_lengthens_the_wait() {
    let policy = RetryPolicy::standard();
    assert_eq!(
        policy.delay(1, Some(Duration::from_secs(7))),
        Duration::from_secs(7)
    );
    assert_eq!(policy.delay(1, None), Duration::from_secs(1));
    assert_eq!(policy.delay(10, None), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_give_up_after_the_last_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = fake("flaky", &[], 1).failing(
        (0..10)
            .map(|_| StepError::transient("connection refused"))
            .collect(),
    );
    let options = ExecOptions {
        retry: RetryPolicy::standard().with_max_attempts(3),
        ..ExecOptions::default()
    };
    let (outcome, _) = run(graph(&[&flaky]), options, dir.path(), Cancel::new()).await;
    assert_eq!(flaky.runs(), 3);
    assert!(
        outcome
            .error
            .unwrap()
            .to_string()
            .contains("gave up after 3 attempts")
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_overruns_its_budget_times_out_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let slow = fake("slow", &[], 600);
    let options = ExecOptions {
        step_timeout: Duration::from_secs(60),
        ..ExecOptions::default()
    };
    let (outcome, _) = run(graph(&[&slow]), options, dir.path(), Cancel::new()).await;
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("within 60s"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_new_work_and_resume_finishes_without_redoing_steps() {
    let dir = tempfile::tempdir().unwrap();
    let a = fake("a", &[], 10);
    let b = fake("b", &["a"], 100);
    let c = fake("c", &["b"], 10);
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(50)).await;
        trigger.cancel("interrupted (Ctrl-C)");
    });
    let (outcome, _) = run(
        graph(&[&a, &b, &c]),
        ExecOptions::default(),
        dir.path(),
        cancel,
    )
    .await;
    assert!(matches!(
        outcome.error,
        Some(crate::Error::Cancelled { .. })
    ));
    assert_eq!(outcome.report.status, "cancelled");
    assert_eq!(c.runs(), 0);
    let journal = Journal::peek(dir.path()).unwrap();
    assert_eq!(journal.steps["a"].status, StepStatus::Done);
    assert_eq!(journal.steps["b"].status, StepStatus::Cancelled);

    let options = ExecOptions {
        resume: true,
        ..ExecOptions::default()
    };
    let (outcome, _) = run(graph(&[&a, &b, &c]), options, dir.path(), Cancel::new()).await;
    assert!(outcome.error.is_none());
    assert_eq!((a.runs(), b.runs(), c.runs()), (1, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn resume_reruns_in_memory_steps_that_a_later_step_needs_and_changed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(Fake {
        memory: true,
        ..Arc::into_inner(fake("tailnet-key", &[], 1)).unwrap()
    });
    let vms = fake("platform", &[], 1);
    let talos = fake("talos", &["tailnet-key", "platform"], 1)
        .failing(vec![StepError::permanent("apply refused")]);
    let (first, _) = run(
        graph(&[&key, &vms, &talos]),
        ExecOptions::default(),
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert!(first.error.is_some());

    let resume = ExecOptions {
        resume: true,
        ..ExecOptions::default()
    };
    let (second, _) = run(
        graph(&[&key, &vms, &talos]),
        resume.clone(),
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert!(second.error.is_none());
    assert_eq!(
        key.runs(),
        2,
        "the key lives in memory only: minted again for talos"
    );
    assert_eq!(
        vms.runs(),
        1,
        "platform is done and keeps its outputs in the journal"
    );
    assert_eq!(talos.runs(), 2);

    let (third, events) = run(
        graph(&[&key, &vms, &talos]),
        resume.clone(),
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert!(third.error.is_none());
    assert_eq!(
        (key.runs(), vms.runs(), talos.runs()),
        (2, 1, 2),
        "nothing to do"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::StepSkipped { .. }))
            .count(),
        3
    );

    *vms.fingerprint.lock().unwrap() = "v2".into();
    let (_, _) = run(
        graph(&[&key, &vms, &talos]),
        resume,
        dir.path(),
        Cancel::new(),
    )
    .await;
    assert_eq!(vms.runs(), 2, "changed inputs run again");
    assert_eq!(talos.runs(), 2, "talos inputs did not change");
}

#[tokio::test(start_paused = true)]
async fn only_refuses_a_step_whose_dependency_never_ran() {
    let dir = tempfile::tempdir().unwrap();
    let a = fake("a", &[], 1);
    let b = fake("b", &["a"], 1);
    let options = ExecOptions {
        only: Some(["b".to_string()].into()),
        ..ExecOptions::default()
    };
    let mut journal = Journal::open(dir.path(), "lab").unwrap();
    let err = Executor::new(graph(&[&a, &b]), options, Events::new(), Cancel::new())
        .run(Action::Create, &mut journal, "r")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`b` needs `a`"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn destroy_runs_the_graph_backwards_and_empties_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let a = fake("a", &[], 1);
    let b = fake("b", &["a"], 1);
    run(
        graph(&[&a, &b]),
        ExecOptions::default(),
        dir.path(),
        Cancel::new(),
    )
    .await;
    let recorder = Recorder::new();
    let mut journal = Journal::open(dir.path(), "lab").unwrap();
    let outcome = Executor::new(
        graph(&[&a, &b]),
        ExecOptions::default(),
        Events::new().with(Arc::new(recorder.clone())),
        Cancel::new(),
    )
    .run(Action::Destroy, &mut journal, "d")
    .await
    .unwrap();
    assert!(outcome.error.is_none());
    let started: Vec<String> = recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["b", "a"]);
    assert!(journal.state().steps.is_empty());
}

#[test]
fn cycles_and_unknown_dependencies_are_refused() {
    let a = fake("a", &["b"], 1);
    let b = fake("b", &["a"], 1);
    let err = Graph::new(vec![a as Arc<dyn Step>, b as Arc<dyn Step>])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cycle"), "{err}");
    let c = fake("c", &["nope"], 1);
    let err = Graph::new(vec![c as Arc<dyn Step>])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nope`"), "{err}");
}

/// A transient failure whose call may have taken effect (a mint whose answer was
/// lost) is not retried: the service said repeating it is not safe.
#[tokio::test(start_paused = true)]
async fn a_transient_error_that_is_unsafe_to_retry_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut unsafe_error = StepError::transient("creating an auth key: timed out");
    unsafe_error.unsafe_to_retry = true;
    let mint = fake("mint", &[], 1).failing(vec![unsafe_error]);
    let (outcome, _) = run(graph(&[&mint]), quick_retry(), dir.path(), Cancel::new()).await;
    assert_eq!(mint.runs(), 1);
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("not safe"), "{err}");
}

/// A step that records an intent mid-step: the journal holds it before the step
/// goes on, and keeps it when the step then fails.
#[derive(Debug)]
struct Intending {
    dir: std::path::PathBuf,
}

#[async_trait]
impl Step for Intending {
    fn id(&self) -> &str {
        "platform"
    }
    fn deps(&self) -> Vec<String> {
        Vec::new()
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<serde_json::Value, StepError> {
        ctx.record("clones", serde_json::json!([{"vmid": 421}]))
            .await?;
        let on_disk = Journal::peek(&self.dir).map_err(|e| StepError::permanent(e.to_string()))?;
        if on_disk.steps["platform"].outputs["clones"][0]["vmid"] != 421 {
            return Err(StepError::permanent("the intent was not on disk"));
        }
        Err(StepError::permanent("crashed after the intent"))
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_intent_recorded_mid_step_is_on_disk_at_once_and_survives_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new(vec![Arc::new(Intending {
        dir: dir.path().to_path_buf(),
    }) as Arc<dyn Step>])
    .unwrap();
    let (outcome, _) = run(g, quick_retry(), dir.path(), Cancel::new()).await;
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("crashed after the intent"), "{err}");
    let journal = Journal::peek(dir.path()).unwrap();
    assert_eq!(journal.steps["platform"].status, StepStatus::Failed);
    assert_eq!(journal.steps["platform"].outputs["clones"][0]["vmid"], 421);
}
