//! The git probe against a smart-HTTP server (wiremock standing in for GitHub):
//! exactly one GET of `info/refs?service=git-upload-pack` with the token as basic
//! auth, nothing else.

#![allow(clippy::unwrap_used)]

use castle_core::git::{GitError, GitRemote as _, HttpGit};
use secrecy::SecretString;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn pkt(s: &str) -> String {
    format!("{:04x}{s}", s.len() + 4)
}

#[tokio::test]
async fn refs_come_from_one_authenticated_get_of_info_refs() {
    let server = MockServer::start().await;
    let body = format!(
        "{}0000{}{}0000",
        pkt("# service=git-upload-pack\n"),
        pkt("95dcfa3633004da0049d3d0fa03f80589cbcaf31 HEAD\0symref=HEAD:refs/heads/main\n"),
        pkt("95dcfa3633004da0049d3d0fa03f80589cbcaf31 refs/heads/main\n"),
    );
    // base64("git:s3cret")
    Mock::given(method("GET"))
        .and(path("/lab/castle.git/info/refs"))
        .and(query_param("service", "git-upload-pack"))
        .and(header("authorization", "Basic Z2l0OnMzY3JldA=="))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "content-type",
                    "application/x-git-upload-pack-advertisement",
                )
                .set_body_string(body),
        )
        .expect(1)
        .mount(&server)
        .await;
    let git = HttpGit::new().unwrap();
    let refs = git
        .refs(
            &format!("{}/lab/castle.git", server.uri()),
            Some(&SecretString::from("s3cret")),
        )
        .await
        .unwrap();
    assert_eq!(refs, ["HEAD", "refs/heads/main"]);
    let received = server.received_requests().await.unwrap();
    assert!(received.iter().all(|r| r.method.as_str() == "GET"));
}

#[tokio::test]
async fn a_refused_token_is_named_as_such() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let err = HttpGit::new()
        .unwrap()
        .refs(
            &format!("{}/x.git", server.uri()),
            Some(&SecretString::from("bad")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitError::Refused { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("bad"));
}
