//! The mock control plane enforces what the real one enforces.

use std::time::Duration;

use castle_tailscale::{Error, Faults, KeyRequest, Latency, MockTailscale, Op, TailscaleApi};
use secrecy::{ExposeSecret as _, SecretString};

use crate::policy;

/// A control plane with one OAuth client, and the API as that client sees it.
pub fn lab() -> (MockTailscale, MockTailscale) {
    lab_with(MockTailscale::new())
}

pub fn lab_with(control: MockTailscale) -> (MockTailscale, MockTailscale) {
    let secret = SecretString::from("lab-secret");
    control.add_oauth_client(
        "lab-id",
        &secret,
        &["auth_keys", "devices:core"],
        &["tag:lab-k8s"],
    );
    let api = control.session(&SecretString::from("lab-id"), &secret);
    (control, api)
}

fn single_use() -> KeyRequest {
    KeyRequest {
        reusable: false,
        ..policy()
    }
}

#[tokio::test]
async fn a_single_use_key_admits_only_the_first_node() {
    let (control, api) = lab();
    let once = api.create_key(&single_use()).await.unwrap();
    assert_eq!(control.live_keys(), 1);
    control.join(&once.key, "lab-cp-1").unwrap();
    assert_eq!(control.live_keys(), 0);
    // The reference setup's worker failed exactly so.
    let e = control.join(&once.key, "lab-worker-1").unwrap_err();
    assert!(
        matches!(&e, Error::Join { hostname, reason } if hostname == "lab-worker-1" && reason.starts_with("invalid key")),
        "{e:?}"
    );
    let many = api.create_key(&policy()).await.unwrap();
    control.join(&many.key, "lab-worker-1").unwrap();
    control.join(&many.key, "lab-worker-2").unwrap();
    let e = control
        .join(&SecretString::from("tskey-auth-bad-1"), "x")
        .unwrap_err();
    assert!(e.to_string().contains("invalid key"), "{e}");
}

