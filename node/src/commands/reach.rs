//! Reaching the nodes from the CLI: what `--addr` may say, and why a node
//! could not be talked to, in words a person can act on.
//!
//! `--addr` takes `HOST:PORT`, `http://HOST:PORT` (plain text) or
//! `https://HOST:PORT` (TLS, which needs `--ca`); [`addrs`] turns each
//! into `HOST:PORT` and refuses what cannot be a node's gRPC address.
//!
//! The client library reports transport failures as it sees them (a
//! refused connection, a broken stream), and it retries a node that
//! answers in a language it does not speak (an HTTP/1.1 port, TLS on one
//! side only) until its retry budget is spent. [`guard`] runs a command's
//! calls beside a watch: once a call has waited [`WATCH_AFTER`], or has
//! failed without an answer from a node, every address is probed once
//! (one TCP connection each, a few milliseconds):
//! - a refused connection or no route ([`Finding::Refused`],
//!   [`Finding::Unreachable`]);
//! - an HTTP/1.1 server (the node's HTTP/Hrana API or metrics port): its
//!   `/health` names the node and the leader's gRPC address
//!   ([`Finding::Http`]);
//! - TLS on one side only ([`Finding::SpeaksTls`], [`Finding::NotTls`]), or
//!   a certificate the CA does not vouch for ([`Finding::BadCertificate`]).
//!
//! When every address has such a finding the command fails at once with
//! them; otherwise it waits for its call as before. A probe of a healthy
//! node finds nothing ([`Finding::Nothing`]): it opens a connection,
//! sends a request the node refuses, and closes it.

use client::{Error, ErrorCode};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a call may wait before the addresses are probed.
pub const WATCH_AFTER: Duration = Duration::from_millis(500);

/// How long one probe may take, per step (connect, handshake, reply).
const PROBE_STEP: Duration = Duration::from_secs(1);

/// The longest a failed call's error waits for the probes that may
/// explain it; past this it is reported as it came.
const SURVEY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The HOST:PORT of each `--addr`, and whether any was given as `https://`.
/// `tls`: whether `--ca` was given.
pub fn addrs(given: &[String], tls: bool) -> Result<Vec<String>, String> {
    given
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| addr(a, tls))
        .collect()
}

fn addr(given: &str, tls: bool) -> Result<String, String> {
    let Some((scheme, rest)) = given.split_once("://") else {
        return Ok(given.to_owned());
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('/') {
        return Err(format!(
            "--addr {given}: a node address has no path; give HOST:PORT (the node's gRPC port, default 4001)"
        ));
    }
    match (scheme, tls) {
        ("http", false) | ("https", true) => Ok(hostport.to_owned()),
        ("http", true) => Err(format!(
            "--addr {given}: http:// means plain text, but --ca asks for TLS; use https://{hostport} or drop --ca"
        )),
        ("https", false) => Err(format!(
            "--addr {given}: https:// means TLS; pass --ca FILE (the CA that signed the nodes' certificates)"
        )),
        _ => Err(format!(
            "--addr {given}: unknown scheme {scheme}://; give HOST:PORT, http://HOST:PORT or https://HOST:PORT"
        )),
    }
}

/// What a probe of one address found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Nothing wrong that a probe can see (or nothing it can tell).
    Nothing,
    /// The connection was refused: nothing listens there.
    Refused,
    /// No connection could be made (no route, host down, timed out).
    Unreachable(String),
    /// An HTTP/1.1 server answered; its `/health` named node `id` and the
    /// leader's gRPC address, when it is a Quorumlite HTTP API.
    Http {
        id: Option<u64>,
        leader: Option<String>,
    },
    /// Plain text was sent to a TLS server.
    SpeaksTls,
    /// A TLS handshake met a server that does not speak TLS.
    NotTls,
    /// The server speaks TLS, but its certificate was refused.
    BadCertificate(String),
}

impl Finding {
    /// Whether this finding alone explains why no call can succeed.
    fn explains(&self) -> bool {
        *self != Finding::Nothing
    }

