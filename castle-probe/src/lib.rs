#![doc = include_str!("../README.md")]
//!
//! What a read-only probe found. Each service crate turns its read-only calls into
//! [`Finding`]s (in its `ops`); castle-core gathers and renders them. A probe never
//! writes anything, and no finding ever holds a secret.

#![warn(missing_docs)]

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Holds.
    Pass,
    /// Holds as far as a read-only check can tell, or will cost something later.
    Warn,
    /// Will make a run fail.
    Fail,
}

impl Status {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check of one system: what was checked, how it came out, and on a warning
/// or failure what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `proxmox`, `vault`, `tailscale`, `git`, `talos`, `network`, ...
    pub system: String,
    /// A short name of the check (`token valid`, `privilege VM.Clone on /vms/9000`).
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// What to do, for a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A check that holds.
    pub fn pass(system: &str, check: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            system: system.into(),
            check: check.into(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A check that holds only partly, or could not be told read-only.
    pub fn warn(
        system: &str,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Finding::pass(system, check, detail)
        }
    }

    /// A check that fails: a run would fail on it.
    pub fn fail(
        system: &str,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Finding::pass(system, check, detail)
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<4} {:<10} {}: {}",
            self.status, self.system, self.check, self.detail
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "\n                fix: {fix}")?;
        }
        Ok(())
    }
}

/// Whether any finding fails (`castle doctor` exits 1 then).
pub fn any_failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.status == Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_its_fix_and_serializes_lowercase() {
        let f = Finding::fail(
            "vault",
            "capability update on auth/jwt/config",
            "the token may only read",
            "grant update",
        );
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["status"], "fail");
        assert_eq!(v["fix"], "grant update");
        assert!(f.to_string().contains("fix: grant update"));
        assert!(any_failed(&[Finding::pass("vault", "x", "y"), f]));
    }

    #[test]
    fn a_pass_has_no_fix_and_warnings_do_not_fail() {
        let p = Finding::pass("git", "branch main", "found");
        assert!(serde_json::to_value(&p).unwrap().get("fix").is_none());
        assert!(!any_failed(&[
            p,
            Finding::warn("tailscale", "tags", "unknown", "check")
        ]));
    }
}
