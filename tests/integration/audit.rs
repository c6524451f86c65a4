use castle_core::castle::{Castle, RunOptions};
use castle_core::events::{Events, Recorder};
use castle_tests::{files, lab_copy, paused};
use std::sync::Arc;

/// Canary values fed through every secret input must appear in no file under the
/// cluster directory (but the mode-0600 kubeconfig/talosconfig), and in no event.
#[tokio::test(start_paused = true)]
async fn no_canary_reaches_a_file_or_an_event_after_success_failure_and_destroy() {
    let (dir, config) = lab_copy(paused);
    let canaries: Vec<String> = std::fs::read_dir(dir.path().join("secrets"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let value = format!("canary-{}-7f3a9c", e.file_name().to_string_lossy());
            std::fs::write(e.path(), &value).unwrap();
            value
        })
        .collect();
    let castle = Castle::open(&config).unwrap();
    let rec = Recorder::new();
    let options = || RunOptions {
        events: Events::new().with(Arc::new(rec.clone())),
        ..RunOptions::default()
    };
    castle
        .lab()
        .unwrap()
        .cluster
        .fail_permanently("apply:Kustomization", "boom");
    let failed = castle.create(options()).await.unwrap();
    assert!(failed.error.is_some());
    castle.lab().unwrap().cluster.clear_faults();
    let resumed = castle
        .create(RunOptions {
            resume: true,
            ..options()
        })
        .await
        .unwrap();
    assert!(
        resumed.error.is_none(),
        "{:?}",
        resumed.error.map(|e| e.to_string())
    );
    assert!(
        castle
            .destroy(options(), false)
            .await
            .unwrap()
            .error
            .is_none()
    );

    let events = serde_json::to_string(&rec.events()).unwrap();
    for f in files(dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if f.starts_with(dir.path().join("secrets")) {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        for c in &canaries {
            assert!(
                !text.contains(c.as_str()),
                "{c} leaked into {}",
                f.display()
            );
        }
        if name == "kubeconfig" || name == "talosconfig" {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                f.display()
            );
        }
    }
    for c in &canaries {
        assert!(!events.contains(c.as_str()), "{c} leaked into the events");
    }
    // Minted tailnet keys are runtime secrets too: none in any file or event.
    assert!(
        !events.contains("tskey-auth"),
        "a minted key leaked into the events"
    );
    for f in files(dir.path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        assert!(
            !text.contains("tskey-auth"),
            "a minted key leaked into {}",
            f.display()
        );
    }
}