    /// Whether the server there cannot have been a node serving our
    /// calls: it speaks another protocol. A refusal now proves nothing of
    /// a call made before (the node may have died since).
    fn never_served(&self) -> bool {
        matches!(
            self,
            Finding::Http { .. }
                | Finding::SpeaksTls
                | Finding::NotTls
                | Finding::BadCertificate(_)
        )
    }

    /// The sentence for `addr`.
    fn describe(&self, addr: &str) -> String {
        match self {
            Finding::Nothing => format!("{addr}: no problem found"),
            Finding::Refused => format!(
                "{addr} refused the connection: is the node running? is the port the gRPC port (default 4001)?"
            ),
            Finding::Unreachable(why) => format!(
                "cannot reach {addr} ({why}): is the host up and the address right? is a firewall in the way?"
            ),
            Finding::Http { id, leader } => {
                let whose = id.map_or("an HTTP/1.1 port (a node's HTTP API or metrics?)".to_owned(), |id| {
                    format!("node {id}'s HTTP (Hrana) port")
                });
                let grpc = match leader.as_deref() {
                    Some(l) if !l.is_empty() => {
                        format!("; the leader's gRPC address is {l}")
                    }
                    _ => String::new(),
                };
                format!(
                    "{addr} is {whose}, not a gRPC port: pass the node's gRPC address (its --listen, default port 4001){grpc}"
                )
            }
            Finding::SpeaksTls => format!(
                "{addr}: the node speaks TLS; pass --ca FILE (the CA that signed the nodes' certificates)"
            ),
            Finding::NotTls => format!(
                "{addr}: the node speaks plain text, not TLS; drop --ca (and https://)"
            ),
            Finding::BadCertificate(why) => format!(
                "{addr}: the node's TLS certificate was refused ({why}): is --ca the CA that signed it, and is the host among its names (quorumlite cert issue --host)?"
            ),
        }
    }
}

/// Classify the first bytes a server sent back to a plain-text HTTP/1.1
/// request (`GET /health`).
pub fn classify_plain_reply(reply: &[u8]) -> Finding {
    match reply {
        // A TLS record: alert (21) or handshake (22), version 3.x.
        [21 | 22, 3, ..] => Finding::SpeaksTls,
        _ if reply.starts_with(b"HTTP/1.") => {
            let body = reply
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(&[][..], |at| &reply[at + 4..]);
            let health: Option<serde_json::Value> = serde_json::from_slice(body).ok();
            let field = |k: &str| health.as_ref().and_then(|h| h.get(k).cloned());
            Finding::Http {
                id: field("id").and_then(|v| v.as_u64()),
                leader: field("leader").and_then(|v| v.as_str().map(str::to_owned)),
            }
        }
        _ => Finding::Nothing,
    }
}

