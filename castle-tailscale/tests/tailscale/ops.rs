//! The tailnet-key step's operations: against the mock, and against wiremock where
//! the answer has to be one the mock never gives.

use castle_tailscale::ops::{devices_of, mint_rebirth_key, remove_devices, remove_stale_devices};
use castle_tailscale::{Error, KeyRequest, MockTailscale, TailscaleApi as _};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::mock::lab;
use crate::policy;

fn hostnames() -> Vec<String> {
    ["lab-cp-1", "lab-worker-1", "lab-worker-2"]
        .map(String::from)
        .to_vec()
}

fn tags() -> Vec<String> {
    vec!["tag:lab-k8s".into()]
}

fn sorted_names(control: &MockTailscale) -> Vec<String> {
    let mut names: Vec<String> = control.devices().into_iter().map(|d| d.name).collect();
    names.sort();
    names
}

/// What the lab glue does when the VMs go and come back with a fresh key.
async fn rebirth(control: &MockTailscale, api: &MockTailscale, remove: bool) -> Vec<String> {
    for h in hostnames() {
        control.device_offline(&h);
    }
    let removed = if remove {
        remove_stale_devices(api, &hostnames(), &tags())
            .await
            .unwrap()
    } else {
        Vec::new()
    };
    let key = mint_rebirth_key(api, &policy()).await.unwrap();
    for h in hostnames() {
        control.join(&key.key, &h).unwrap();
    }
    removed
}

#[tokio::test]
async fn two_rebirths_in_a_row_leave_one_device_per_node_with_the_exact_names() {
    let (control, api) = lab();
    let other = api.create_key(&policy()).await.unwrap();
    control.join(&other.key, "laptop").unwrap();
    control.join(&other.key, "lab-worker-1-1").unwrap();
    control.device_offline("laptop");

    assert!(rebirth(&control, &api, true).await.is_empty());
    let mut removed = rebirth(&control, &api, true).await;
    removed.sort();
    assert_eq!(
        removed,
        [
            "lab-cp-1.tail0000.ts.net",
            "lab-worker-1.tail0000.ts.net",
            "lab-worker-2.tail0000.ts.net"
        ]
    );
    assert_eq!(
        sorted_names(&control),
        [
            "lab-cp-1.tail0000.ts.net",
            "lab-worker-1-1.tail0000.ts.net",
            "lab-worker-1.tail0000.ts.net",
            "lab-worker-2.tail0000.ts.net",
            "laptop.tail0000.ts.net",
        ],
        "the cluster's three with their exact names, and the two others untouched"
    );
    let ours = devices_of(&api, &hostnames(), &tags()).await.unwrap();
    assert_eq!(ours.len(), 3);
    assert!(ours.iter().all(|d| d.connected == Some(true)));
}

#[tokio::test]
async fn without_the_removal_a_reborn_node_gets_a_suffix() {
    let (control, api) = lab();
    rebirth(&control, &api, false).await;
    rebirth(&control, &api, false).await;
    assert_eq!(control.devices().len(), 6, "the old ones linger");
    assert!(
        sorted_names(&control).contains(&"lab-cp-1-1.tail0000.ts.net".to_string()),
        "the reference setup's `name-1`"
    );
}

#[tokio::test]
async fn stale_removal_touches_only_the_clusters_offline_devices() {
    let (control, api) = lab();
    let foreign_secret = SecretString::from("other-secret");
    control.add_oauth_client("other", &foreign_secret, &["auth_keys"], &["tag:other"]);
    let foreign = control.session(&SecretString::from("other"), &foreign_secret);
    let foreign_key = foreign
        .create_key(&KeyRequest {
            tags: vec!["tag:other".into()],
            ..policy()
        })
        .await
        .unwrap();
    let key = api.create_key(&policy()).await.unwrap();
    control.join(&key.key, "lab-cp-1").unwrap();
    control.join(&key.key, "lab-worker-1").unwrap();
    control.join(&key.key, "lab-cp-10").unwrap();
    control.join(&foreign_key.key, "lab-worker-2").unwrap();
    for h in ["lab-cp-1", "lab-cp-10", "lab-worker-2"] {
        control.device_offline(h);
    }
    let removed = remove_stale_devices(&api, &hostnames(), &tags())
        .await
        .unwrap();
    assert_eq!(removed, ["lab-cp-1.tail0000.ts.net"]);
    assert_eq!(
        sorted_names(&control),
        [
            "lab-cp-10.tail0000.ts.net",
            "lab-worker-1.tail0000.ts.net",
            "lab-worker-2.tail0000.ts.net"
        ],
        "another hostname, an online node of ours, a device without our tag: all stay"
    );
    let destroyed = remove_devices(&api, &hostnames(), &tags()).await.unwrap();
    assert_eq!(destroyed, ["lab-worker-1.tail0000.ts.net"]);
    assert!(
        devices_of(&api, &hostnames(), &tags())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(control.devices().len(), 2);
}

#[tokio::test]
async fn an_invalid_policy_never_reaches_the_api() {
    // Any call would answer 401: this API has no credentials.
    let api = MockTailscale::new();
    let e = mint_rebirth_key(
        &api,
        &KeyRequest {
            description: "castle rebirth of a cluster whose name is far too long".into(),
            ..policy()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
    assert!(e.to_string().contains("at most 50"), "{e}");
}

#[tokio::test]
async fn a_device_that_vanished_meanwhile_counts_as_gone() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "t", "expires_in": 3600})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tailnet/-/devices"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"devices": [
            {"nodeId": "gone", "hostname": "lab-cp-1", "name": "lab-cp-1.t.ts.net", "tags": ["tag:lab-k8s"], "connectedToControl": false},
            {"nodeId": "nameless", "hostname": "", "name": "lab-worker-2-3.t.ts.net", "tags": ["tag:lab-k8s"], "connectedToControl": false},
            {"nodeId": "stranger", "hostname": "", "name": "lab-worker-2x.t.ts.net", "tags": ["tag:lab-k8s"], "connectedToControl": false}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v2/device/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "not found"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v2/device/nameless"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v2/device/stranger"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut s = castle_tailscale::TailscaleSettings::new(
        SecretString::from("id"),
        SecretString::from("secret"),
    );
    s.base_url = server.uri();
    let c = castle_tailscale::TailscaleClient::with_client(reqwest::Client::new(), s);
    let removed = remove_stale_devices(&c, &hostnames(), &tags())
        .await
        .unwrap();
    assert_eq!(removed, ["lab-worker-2-3.t.ts.net"]);
}

