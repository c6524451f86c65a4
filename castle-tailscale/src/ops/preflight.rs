//! `castle doctor` for Tailscale: does the OAuth client work, does it hold the
//! scopes Castle needs, may it give keys the configured tags. Read-only: token
//! exchanges (which change nothing) and GETs.
//!
//! Sources: the token endpoint refuses a scope the client lacks with 403
//! `OAuth client cannot grant scopes "..."` and unknown credentials with 401
//! `API token invalid` (answers quoted in adinhodovic/tailscale-exporter#34 and
//! tailscale/gitops-acl-action#33); its answer carries the granted `scope`
//! (`{"access_token":...,"token_type":"Bearer","expires_in":3600,"scope":"all:read"}`,
//! the KB's curl example as quoted in freeformz/ansible#3); the OpenAPI
//! description of `capabilities.devices.create.tags`: a key minted by an OAuth
//! client carries the client's tags or tags they own in `tagOwners`; of
//! `GET /tailnet/{tailnet}/keys/{keyId}`: OAuth clients need `oauth_keys:read`;
//! of `GET /tailnet/{tailnet}/acl`: `policy_file:read`.

use std::collections::BTreeMap;

use castle_probe::Finding;

use super::REQUIRED_SCOPES;
use crate::{Error, OauthClientInfo, TailscaleApi};

const SYSTEM: &str = "tailscale";

/// Where OAuth clients are made; their scopes and tags are fixed at creation.
const CONSOLE: &str = "https://login.tailscale.com/admin/settings/oauth";

/// What `castle doctor` checks on Tailscale: the config's `[tailscale]` section.
#[derive(Debug, Clone, Default)]
pub struct Preflight {
    /// The tags the rebirth's auth key carries (`tailscale.tags`).
    pub tags: Vec<String>,
}

/// What each required scope is for.
fn purpose(scope: &str) -> &'static str {
    match scope {
        "auth_keys" => "mint, list and revoke the rebirth's auth key",
        "devices:core" => "list and delete the previous incarnation's devices",
        _ => "Castle's calls",
    }
}

/// Checks, read-only, what the tailnet-key step needs: the OAuth client's
/// credentials, each scope in [`REQUIRED_SCOPES`] (asked of the token endpoint one
/// by one, so a refusal names it), and whether the client may give keys each of
/// `p.tags`, as far as its own record (`oauth_keys:read`) or the policy file's
/// `tagOwners` (`policy_file:read`) let a read-only check tell.
pub async fn preflight(api: &dyn TailscaleApi, p: &Preflight) -> Vec<Finding> {
    let mut out = Vec::new();
    match api.grant(&[]).await {
        Ok(g) => out.push(Finding::pass(
            SYSTEM,
            "OAuth client",
            if g.scopes.is_empty() {
                "the token endpoint issued an access token".to_string()
            } else {
                format!(
                    "the token endpoint issued an access token with scopes {}",
                    g.scopes.join(" ")
                )
            },
        )),
        Err(e) => {
            out.push(credentials_failed(&e));
            return out;
        }
    }
    for scope in REQUIRED_SCOPES {
        let check = format!("scope {scope}");
        out.push(match api.grant(&[scope.to_string()]).await {
            Ok(_) => Finding::pass(SYSTEM, check, format!("granted: {}", purpose(scope))),
            Err(Error::Api {
                status: 400 | 403,
                message,
                ..
            }) => Finding::fail(
                SYSTEM,
                check,
                format!(
                    "the token endpoint refused it ({message}); Castle needs it to {}",
                    purpose(scope)
                ),
                format!(
                    "give the OAuth client the scope `{scope}`: in {CONSOLE} create a client with \
                     the scopes {} and the tags {}, then put its id and secret in \
                     tailscale.oauth_client_id and tailscale.oauth_client_secret",
                    REQUIRED_SCOPES.join(" and "),
                    p.tags.join(", ")
                ),
            ),
            Err(e) => Finding::warn(
                SYSTEM,
                check,
                format!("the token endpoint did not answer: {e}"),
                "run castle doctor again; the scopes are checked by exchanging the client for a token",
            ),
        });
    }
    let client = api.oauth_client().await;
    let owners = api.tag_owners().await;
    for tag in &p.tags {
        out.push(tag_finding(tag, client.as_ref(), owners.as_ref(), &p.tags));
    }
    out
}

