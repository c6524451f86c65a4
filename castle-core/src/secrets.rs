//! Secret references and their resolution.
//!
//! castle.toml never holds a secret value, only a reference: `{ file = "github-token" }`
//! (a file inside the configured secrets directory), `{ env = "GITHUB_TOKEN" }`, or
//! `{ vault = "db-admin" }` (a password Castle generates once and keeps in Vault KV,
//! `[[vault.spec.generated]]`: one source of truth for everything that needs it).
//! Resolution yields a [`SecretString`]; errors name the reference and where Castle
//! looked, never a value. File and environment refs resolve here; a `vault` ref is
//! read from Vault by the step that needs it, once Vault holds the value.

use std::path::{Component, Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Where a secret comes from. Exactly one of the fields is set (checked by config
/// validation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// A file name inside the secrets directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The name of a generated password of `[[vault.spec.generated]]`, read from
    /// Vault KV where Castle generated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
}

impl SecretRef {
    /// A reference to a file in the secrets directory.
    pub fn file(name: &str) -> Self {
        Self {
            file: Some(name.into()),
            ..Self::default()
        }
    }

    /// A reference to an environment variable.
    pub fn env(name: &str) -> Self {
        Self {
            env: Some(name.into()),
            ..Self::default()
        }
    }

    /// A reference to the generated password `name` of `[[vault.spec.generated]]`.
    pub fn vault(name: &str) -> Self {
        Self {
            vault: Some(name.into()),
            ..Self::default()
        }
    }

    /// The generated value this ref names, when it is a `vault` ref.
    pub fn generated(&self) -> Option<&str> {
        self.vault.as_deref()
    }

    /// Whether the reference is well formed: exactly one of `file`, `env` and
    /// `vault`; a file name that stays inside the secrets directory; a variable name
    /// a shell accepts; a generated value's name that is not empty.
    ///
    /// # Errors
    /// What is wrong, for the user.
    pub fn check(&self) -> Result<(), String> {
        let set = [&self.file, &self.env, &self.vault]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if set > 1 {
            return Err("a secret ref has one of `file`, `env` or `vault`, not several".into());
        }
        match (&self.file, &self.env, &self.vault) {
            (None, None, None) => Err(
                "a secret ref needs `file = \"name\"`, `env = \"NAME\"` or `vault = \"generated-name\"`"
                    .into(),
            ),
            (Some(f), _, _) if f.is_empty() => Err("`file` is empty".into()),
            (Some(f), _, _) if escapes(f) => Err(format!(
                "`{f}` leaves the secrets directory: name a file inside it"
            )),
            (_, Some(e), _) if !is_env_name(e) => Err(format!(
                "`{e}` is not an environment variable name (letters, digits, `_`)"
            )),
            (_, _, Some(v)) if v.is_empty() => Err("`vault` is empty".into()),
            _ => Ok(()),
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
        match (&self.file, &self.env, &self.vault) {
            (Some(file), _, _) => write!(f, "{{ file = {file:?} }}"),
            (None, Some(env), _) => write!(f, "{{ env = {env:?} }}"),
            (None, None, Some(name)) => write!(f, "{{ vault = {name:?} }}"),
            (None, None, None) => write!(f, "{{}}"),
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
    /// A `vault` ref: its value lives in Vault KV, where the step that needs it
    /// reads it; it cannot be resolved from the secrets directory.
    #[error(
        "secret {reference} is a password Castle generates in Vault; it is read there once Vault holds it"
    )]
    InVault {
        /// The reference.
        reference: String,
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
        if let Some(file) = &reference.file
            && escapes(file)
        {
            return Err(SecretError::Escapes {
                reference: shown,
                path: self.dir.join(file),
                dir: self.dir.clone(),
            });
        }
        if let Err(problem) = reference.check() {
            return Err(SecretError::Malformed {
                reference: shown,
                problem,
            });
        }
        if reference.vault.is_some() {
            return Err(SecretError::InVault { reference: shown });
        }
        match &reference.env {
            Some(name) => env(name).ok_or_else(|| SecretError::Missing {
                reference: shown,
                looked: format!("environment variable {name}"),
            }),
            // `check` passed, so without `env` there is a `file`.
            None => self.file(reference.file.as_deref().unwrap_or_default(), shown),
        }
    }

    fn file(&self, file: &str, shown: String) -> Result<SecretString, SecretError> {
        let path = self.dir.join(file);
        let Ok(real) = std::fs::canonicalize(&path) else {
            if !self.env_fallback {
                return Err(SecretError::Missing {
                    reference: shown,
                    looked: path.display().to_string(),
                });
            }
            let var = SecretRef::fallback_env(file);
            return env(&var).ok_or_else(|| SecretError::Missing {
                reference: shown,
                looked: format!("{} and environment variable {var}", path.display()),
            });
        };
        // The file exists, so the directory does too and canonicalizes; comparing real
        // paths is what catches a symlink that points outside.
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        if !real.starts_with(&dir) {
            return Err(SecretError::Escapes {
                reference: shown,
                path: real,
                dir,
            });
        }
        let text = std::fs::read_to_string(&real).map_err(|e| SecretError::Unreadable {
            reference: shown,
            path: real,
            reason: e.kind().to_string(),
        })?;
        Ok(trimmed(&text))
    }
}

/// Whether a file name would leave the secrets directory before any symlink is followed.
fn escapes(file: &str) -> bool {
    let path = Path::new(file);
    path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir))
}

fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A set, Unicode variable's value; anything else counts as missing.
fn env(name: &str) -> Option<SecretString> {
    std::env::var(name).ok().map(|v| trimmed(&v))
}

/// Files written by `echo` or an editor end in a newline that is not part of the
/// secret; like the reference setup's `$(cat file)`, every trailing one goes.
fn trimmed(value: &str) -> SecretString {
    SecretString::from(value.trim_end_matches(['\r', '\n']).to_string())
}
