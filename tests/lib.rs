//! Shared fixtures for the integration tests: a private copy of the built-in lab.

use std::path::{Path, PathBuf};

/// Copies `examples/lab` into a fresh temporary directory, applying `edit` to its
/// castle.toml, and returns the directory (kept alive by the returned guard).
pub fn lab_copy(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&src, dir.path());
    let config = dir.path().join("castle.toml");
    let text = std::fs::read_to_string(&config).expect("lab config");
    std::fs::write(&config, edit(text)).expect("write config");
    (dir, config)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read lab") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        // A lab run in the source tree leaves its state behind: never copy it.
        if name == ".castle" || name == "configs" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy");
        }
    }
}

/// The lab at full modelled speed (for tokio's paused clock): exact timings.
pub fn paused(text: String) -> String {
    text.replace("time_scale = 0.02", "time_scale = 1.0")
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `create` and fails the test with the run's own error if it did not succeed.
pub async fn created(castle: &castle_core::castle::Castle) -> castle_core::castle::RunSummary {
    let summary = castle
        .create(castle_core::castle::RunOptions::default())
        .await
        .expect("the run starts");
    if let Some(e) = &summary.error {
        panic!("create failed: {e}");
    }
    summary
}

/// The lab with `nodes` nodes (one control plane, then workers), VMIDs 1000 up and
/// addresses 192.168.1.20 up.
pub fn with_nodes(nodes: usize) -> impl FnOnce(String) -> String {
    move |text| {
        let start = text.find("[[nodes]]").expect("nodes");
        let end = text.find("[talos]").expect("talos");
        let blocks: String = (0..nodes)
            .map(|i| {
                let (name, role) = if i == 0 {
                    ("cp-1".to_string(), "controlplane")
                } else {
                    (format!("worker-{i}"), "worker")
                };
                format!(
                    "[[nodes]]\nname = \"{name}\"\nrole = \"{role}\"\nvmid = {}\nip = \"192.168.1.{}/24\"\n\n",
                    1000 + i,
                    20 + i
                )
            })
            .collect();
        format!("{}{blocks}{}", &text[..start], &text[end..])
            .replace("vmid_range = [420, 429]", "vmid_range = [1000, 1099]")
    }
}