/// Probe `addr` once: plain text, or TLS with `ca_pem`'s roots.
pub async fn probe(addr: &str, ca_pem: Option<&[u8]>) -> Finding {
    let stream = match tokio::time::timeout(PROBE_STEP, TcpStream::connect(addr)).await {
        Err(_) => return Finding::Unreachable("no answer to the connection in 1 s".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Finding::Refused,
        Ok(Err(e)) => return Finding::Unreachable(e.to_string()),
        Ok(Ok(s)) => s,
    };
    match ca_pem {
        None => probe_plain(stream, addr).await,
        Some(pem) => probe_tls(stream, addr, pem).await,
    }
}

fn health_request(addr: &str) -> String {
    format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// Read what the server sends, up to 8 KiB, until it closes or pauses.
async fn read_reply<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 2048];
    while reply.len() < 8192 {
        match tokio::time::timeout(PROBE_STEP, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    reply
}

/// Plain text: an HTTP/1.1 request, then (when the reply told nothing) a
/// TLS handshake that trusts no CA: a certificate refused for want of
/// one proves the server speaks TLS.
async fn probe_plain(mut stream: TcpStream, addr: &str) -> Finding {
    if stream
        .write_all(health_request(addr).as_bytes())
        .await
        .is_err()
    {
        return Finding::Nothing;
    }
    let found = classify_plain_reply(&read_reply(&mut stream).await);
    if found != Finding::Nothing {
        return found;
    }
    drop(stream);
    let Ok(Ok(stream)) = tokio::time::timeout(PROBE_STEP, TcpStream::connect(addr)).await else {
        return Finding::Nothing;
    };
    match probe_tls(stream, addr, b"").await {
        Finding::BadCertificate(_) | Finding::Http { .. } => Finding::SpeaksTls,
        _ => Finding::Nothing,
    }
}

/// TLS, trusting the CAs in `ca_pem` (none when empty).
async fn probe_tls(stream: TcpStream, addr: &str, ca_pem: &[u8]) -> Finding {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return Finding::Nothing;
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return Finding::Nothing;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = match tokio::time::timeout(PROBE_STEP, connector.connect(name, stream)).await {
        Err(_) => return Finding::Nothing,
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return classify_tls_failure(&e),
    };
    // A TLS HTTP/1.1 server: the node's HTTP API or metrics over TLS.
    if tls.get_ref().1.alpn_protocol() == Some(b"http/1.1") {
        if tls
            .write_all(health_request(addr).as_bytes())
            .await
            .is_err()
        {
            return Finding::Http {
                id: None,
                leader: None,
            };
        }
        return match classify_plain_reply(&read_reply(&mut tls).await) {
            found @ Finding::Http { .. } => found,
            _ => Finding::Http {
                id: None,
                leader: None,
            },
        };
    }
    Finding::Nothing
}

/// A failed TLS handshake: the server closed the connection or sent
/// something that is not TLS (a plain server reading a ClientHello as a
/// bad request), or its certificate was refused.
fn classify_tls_failure(e: &std::io::Error) -> Finding {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidCertificate(_) => Finding::BadCertificate(tls.to_string()),
            rustls::Error::InvalidMessage(_) => Finding::NotTls,
            _ => Finding::Nothing,
        };
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => Finding::NotTls,
        _ => Finding::Nothing,
    }
}

/// The error that explains why no address can serve, when every one has
/// a finding; `None` otherwise. For a write whose outcome is unknown
/// (`INDETERMINATE`), only findings that prove no node was ever talked to
/// there replace it.
pub fn explain(findings: &[(String, Finding)], failed: Option<&Error>) -> Option<Error> {
    if findings.is_empty() || !findings.iter().all(|(_, f)| accounts(f, failed)) {
        return None;
    }
    let text: Vec<String> = findings.iter().map(|(a, f)| f.describe(a)).collect();
    Some(Error::new(ErrorCode::Unavailable, text.join("; ")))
}

/// Whether `finding` accounts for its address's part in `failed` (`None`:
/// a call still waiting).
fn accounts(finding: &Finding, failed: Option<&Error>) -> bool {
    if failed.is_some_and(|e| e.code == ErrorCode::Indeterminate) {
        finding.never_served()
    } else {
        finding.explains()
    }
}

/// Probe every address at once and [`explain`] the findings, giving up
/// as soon as one address accounts for nothing (then nothing can be
/// explained): a frozen node that accepts connections and never answers
/// must not hold the command up once the others have been probed.
pub async fn survey(
    addrs: &[String],
    ca_pem: Option<&[u8]>,
    failed: Option<&Error>,
) -> Option<Error> {
    use futures::StreamExt;
    let mut probes: futures::stream::FuturesUnordered<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| async move { (i, a.clone(), probe(a, ca_pem).await) })
        .collect();
    let mut found = Vec::with_capacity(addrs.len());
    while let Some((i, addr, finding)) = probes.next().await {
        if !accounts(&finding, failed) {
            return None;
        }
        found.push((i, addr, finding));
    }
    found.sort_by_key(|(i, _, _)| *i);
    let found: Vec<(String, Finding)> = found.into_iter().map(|(_, a, f)| (a, f)).collect();
    explain(&found, failed)
}