fn credentials_failed(e: &Error) -> Finding {
    let check = "OAuth client";
    match e {
        Error::Api {
            status: 400 | 401, ..
        } => Finding::fail(
            SYSTEM,
            check,
            format!("the token endpoint refused the credentials: {e}"),
            format!(
                "check tailscale.oauth_client_id and tailscale.oauth_client_secret (the secret \
                 starts with tskey-client-); a deleted client's secret stops working; make a new \
                 one in {CONSOLE}"
            ),
        ),
        Error::Unreachable { .. } => Finding::fail(
            SYSTEM,
            check,
            e.to_string(),
            "check that this machine reaches https://api.tailscale.com (port 443, proxy settings)",
        ),
        _ => Finding::fail(
            SYSTEM,
            check,
            format!("the token exchange failed: {e}"),
            "run castle doctor again; if it persists, check https://status.tailscale.com",
        ),
    }
}

/// Whether the client may give a key `tag`: it carries it, or one of its tags
/// owns it in `tagOwners`.
fn tag_finding(
    tag: &str,
    client: Result<&OauthClientInfo, &Error>,
    owners: Result<&BTreeMap<String, Vec<String>>, &Error>,
    all: &[String],
) -> Finding {
    let check = format!("tag {tag}");
    let new_client = format!(
        "a client's tags are fixed at creation: in {CONSOLE} create one with the tags {} (or a \
         tag that owns {tag} in tagOwners) and the scopes {}",
        all.join(", "),
        REQUIRED_SCOPES.join(" and ")
    );
    let define = format!(
        "add it to the policy file (Access controls): \"tagOwners\": {{\"{tag}\": \
         [\"autogroup:admin\"]}}, and give the OAuth client that tag"
    );
    // Past the first arm the tag is defined wherever the policy was read.
    let owners_of = |o: &BTreeMap<String, Vec<String>>| o.get(tag).cloned().unwrap_or_default();
    match (client, owners) {
        (_, Ok(o)) if !o.contains_key(tag) => Finding::fail(
            SYSTEM,
            check,
            "not defined in the policy file's tagOwners: the control plane refuses keys with it",
            define,
        ),
        (Ok(c), _) if c.tags.iter().any(|t| t == tag) => {
            Finding::pass(SYSTEM, check, "the OAuth client carries it")
        }
        (Ok(c), Ok(o)) => {
            let by = owners_of(o);
            match by.iter().find(|owner| c.tags.contains(owner)) {
                Some(owner) => Finding::pass(
                    SYSTEM,
                    check,
                    format!("owned by {owner}, which the OAuth client carries"),
                ),
                None => Finding::fail(
                    SYSTEM,
                    check,
                    format!(
                        "the OAuth client carries {} and none of them owns it (owners: {})",
                        list(&c.tags),
                        list(&by)
                    ),
                    new_client,
                ),
            }
        }
        (Ok(c), Err(e)) => Finding::warn(
            SYSTEM,
            check,
            format!(
                "the OAuth client carries {} but not {tag}; it may still assign it if one of \
                 those owns it in tagOwners, which Castle cannot read ({})",
                list(&c.tags),
                brief(e)
            ),
            format!(
                "check tagOwners in the policy file by hand, or give the client the scope \
                 policy_file:read so doctor can; else {new_client}"
            ),
        ),
        (Err(_), Ok(o)) => {
            let by = owners_of(o);
            let tag_owners: Vec<&str> = by
                .iter()
                .filter(|o| o.starts_with("tag:"))
                .map(String::as_str)
                .collect();
            Finding::warn(
                SYSTEM,
                check,
                format!(
                    "defined in tagOwners (owners: {}); whether the OAuth client carries it or one \
                     of its owners needs the client's own record, which takes the scope \
                     oauth_keys:read",
                    list(&by)
                ),
                if tag_owners.is_empty() {
                    format!("check the client's tags in {CONSOLE}: it must carry {tag}")
                } else {
                    format!(
                        "check the client's tags in {CONSOLE}: it must carry {tag} or one of {}",
                        tag_owners.join(", ")
                    )
                },
            )
        }
        (Err(client_error), Err(policy_error)) => Finding::warn(
            SYSTEM,
            check,
            format!(
                "cannot tell: the client's own record ({}) and the policy file ({}) are both \
                 out of reach with its scopes",
                brief(client_error),
                brief(policy_error)
            ),
            format!(
                "check by hand in {CONSOLE} that the OAuth client carries {tag} (or a tag that \
                 owns it in tagOwners), or give it the scope oauth_keys:read or \
                 policy_file:read so doctor can"
            ),
        ),
    }
}

/// An error without the hint its `Display` appends.
fn brief(e: &Error) -> String {
    match e {
        Error::Api {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        other => other.to_string(),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "no tags".to_string()
    } else {
        items.join(", ")
    }
}