#[tokio::test]
async fn expired_and_revoked_keys_are_refused() {
    let (control, api) = lab();
    let short = api
        .create_key(&KeyRequest {
            expiry_seconds: 60,
            ..policy()
        })
        .await
        .unwrap();
    assert_eq!(short.expires, "2026-01-01T00:01:00Z");
    control.join(&short.key, "a").unwrap();
    control.elapse(Duration::from_secs(60));
    assert!(
        control
            .join(&short.key, "b")
            .unwrap_err()
            .to_string()
            .contains("not valid")
    );
    let revoked = api.create_key(&policy()).await.unwrap();
    api.revoke_key(&revoked.id).await.unwrap();
    assert!(control.join(&revoked.key, "c").is_err());
    assert_eq!(control.live_keys(), 0);
    let e = api.revoke_key("k-unknown").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn a_taken_name_gets_the_next_free_suffix() {
    let (control, api) = lab();
    let key = api.create_key(&policy()).await.unwrap();
    let names: Vec<String> = (0..3)
        .map(|_| control.join(&key.key, "lab-cp-1").unwrap().name)
        .collect();
    assert_eq!(
        names,
        [
            "lab-cp-1.tail0000.ts.net",
            "lab-cp-1-1.tail0000.ts.net",
            "lab-cp-1-2.tail0000.ts.net"
        ]
    );
    let d = control.devices();
    assert!(
        d.iter().all(|d| d.hostname == "lab-cp-1"),
        "the hostname itself is never suffixed"
    );
    let n1 = d.iter().find(|d| d.short_name() == "lab-cp-1-1").unwrap();
    api.delete_device(&n1.node_id).await.unwrap();
    assert_eq!(
        control.join(&key.key, "lab-cp-1").unwrap().name,
        "lab-cp-1-1.tail0000.ts.net",
        "a freed suffix is reused"
    );
    assert!(
        api.delete_device(&n1.node_id)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn offline_ephemeral_devices_linger_then_vanish() {
    let (control, api) = lab();
    let key = api.create_key(&policy()).await.unwrap();
    let durable = api
        .create_key(&KeyRequest {
            ephemeral: false,
            ..policy()
        })
        .await
        .unwrap();
    control.join(&key.key, "lab-cp-1").unwrap();
    control.join(&durable.key, "nas").unwrap();
    control.device_offline("lab-cp-1");
    control.device_offline("nas");
    control.elapse(Duration::from_secs(1799));
    let lingering = control.devices();
    assert_eq!(lingering.len(), 2);
    assert!(lingering.iter().all(|d| d.connected == Some(false)));
    assert_eq!(
        control.join(&key.key, "lab-cp-1").unwrap().name,
        "lab-cp-1-1.tail0000.ts.net",
        "the lingering device still holds the name"
    );
    control.elapse(Duration::from_secs(1));
    let mut left: Vec<String> = control.devices().into_iter().map(|d| d.name).collect();
    left.sort();
    assert_eq!(
        left,
        ["lab-cp-1-1.tail0000.ts.net", "nas.tail0000.ts.net"],
        "the offline ephemeral one is gone, the online one and the durable one stay"
    );
}

#[tokio::test(start_paused = true)]
async fn the_lab_clock_runs_at_its_scale() {
    let control = MockTailscale::new().with_latency(Latency::lab().scaled(0.01));
    let (control, api) = lab_with(control);
    let start = tokio::time::Instant::now();
    let key = api.create_key(&policy()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(3), "0.3 s modelled");
    control.join(&key.key, "lab-cp-1").unwrap();
    control.device_offline("lab-cp-1");
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert_eq!(control.devices().len(), 1, "1700 of 1800 modelled seconds");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(control.devices().is_empty());
}

#[tokio::test]
async fn keys_carry_only_tags_the_oauth_client_may_assign() {
    let (_, api) = lab();
    let e = api
        .create_key(&KeyRequest {
            tags: vec!["tag:prod".into()],
            ..policy()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Api {
                op: Op::CreateKey,
                status: 400,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("[tag:prod] are invalid or not permitted")
    );
    for bad in [
        KeyRequest {
            tags: vec![],
            ..policy()
        },
        KeyRequest {
            description: "d".repeat(51),
            ..policy()
        },
    ] {
        let e = api.create_key(&bad).await.unwrap_err();
        assert!(matches!(e, Error::Api { status: 400, .. }), "{e:?}");
    }
    let default_expiry = api
        .create_key(&KeyRequest {
            expiry_seconds: 0,
            ..policy()
        })
        .await
        .unwrap();
    assert_eq!(
        default_expiry.expires, "2026-04-01T00:00:00Z",
        "no expiry means the API's 90 days"
    );
}

#[tokio::test]
async fn credentials_and_scopes_are_enforced() {
    let (control, _) = lab();
    let e = control.list_devices().await.unwrap_err();
    assert!(
        matches!(e, Error::Api { status: 401, .. }),
        "no credentials: {e:?}"
    );
    let wrong = control.session(&SecretString::from("lab-id"), &SecretString::from("wrong"));
    assert!(matches!(
        wrong.list_devices().await.unwrap_err(),
        Error::Api { status: 401, .. }
    ));
    let reader_secret = SecretString::from("reader-secret");
    control.add_oauth_client(
        "reader",
        &reader_secret,
        &["devices:core:read"],
        &["tag:lab-k8s"],
    );
    let reader = control.session(&SecretString::from("reader"), &reader_secret);
    reader.list_devices().await.unwrap();
    for e in [
        reader.create_key(&policy()).await.unwrap_err(),
        reader.delete_device("n1").await.unwrap_err(),
        reader.revoke_key("k1").await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::Api { status: 403, .. }), "{e:?}");
        assert!(!e.is_transient());
        assert!(e.to_string().contains("scope"), "{e}");
    }
}

#[tokio::test]
async fn faults_are_seeded_and_can_be_cleared() {
    let outcomes = |seed| async move {
        let (_, api) = lab_with(MockTailscale::new().with_faults(Faults::transient(seed, 0.5)));
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(match api.list_devices().await {
                Ok(_) => 0,
                Err(e) => {
                    assert!(e.is_transient() && e.is_safe_to_retry(), "{e:?}");
                    match e {
                        Error::Api { status, .. } => status,
                        other => panic!("{other:?}"),
                    }
                }
            });
        }
        v
    };
    let a = outcomes(7).await;
    assert_eq!(a, outcomes(7).await, "the same seed, the same faults");
    assert!(
        a.contains(&0) && a.contains(&503) && a.contains(&429),
        "{a:?}"
    );

    let (control, api) = lab_with(MockTailscale::new().with_faults(Faults::transient(1, 1.0)));
    assert!(api.list_devices().await.is_err());
    control
        .fail_permanently("create_key", "OAuth client was deleted")
        .unwrap();
    control.clear_faults();
    api.list_devices().await.unwrap();
    control
        .fail_permanently("create_key", "OAuth client was deleted")
        .unwrap();
    let e = api.create_key(&policy()).await.unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("OAuth client was deleted"),
        "{e}"
    );
    assert!(control.fail_permanently("mint", "x").is_err());
}

#[tokio::test]
async fn a_snapshot_keeps_the_world_but_no_credential() {
    let (control, api) = lab();
    let key = api.create_key(&policy()).await.unwrap();
    let once = api.create_key(&single_use()).await.unwrap();
    control.join(&key.key, "lab-cp-1").unwrap();
    control.join(&once.key, "laptop").unwrap();
    control.device_offline("laptop");
    control.elapse(Duration::from_secs(600));
    let snap = control.snapshot();
    let text = snap.to_string();
    for secret in [
        key.key.expose_secret(),
        once.key.expose_secret(),
        "lab-secret",
        "lab-id",
        "tskey",
    ] {
        assert!(!text.contains(secret), "{secret} in the snapshot");
    }

    let restored = MockTailscale::new();
    restored.restore(&snap).unwrap();
    assert_eq!(restored.devices(), control.devices());
    assert_eq!(restored.live_keys(), 1);
    assert!(
        restored.join(&once.key, "again").is_err(),
        "still used after restore"
    );
    restored.join(&key.key, "lab-worker-1").unwrap();
    let api = restored.session(
        &SecretString::from("lab-id"),
        &SecretString::from("lab-secret"),
    );
    assert_eq!(api.list_devices().await.unwrap().len(), 3);
    restored.elapse(Duration::from_secs(1200));
    assert_eq!(
        restored.devices().len(),
        2,
        "the linger that began before the snapshot continues after it"
    );
    assert!(
        restored
            .restore(&serde_json::json!({"devices": 3}))
            .is_err()
    );
}

#[test]
fn the_mock_shows_no_credential_in_debug() {
    let (control, api) = lab();
    let shown = format!("{control:?} {api:?}");
    assert!(
        !shown.contains("lab-secret") && !shown.contains("lab-id"),
        "{shown}"
    );
}

/// tailscale.com/tailcfg/tailcfg.go `CheckTag` (read at CurrentCapabilityVersion 28,
/// the Tailscale 1.22 line; via `Hostinfo.CheckRequestTags`,
/// which wraps each refusal as `tag(%#v): %w`): `tag:`, then an ASCII letter, then
/// ASCII letters, digits and dashes. The client refuses such a key request before
/// sending it and the mock control plane refuses it too, in Tailscale's words.
#[tokio::test]
async fn tags_are_held_to_tailscale_check_tag() {
    for ok in ["tag:k8s", "tag:lab-k8s", "tag:A1-b2", "tag:x"] {
        assert_eq!(castle_tailscale::check_tag(ok), Ok(()), "{ok}");
    }
    let refused = [
        ("lab-k8s", "tags must start with 'tag:'"),
        ("Tag:k8s", "tags must start with 'tag:'"),
        ("tag:", "tag names must not be empty"),
        (
            "tag:1k8s",
            "tag names must start with a letter, after 'tag:'",
        ),
        (
            "tag:-k8s",
            "tag names must start with a letter, after 'tag:'",
        ),
        (
            "tag:k8s_lab",
            "tag names can only contain numbers, letters, or dashes",
        ),
        (
            "tag:k8s.lab",
            "tag names can only contain numbers, letters, or dashes",
        ),
        (
            "tag:k8s:x",
            "tag names can only contain numbers, letters, or dashes",
        ),
        (
            "tag:lab k8s",
            "tag names can only contain numbers, letters, or dashes",
        ),
        (
            "tag:läb",
            "tag names can only contain numbers, letters, or dashes",
        ),
    ];
    let (_control, api) = lab();
    for (tag, words) in refused {
        assert_eq!(castle_tailscale::check_tag(tag), Err(words), "{tag}");
        let request = KeyRequest {
            tags: vec![tag.into()],
            ..policy()
        };
        let e = api.create_key(&request).await.unwrap_err();
        // The control plane's answer: a 400 with the rule.
        assert!(
            matches!(&e, Error::Api { status: 400, message, .. } if *message == format!("tag({tag:?}): {words}")),
            "{tag}: {e:?}"
        );
        // The client refuses it before anything is sent.
        assert!(
            matches!(request.validate(), Err(Error::InvalidRequest { reason }) if reason == format!("tag({tag:?}): {words}")),
            "{tag}"
        );
    }
}
