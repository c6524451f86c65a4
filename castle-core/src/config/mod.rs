//! castle.toml: the model of one cluster, and its validation.
//!
//! Every error is located: `castle.toml:14:9: nodes[1].vmid: 421 is already used by
//! nodes[0] (cp-1)`. Syntax and type errors come from the TOML parser's spans;
//! semantic errors are located by walking the parsed document along the key path.

mod model;
pub mod template;
mod validate;

use std::path::{Path, PathBuf};

pub use model::*;

/// One located problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The file (as given).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key path, e.g. `nodes[1].vmid`.
    pub key: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )
    }
}

/// castle.toml could not be used; every issue found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The issues, in file order.
    pub issues: Vec<Issue>,
}

impl ConfigError {
    fn single(file: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            issues: vec![Issue {
                file: file.into(),
                line: 1,
                column: 1,
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

/// Byte offset to 1-based line and column.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// Reads and validates a castle.toml. Relative paths in it are relative to its directory.
    ///
    /// # Errors
    /// [`ConfigError`] with every located issue.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single(
                &shown,
                "(file)",
                format!("cannot read: {e}; pass --config PATH or run `castle init DIR`"),
            )
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_str(&text, &shown, &dir)
    }

    /// Parses and validates castle.toml text; `base_dir` anchors its relative paths.
    ///
    /// # Errors
    /// [`ConfigError`] with every located issue.
    pub fn from_str(text: &str, origin: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            let message = e.message().trim().to_string();
            let key = validate::key_at(text, e.span().map_or(0, |s| s.start));
            ConfigError {
                issues: vec![Issue {
                    file: origin.into(),
                    line,
                    column,
                    key,
                    message,
                }],
            }
        })?;
        config.base_dir = base_dir.to_path_buf();
        let issues = validate::check(&config, text, origin);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { issues })
        }
    }

    /// The cluster directory: where castle.toml lives.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// A path from the config, made absolute against the cluster directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.base_dir.join(relative)
    }

    /// The secrets resolver this config describes.
    pub fn secrets(&self) -> crate::secrets::Secrets {
        crate::secrets::Secrets::new(self.path(&self.secrets.dir), self.secrets.env_fallback)
    }

    /// The tailnet hostname of a node.
    pub fn hostname(&self, node: &str) -> String {
        let pattern = self
            .tailscale
            .as_ref()
            .map_or("{cluster}-{node}", |t| t.hostname_pattern.as_str());
        pattern
            .replace("{cluster}", &self.cluster.name)
            .replace("{node}", node)
    }

    /// Control-plane nodes, in config order.
    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Controlplane)
    }
}

#[cfg(test)]
mod tests;
