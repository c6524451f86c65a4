//! Secret references and their resolution.
//!
//! castle.toml never holds a secret value, only a reference: `{ file = "github-token" }`
//! (a file inside the configured secrets directory) or `{ env = "GITHUB_TOKEN" }`.
//! Resolution yields a [`SecretString`]; errors name the reference and where Castle
//! looked, never a value.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Where a secret comes from. Exactly one of the two fields is set (checked by
/// config validation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// A file name inside the secrets directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl SecretRef {
    /// A reference to a file in the secrets directory.
    pub fn file(name: &str) -> Self {
        Self {
            file: Some(name.into()),
            env: None,
        }
    }

    /// A reference to an environment variable.
    pub fn env(name: &str) -> Self {
        Self {
            file: None,
            env: Some(name.into()),
        }
    }

    /// A problem with the reference's shape, if any.
    pub fn shape_problem(&self) -> Option<String> {
        match (&self.file, &self.env) {
            (Some(_), Some(_)) => Some("a secret ref has either `file` or `env`, not both".into()),
            (None, None) => Some("a secret ref needs `file = \"name\"` or `env = \"NAME\"`".into()),
            (Some(f), None) if f.is_empty() => Some("`file` is empty".into()),
            (None, Some(e)) if e.is_empty() || e.contains('=') => {
                Some(format!("`{e}` is not an environment variable name"))
            }
            _ => None,
        }
    }

    /// The environment variable a missing file falls back to: `github-token` -> `GITHUB_TOKEN`.
    pub fn fallback_env(file: &str) -> String {
        file.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, &self.env) {
            (Some(file), _) => write!(f, "{{ file = {file:?} }}"),
            (None, Some(env)) => write!(f, "{{ env = {env:?} }}"),
            (None, None) => write!(f, "{{}}"),
        }
    }
}

/// Why a secret could not be resolved. Never holds a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Neither the file nor its fallback variable exists.
    #[error(
        "secret {reference} not found: looked for {looked}; create the file (mode 0600) or set the variable"
    )]
    Missing {
        /// The reference.
        reference: String,
        /// Where Castle looked.
        looked: String,
    },
    /// The file path leaves the secrets directory.
    #[error("secret {reference} refused: {path} is outside the secrets directory {dir}")]
    Escapes {
        /// The reference.
        reference: String,
        /// The resolved path.
        path: PathBuf,
        /// The secrets directory.
        dir: PathBuf,
    },
    /// The reference is malformed.
    #[error("secret {reference}: {problem}")]
    Malformed {
        /// The reference.
        reference: String,
        /// What is wrong.
        problem: String,
    },
    /// The file exists but cannot be read.
    #[error("secret {reference}: cannot read {path}: {reason}")]
    Unreadable {
        /// The reference.
        reference: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Resolves references against one secrets directory.
#[derive(Debug, Clone)]
pub struct Secrets {
    dir: PathBuf,
    env_fallback: bool,
}

impl Secrets {
    /// A resolver for `dir`; with `env_fallback`, a missing file falls back to its
    /// environment variable (`github-token` -> `GITHUB_TOKEN`), as the reference setup did.
    pub fn new(dir: impl Into<PathBuf>, env_fallback: bool) -> Self {
        Self {
            dir: dir.into(),
            env_fallback,
        }
    }

    /// The secrets directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves one reference.
    ///
    /// # Errors
    /// [`SecretError`] naming the reference and where Castle looked.
    pub fn resolve(&self, reference: &SecretRef) -> Result<SecretString, SecretError> {
        let shown = reference.to_string();
        if let Some(problem) = reference.shape_problem() {
            return Err(SecretError::Malformed {
                reference: shown,
                problem,
            });
        }
        if let Some(name) = &reference.env {
            return std::env::var(name)
                .map(|v| SecretString::from(v.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|_| SecretError::Missing {
                    reference: shown,
                    looked: format!("environment variable {name}"),
                });
        }
        let file = reference.file.as_deref().unwrap_or_default();
        let path = self.dir.join(file);
        if Path::new(file).is_absolute()
            || Path::new(file)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(SecretError::Escapes {
                reference: shown,
                path,
                dir: self.dir.clone(),
            });
        }
        match std::fs::canonicalize(&path) {
            Ok(real) => {
                let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
                if !real.starts_with(&dir) {
                    return Err(SecretError::Escapes {
                        reference: shown,
                        path: real,
                        dir,
                    });
                }
                let text = std::fs::read_to_string(&real).map_err(|e| SecretError::Unreadable {
                    reference: shown.clone(),
                    path: real.clone(),
                    reason: e.kind().to_string(),
                })?;
                Ok(SecretString::from(
                    text.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
            Err(_) if self.env_fallback => {
                let var = SecretRef::fallback_env(file);
                std::env::var(&var)
                    .map(|v| SecretString::from(v.trim_end_matches(['\r', '\n']).to_string()))
                    .map_err(|_| SecretError::Missing {
                        reference: shown,
                        looked: format!("{} and environment variable {var}", path.display()),
                    })
            }
            Err(_) => Err(SecretError::Missing {
                reference: shown,
                looked: path.display().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn files_resolve_inside_the_directory_and_escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("github-token"), "canary-value-123\n").unwrap();
        std::fs::write(dir.path().join("outside"), "nope").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), secrets.join("link")).unwrap();
        let r = Secrets::new(&secrets, false);
        assert_eq!(
            r.resolve(&SecretRef::file("github-token"))
                .unwrap()
                .expose_secret(),
            "canary-value-123"
        );
        for bad in ["../outside", "/etc/passwd", "link"] {
            let err = r.resolve(&SecretRef::file(bad)).unwrap_err().to_string();
            assert!(
                err.contains("outside the secrets directory"),
                "{bad}: {err}"
            );
        }
        let err = r
            .resolve(&SecretRef::file("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains(&secrets.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn env_refs_and_the_file_fallback_resolve_and_values_never_print() {
        // PATH is set in every test environment; setting variables needs `unsafe`.
        let path = std::env::var("PATH").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let with = Secrets::new(dir.path(), true);
        let v = with.resolve(&SecretRef::file("path")).unwrap();
        assert_eq!(v.expose_secret(), path.as_str());
        assert!(!format!("{v:?}").contains(&path));
        let without = Secrets::new(dir.path(), false);
        assert!(without.resolve(&SecretRef::file("path")).is_err());
        assert_eq!(
            with.resolve(&SecretRef::env("PATH"))
                .unwrap()
                .expose_secret(),
            path.as_str()
        );
        let err = with
            .resolve(&SecretRef::env("CASTLE_TEST_NOT_SET"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CASTLE_TEST_NOT_SET"), "{err}");
        let both = SecretRef {
            file: Some("a".into()),
            env: Some("B".into()),
        };
        assert!(
            with.resolve(&both)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
    }
}