/// Whether a failed call may have failed for want of a node to talk to:
/// no answer (unreached, timed out, a write's reply lost) rather than a
/// node's own refusal.
fn transport_failure(e: &Error) -> bool {
    e.unreached()
        || matches!(
            e.code,
            ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Indeterminate
        )
}

/// Run `call`, the work of a command on the nodes at `addrs`; fail at once
/// with the reason when no address can serve (see the module docs).
pub async fn guard<T>(
    addrs: &[String],
    ca_pem: Option<&[u8]>,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let watch = async {
        tokio::time::sleep(WATCH_AFTER).await;
        match survey(addrs, ca_pem, None).await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = call => match result {
            Err(e) if transport_failure(&e) => {
                let found = tokio::time::timeout(SURVEY_AFTER_FAILURE, survey(addrs, ca_pem, Some(&e)));
                Err(found.await.ok().flatten().unwrap_or(e))
            }
            other => other,
        },
        e = watch => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_may_be_urls_whose_scheme_must_match_the_tls_choice() {
        let ok = |a: &str, tls: bool| addrs(&[a.to_owned()], tls);
        assert_eq!(
            ok("127.0.0.1:4001", false),
            Ok(vec!["127.0.0.1:4001".into()])
        );
        assert_eq!(
            ok("http://127.0.0.1:4001", false),
            Ok(vec!["127.0.0.1:4001".into()])
        );
        assert_eq!(ok("http://db1:4001/", false), Ok(vec!["db1:4001".into()]));
        assert_eq!(ok("https://db1:4001", true), Ok(vec!["db1:4001".into()]));
        let err = |a: &str, tls: bool, why: &str| {
            let e = ok(a, tls).expect_err(a);
            assert!(e.contains(why), "{a}: {e}");
        };
        err("https://db1:4001", false, "pass --ca");
        err("http://db1:4001", true, "use https://db1:4001 or drop --ca");
        err("grpc://db1:4001", false, "unknown scheme");
        err("http://db1:4001/v2/pipeline", false, "no path");
    }

    #[test]
    fn a_plain_reply_tells_tls_from_http_from_anything_else() {
        assert_eq!(
            classify_plain_reply(&[21, 3, 3, 0, 2, 2, 50]),
            Finding::SpeaksTls
        );
        assert_eq!(
            classify_plain_reply(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"id\":2,\"leader\":\"10.0.0.1:4001\",\"status\":\"ok\"}"
            ),
            Finding::Http {
                id: Some(2),
                leader: Some("10.0.0.1:4001".into())
            }
        );
        assert_eq!(
            classify_plain_reply(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Finding::Http {
                id: None,
                leader: None
            }
        );
        // An HTTP/2 server closing on a bad preface, or sending GOAWAY.
        assert_eq!(classify_plain_reply(b""), Finding::Nothing);
        assert_eq!(classify_plain_reply(&[0, 0, 8, 7, 0]), Finding::Nothing);
    }

    #[test]
    fn only_findings_at_every_address_explain_a_failure() {
        let refused = ("a:1".to_owned(), Finding::Refused);
        let fine = ("b:1".to_owned(), Finding::Nothing);
        assert!(explain(&[refused.clone(), fine], None).is_none());
        assert!(explain(&[], None).is_none());
        // A write that may have been applied stays indeterminate when the
        // node refuses now: it may have died after applying it.
        let lost = Error::new(ErrorCode::Indeterminate, "reply lost");
        assert!(explain(std::slice::from_ref(&refused), Some(&lost)).is_none());
        let http = (
            "a:1".to_owned(),
            Finding::Http {
                id: None,
                leader: None,
            },
        );
        assert!(explain(&[http], Some(&lost)).is_some());
        let e = explain(&[refused], None).expect("explained");
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("a:1 refused the connection: is the node running? is the port the gRPC port (default 4001)?"), "{e}");
    }
}
