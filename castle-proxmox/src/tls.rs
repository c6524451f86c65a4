//! When the TLS handshake fails on the server's certificate, which CA to pin: a
//! second handshake records the chain the server presents (and is then broken off,
//! so nothing is ever sent to an untrusted server), and a small DER reader names
//! each certificate's subject, issuer and SHA-256 fingerprint.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};

use crate::PeerCert;

/// What the TLS layer said, when `e` failed on the server's certificate.
///
/// reqwest hands the handshake's `io::Error`s on as a source, one wrapped in
/// another; `io::Error::source` skips the error it wraps, so each one is opened
/// by hand.
pub(crate) fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error(err) {
            return Some(format!("invalid peer certificate: {problem:?}"));
        }
        next = err.source();
    }
    None
}

fn rustls_error<'a>(mut err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        err = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// The certificates `https://host:port` presents, leaf first; empty when it
/// cannot be reached within `timeout` or presents none.
pub(crate) async fn presented_chain(url: &reqwest::Url, timeout: Duration) -> Vec<PeerCert> {
    let Some(host) = url.host_str() else {
        return Vec::new();
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let recorder = Arc::new(Recorder::default());
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions() else {
        return Vec::new();
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&recorder) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    // Brackets are URL syntax, not part of an IPv6 address.
    let name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let Ok(server_name) = ServerName::try_from(name.clone()) else {
        return Vec::new();
    };
    let look = async {
        let tcp = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
        // The recorder refuses every certificate, so this always ends in an error.
        let _refused = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await;
        Ok::<(), std::io::Error>(())
    };
    if !matches!(tokio::time::timeout(timeout, look).await, Ok(Ok(()))) {
        return Vec::new();
    }
    recorder
        .chain()
        .iter()
        .filter_map(|der| summary(der))
        .collect()
}

/// Records the chain, then refuses it: the handshake never completes.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<Vec<u8>>>,
}

impl Recorder {
    fn chain(&self) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.push(end_entity.to_vec());
        seen.extend(intermediates.iter().map(|c| c.to_vec()));
        Err(rustls::Error::General("certificates recorded".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("never trusted".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("never trusted".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Subject, issuer, fingerprint and subjectAltNames of a DER certificate
/// (RFC 5280 4.1); `None` when it does not parse.
pub(crate) fn summary(der: &[u8]) -> Option<PeerCert> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // version [0] EXPLICIT, optional
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    rest = tlv(rest)?.2; // serialNumber
    rest = tlv(rest)?.2; // signature AlgorithmIdentifier
    let (SEQUENCE, issuer, after) = tlv(rest)? else {
        return None;
    };
    rest = tlv(after)?.2; // validity
    let (SEQUENCE, subject, after) = tlv(rest)? else {
        return None;
    };
    rest = tlv(after)?.2; // subjectPublicKeyInfo
    let mut names = Vec::new();
    while let Some((tag, content, after)) = tlv(rest) {
        if tag == 0xa3 {
            names = alt_names(content).unwrap_or_default();
        }
        rest = after;
    }
    let digest = Sha256::digest(der);
    let sha256 = digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Some(PeerCert {
        subject: name_text(subject)?,
        issuer: name_text(issuer)?,
        sha256,
        names,
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// One DER tag-length-value: the tag, its content and what follows it.
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *buf.first()?;
    let first = *buf.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in buf.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, buf.get(header..end)?, buf.get(end..)?))
}

/// A Name as `CN=..., OU=..., O=...`, in the order it is encoded.
fn name_text(mut name: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (SET, mut set, after) = tlv(name)? else {
            return None;
        };
        while !set.is_empty() {
            let (SEQUENCE, attr, next) = tlv(set)? else {
                return None;
            };
            let (OID, oid, value) = tlv(attr)? else {
                return None;
            };
            let (tag, text, _) = tlv(value)?;
            let text = match tag {
                // BMPString: UTF-16BE
                0x1e => String::from_utf16_lossy(
                    &text
                        .chunks(2)
                        .map(|p| u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]))
                        .collect::<Vec<_>>(),
                ),
                _ => String::from_utf8_lossy(text).into_owned(),
            };
            parts.push(format!("{}={text}", attribute(oid)));
            set = next;
        }
        name = after;
    }
    Some(parts.join(", "))
}

fn attribute(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        other => dotted(other),
    }
}

/// An OBJECT IDENTIFIER in dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value = 0u64;
    for b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The DNS names and IP addresses of the subjectAltName extension (2.5.29.17).
fn alt_names(explicit: &[u8]) -> Option<Vec<String>> {
    let (SEQUENCE, mut extensions, _) = tlv(explicit)? else {
        return None;
    };
    while !extensions.is_empty() {
        let (SEQUENCE, ext, next) = tlv(extensions)? else {
            return None;
        };
        let (OID, oid, mut rest) = tlv(ext)? else {
            return None;
        };
        if oid == [0x55, 0x1d, 0x11] {
            // critical BOOLEAN DEFAULT FALSE
            if rest.first() == Some(&0x01) {
                rest = tlv(rest)?.2;
            }
            let (0x04, octets, _) = tlv(rest)? else {
                return None;
            };
            let (SEQUENCE, mut general, _) = tlv(octets)? else {
                return None;
            };
            let mut names = Vec::new();
            while !general.is_empty() {
                let (tag, value, next) = tlv(general)?;
                match (tag, value.len()) {
                    (0x82, _) => names.push(String::from_utf8_lossy(value).into_owned()),
                    (0x87, 4) => names.push(
                        std::net::Ipv4Addr::new(value[0], value[1], value[2], value[3]).to_string(),
                    ),
                    (0x87, 16) => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(value);
                        names.push(std::net::Ipv6Addr::from(octets).to_string());
                    }
                    _ => {}
                }
                general = next;
            }
            return Some(names);
        }
        extensions = next;
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_foreign_der_is_no_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["pve.lan".to_string()])
            .map(|c| c.cert.der().to_vec())
            .unwrap_or_default();
        assert!(summary(&cert).is_some());
        for bad in [
            &cert[..cert.len() / 2],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[][..],
        ] {
            assert!(summary(bad).is_none());
        }
    }

    #[test]
    fn unknown_attributes_are_named_by_their_oid() {
        // 1.3.6.1.4.1.311.60.2.1.3 (jurisdictionC), 2.5.4.5 (serialNumber)
        assert_eq!(
            dotted(&[
                0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01, 0x03
            ]),
            "1.3.6.1.4.1.311.60.2.1.3"
        );
        assert_eq!(attribute(&[0x55, 0x04, 0x05]), "2.5.4.5");
    }
}