/// The Tailscale API's `POST /tailnet/{tailnet}/keys` (OpenAPI `createKey`) makes
/// the key before it answers, and `GET /tailnet/{tailnet}/keys` lists the active
/// keys with their description (`listTailnetKeys`, `Key.description`): a run that
/// never saw the first answer finds that key by the run's description.
#[tokio::test]
async fn a_first_mint_that_timed_out_after_the_server_made_the_key_leaves_one_live_key() {
    let (control, api) = lab();
    // A key of another run, with another description, must survive.
    let mut other = policy();
    other.description = "castle lab 0000aaaa".into();
    api.create_key(&other).await.unwrap();
    control.lose_next_answer("create_key").unwrap();
    let mut ours = policy();
    ours.description = castle_tailscale::ops::run_description("lab", "1234abcd");
    let key = mint_rebirth_key(&api, &ours).await.unwrap();
    assert_eq!(control.live_keys(), 2, "ours and the other run's");
    let live: Vec<_> = api
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.description == ours.description)
        .collect();
    assert_eq!(live.len(), 1, "exactly one live key of this run: {live:?}");
    assert_eq!(live[0].id, key.id, "and it is the one we hold");
    control.join(&key.key, "lab-cp-1").unwrap();
}

#[tokio::test]
async fn a_cleanup_that_fails_says_so_and_is_not_safe_to_retry() {
    let (control, api) = lab();
    control.lose_next_answer("create_key").unwrap();
    control
        .fail_permanently(
            "list_keys",
            "calling actor does not have enough permissions",
        )
        .unwrap();
    let e = mint_rebirth_key(&api, &policy()).await.unwrap_err();
    assert!(
        matches!(e, Error::MintUnresolved { .. }) && e.is_transient() && !e.is_safe_to_retry(),
        "{e}"
    );
    assert!(e.to_string().contains("castle rebirth of lab"), "{e}");
}

#[tokio::test]
async fn every_mint_ambiguous_but_cleaned_up_is_safe_to_retry() {
    let (control, api) = lab();
    for _ in 0..3 {
        control.lose_next_answer("create_key").unwrap();
    }
    let e = mint_rebirth_key(&api, &policy()).await.unwrap_err();
    assert!(
        matches!(e, Error::MintRolledBack { revoked: 1, .. }) && e.is_safe_to_retry(),
        "{e}"
    );
    assert_eq!(control.live_keys(), 0);
}

/// The OpenAPI `Device.connectedToControl` is optional: a device whose state the
/// API does not give may be online and is never removed as stale.
#[tokio::test]
async fn a_device_of_unknown_state_is_never_removed_as_stale() {
    let (control, api) = lab();
    let key = mint_rebirth_key(&api, &policy()).await.unwrap();
    for h in hostnames() {
        control.join(&key.key, &h).unwrap();
        control.device_offline(&h);
    }
    control.connection_unknown("lab-cp-1");
    let removed = remove_stale_devices(&api, &hostnames(), &tags())
        .await
        .unwrap();
    let mut removed = removed;
    removed.sort();
    assert_eq!(
        removed,
        [
            "lab-worker-1.tail0000.ts.net",
            "lab-worker-2.tail0000.ts.net"
        ]
    );
    assert!(control.devices().iter().any(|d| d.hostname == "lab-cp-1"));
}
