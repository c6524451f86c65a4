//! What the `castle` binary's test files share.

use std::path::{Path, PathBuf};

/// Copies the built-in lab (castle.toml, secrets, manifests, charts; never a run's state)
/// into `dir` and returns its castle.toml.
pub fn copy_lab(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    for sub in ["", "secrets", "manifests", "charts"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for e in std::fs::read_dir(src.join(sub)).expect("read the lab") {
            let p = e.expect("entry").path();
            if p.is_file() {
                std::fs::copy(&p, dir.join(sub).join(p.file_name().expect("a name")))
                    .expect("copy");
            }
        }
    }
    dir.join("castle.toml")
}
