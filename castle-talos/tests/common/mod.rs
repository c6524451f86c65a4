//! What the patch test files share: parsing a config stream and applying patches to
//! it as talosctl does.

use castle_talos::{Patch, apply_patches};
use serde_json::Value;

/// A config or expected result: a multi-document YAML stream.
pub fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).expect("test YAML")
}

/// Applies the patches (text, parsed with `Patch::parse` as Talos's `LoadPatches`
/// loads them) in order, as `configpatcher.Apply` does.
pub fn apply(config: &str, patches: &[&str]) -> Result<Vec<Value>, String> {
    let mut d = docs(config);
    let patches: Vec<Patch> = patches
        .iter()
        .map(|p| Patch::parse(p).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    apply_patches(&mut d, &patches).map_err(|e| e.to_string())?;
    Ok(d)
}
