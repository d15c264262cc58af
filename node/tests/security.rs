//! TLS between nodes and to clients, certificate reload, bearer tokens:
//! real processes, real certificates made by `quorumlite cert`.

mod common;

use client::{Client, ClientConfig, Consistency, ErrorCode, Statement, TlsConfig, Value};
use common::tls::{cert, pki, tls_flags};
use common::{Cluster, BIN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tls_client(addrs: Vec<String>, ca: &Path, token: Option<&str>) -> Client {
    Client::with_config(
        addrs,
        ClientConfig {
            tls: Some(TlsConfig {
                ca_pem: std::fs::read(ca).expect("ca"),
                identity: None,
                domain: None,
            }),
            auth_token: token.map(str::to_owned),
            retry_budget: Duration::from_secs(5),
            ..ClientConfig::default()
        },
    )
    .expect("client")
}

/// Wait until some node of `addrs` answers as leader through `make`.
async fn wait_leader(addrs: &[String], make: impl Fn(String) -> Client) -> usize {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        for (i, a) in addrs.iter().enumerate() {
            if let Ok(s) = make(a.clone()).status(false).await {
                if s.role == "leader" {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader within 15 s");
}

fn insert(v: i64) -> Statement {
    Statement::with_params("INSERT INTO t (v) VALUES (?)", vec![Value::Integer(v)])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mutual_tls_cluster_serves_tls_clients_and_refuses_plain_text() {
    let certs = tempfile::tempdir().expect("tempdir");
    pki(certs.path());
    let dir = certs.path().to_owned();
    let metrics_port = common::free_port();
    let cluster = Cluster::start_with(3, &[], |id| {
        let mut flags = tls_flags(&dir, id);
        if id == 1 {
            flags.extend([
                "--metrics-listen".into(),
                format!("127.0.0.1:{metrics_port}"),
            ]);
        }
        flags
    });
    let ca = certs.path().join("ca.pem");
    let addrs = cluster.addrs();
    let leader = wait_leader(&addrs, |a| tls_client(vec![a], &ca, None)).await;

    // The metrics endpoint speaks TLS too, with the node's certificate.
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let page = https_get(&metrics_addr, "/metrics", &ca).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("quorumlite_raft_role"), "{page}");
    let plain = plain_get(&metrics_addr).await;
    assert!(
        !plain.contains("quorumlite_raft_role"),
        "metrics leaked over plain HTTP"
    );
    let follower = (leader + 1) % 3;

    // A write sent to a follower is forwarded over TLS, and a linearizable
    // read on the other follower runs its read barrier over TLS.
    let f = tls_client(vec![addrs[follower].clone()], &ca, None);
    f.execute(vec!["CREATE TABLE t (v INTEGER)".into(), insert(7)])
        .await
        .expect("write through a follower over TLS");
    let other = tls_client(vec![addrs[(leader + 2) % 3].clone()], &ca, None);
    let rows = other
        .query("SELECT v FROM t", Consistency::Linearizable)
        .await
        .expect("linearizable read over TLS");
    assert_eq!(rows.rows, vec![vec![Value::Integer(7)]]);

    // A client that speaks plain text gets an error, not data.
    let plain = Client::with_config(
        [addrs[leader].clone()],
        ClientConfig {
            retry_budget: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    plain
        .query("SELECT v FROM t", Consistency::Linearizable)
        .await
        .expect_err("plain text to a TLS node must fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_certificate_from_another_ca_is_refused_at_start_and_holds_no_data() {
    let good = tempfile::tempdir().expect("tempdir");
    pki(good.path());
    let rogue = tempfile::tempdir().expect("tempdir");
    pki(rogue.path());
    let (g, r) = (good.path().to_owned(), rogue.path().to_owned());
    let f = |dir: &Path, name: &str| dir.join(name).to_string_lossy().into_owned();
    // The members also accept client certificates of the rogue CA (as
    // clients, never as peers). Node 3 trusts the cluster CA but holds a
    // certificate of the rogue CA: a client that tries to be a node.
    let cluster = Cluster::start_with(3, &[], |id| {
        if id == 3 {
            vec![
                "--tls-cert".into(),
                f(&r, "node3.pem"),
                "--tls-key".into(),
                f(&r, "node3.key"),
                "--tls-ca".into(),
                f(&g, "ca.pem"),
            ]
        } else {
            let mut flags = tls_flags(&g, id);
            flags.extend(["--tls-client-ca".into(), f(&r, "ca.pem")]);
            flags
        }
    });
    let ca = good.path().join("ca.pem");
    let addrs = cluster.addrs();
    let members: Vec<String> = addrs[..2].to_vec();
    wait_leader(&members, |a| tls_client(vec![a], &ca, None)).await;
    let db = tls_client(members.clone(), &ca, None);
    db.execute(vec!["CREATE TABLE t (v INTEGER)".into()])
        .await
        .expect("the two good nodes form a quorum");
    for v in 0..20 {
        db.execute(vec![insert(v)]).await.expect("write");
    }
    // Node 3 asked the founder for the cluster's id and was refused as no
    // peer: it stops at start, holding nothing; the founder logged the
    // refusal with its address.
    let mut cluster = cluster;
    let status = cluster
        .wait_exit(3, Duration::from_secs(10))
        .expect("the rogue node stops, refused");
    assert!(!status.success());
    let log = cluster.log_of(3);
    assert!(log.contains("refused this node as a peer"), "{log}");
    assert!(
        !cluster.data_dir(3).join("IDENTITY").exists(),
        "no cluster id"
    );
    assert!(!cluster.data_dir(3).join("data.db").exists(), "no data");
    let founder = cluster.log_of(1);
    let refusals: Vec<&str> = founder
        .lines()
        .filter(|l| l.contains("refused a node-to-node call") && l.contains("no-certificate"))
        .collect();
    assert_eq!(refusals.len(), 1, "{founder}");
    assert!(refusals[0].contains("caller=127.0.0.1:"), "{}", refusals[0]);
    let leader_view = db.status(false).await.expect("status");
    assert!(leader_view.version >= 21, "{leader_view:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_rotated_on_disk_is_served_after_sighup() {
    let certs = tempfile::tempdir().expect("tempdir");
    pki(certs.path());
    let dir = certs.path().to_owned();
    let cluster = Cluster::start_with(3, &[], |id| tls_flags(&dir, id));
    let ca = certs.path().join("ca.pem");
    let addrs = cluster.addrs();
    wait_leader(&addrs, |a| tls_client(vec![a], &ca, None)).await;

    let before = served_cert(&addrs[0], &ca).await;
    assert_eq!(before, pem_cert(&certs.path().join("node1.pem")));
    // Rotate node 1's certificate on disk (a new key and serial).
    let d = certs.path().to_str().expect("utf-8");
    cert(&[
        "issue",
        "--dir",
        d,
        "--name",
        "node1",
        "--host",
        "127.0.0.1",
        "--force",
    ]);
    let rotated = pem_cert(&certs.path().join("node1.pem"));
    assert_ne!(before, rotated);
    assert_eq!(
        served_cert(&addrs[0], &ca).await,
        before,
        "without SIGHUP the old certificate stays"
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(cluster.pid(1) as libc::pid_t, libc::SIGHUP);
    }
    let started = Instant::now();
    loop {
        if served_cert(&addrs[0], &ca).await == rotated {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "node 1 still serves the old certificate 5 s after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The node keeps working with its new certificate.
    let db = tls_client(vec![addrs[0].clone()], &ca, None);
    db.execute(vec!["CREATE TABLE t (v INTEGER)".into(), insert(1)])
        .await
        .expect("write through the rotated node");
}

/// A TLS client trusting `ca`, for raw connections.
fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&std::fs::read(ca).expect("ca")) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// `GET path` over HTTPS/1.1; the whole response as text.
async fn https_get(addr: &str, path: &str, ca: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tls_connector(ca)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /metrics` in plain text; whatever comes back within 2 s.
async fn plain_get(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn pem_cert(path: &PathBuf) -> Vec<u8> {
    let pem = std::fs::read(path).expect("pem");
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate")
        .expect("parse")
        .to_vec()
}

/// The leaf certificate `addr` presents to a new TLS connection.
async fn served_cert(addr: &str, ca: &Path) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tls_connector(ca)
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

fn tokens_config(dir: &Path) -> PathBuf {
    common::tokens_config(
        dir,
        &[
            ("reader", "reader-secret-0123456789", &["read"]),
            ("app", "app-secret-0123456789", &["read", "write"]),
        ],
    )
}

fn plain_client(addrs: Vec<String>, token: Option<&str>) -> Client {
    Client::with_config(
        addrs,
        ClientConfig {
            auth_token: token.map(str::to_owned),
            retry_budget: Duration::from_secs(5),
            ..ClientConfig::default()
        },
    )
    .expect("client")
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_a_valid_token_or_permission_are_refused_and_nothing_is_written() {
    let conf = tempfile::tempdir().expect("tempdir");
    let file = tokens_config(conf.path());
    let file = file.to_str().expect("utf-8");
    let cluster = Cluster::start(3, &["--config", file]);
    let addrs = cluster.addrs();
    wait_leader(&addrs, |a| {
        plain_client(vec![a], Some("reader-secret-0123456789"))
    })
    .await;

    // A follower forwards the app's write with its token; the leader checks it again.
    let app = plain_client(addrs.clone(), Some("app-secret-0123456789"));
    app.execute(vec!["CREATE TABLE t (v INTEGER)".into(), insert(1)])
        .await
        .expect("the app token writes");
    for addr in &addrs {
        let via = plain_client(vec![addr.clone()], Some("app-secret-0123456789"));
        via.execute(vec![insert(2)])
            .await
            .expect("write via any node");
    }

    let none = plain_client(addrs.clone(), None);
    let e = none.execute(vec![insert(99)]).await.expect_err("no token");
    assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
    assert!(e.message.contains("missing bearer token"), "{e}");
    let e = none
        .query("SELECT count(*) FROM t", Consistency::Linearizable)
        .await
        .expect_err("no token");
    assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");

    let wrong = plain_client(addrs.clone(), Some("not-the-secret-0123456789"));
    let e = wrong
        .execute(vec![insert(99)])
        .await
        .expect_err("wrong token");
    assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
    assert!(
        !e.message.contains("not-the-secret"),
        "secrets are never echoed: {e}"
    );

    let reader = plain_client(addrs.clone(), Some("reader-secret-0123456789"));
    let e = reader
        .execute(vec![insert(99)])
        .await
        .expect_err("read-only token");
    assert_eq!(e.code, ErrorCode::PermissionDenied, "{e}");
    assert!(e.message.contains("write"), "{e}");

    // The CLI says the same, with a non-zero exit and the code in JSON.
    let out = Command::new(BIN)
        .args([
            "exec",
            "--json",
            "--addr",
            &addrs[0],
            "INSERT INTO t (v) VALUES (99)",
        ])
        .env_remove("QUORUMLITE_AUTH_TOKEN")
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNAUTHENTICATED"));

    // Nothing refused was written: 1 + 3 rows, no 99.
    let rows = reader
        .query(
            "SELECT count(*), sum(v = 99) FROM t",
            Consistency::Linearizable,
        )
        .await
        .expect("the reader reads");
    assert_eq!(rows.rows, vec![vec![Value::Integer(4), Value::Integer(0)]]);
    for node in &cluster.nodes {
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        assert!(
            !log.contains("secret-0123456789"),
            "a secret leaked into node {}'s log",
            node.id
        );
    }
}

/// Node-to-node calls (forwarding, read barriers, joins, campaigns) are on
/// their own service, admitted by peer credentials only: a client's token,
/// even one with every permission, opens none of them, on the leader or on
/// a follower, and nothing they carried is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_token_however_privileged_cannot_call_the_cluster_api() {
    use common::cluster_pb::cluster_client::ClusterClient;
    use common::cluster_pb::{
        CampaignRequest, HranaPipelineRequest, JoinRequest, ReadIndexRequest,
    };
    const ADMIN: &str = "admin-secret-0123456789";
    let conf = tempfile::tempdir().expect("tempdir");
    let file = common::tokens_config(conf.path(), &[("ops", ADMIN, &["read", "write", "admin"])]);
    let cluster = Cluster::start(3, &["--config", file.to_str().expect("utf-8")]);
    let addrs = cluster.addrs();
    wait_leader(&addrs, |a| plain_client(vec![a], Some(ADMIN))).await;
    let admin = plain_client(addrs.clone(), Some(ADMIN));
    admin
        .execute(vec!["CREATE TABLE t (v INTEGER)".into()])
        .await
        .expect("the admin token writes through the public API");

    fn with_token<T>(message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN}").parse().expect("header"),
        );
        req
    }
    fn refused<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) {
        let status = r.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains("only cluster members"),
            "{what}: {status:?}"
        );
    }
    for addr in &addrs {
        let mut raw = ClusterClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let write = client::pb::ExecuteRequest {
            statements: vec![insert(7).into()],
            ..Default::default()
        };
        refused("execute", raw.execute(with_token(write.clone())).await);
        refused(
            "execute batch",
            raw.execute_batch(with_token(client::pb::ExecuteBatchRequest {
                writes: vec![write],
            }))
            .await,
        );
        refused(
            "hrana pipeline",
            raw.hrana_pipeline(with_token(HranaPipelineRequest {
                body: br#"{"baton":null,"requests":[{"type":"execute","stmt":{"sql":"INSERT INTO t VALUES (8)"}}]}"#.to_vec(),
                version: 2,
                ..Default::default()
            }))
            .await,
        );
        refused(
            "change membership",
            raw.change_membership(with_token(client::pb::ChangeMembershipRequest {
                action: client::pb::MembershipAction::Add as i32,
                id: 9,
                addr: "127.0.0.1:1".into(),
                learner: true,
            }))
            .await,
        );
        refused(
            "transfer leader",
            raw.transfer_leader(with_token(client::pb::TransferLeaderRequest { to: 1 }))
                .await,
        );
        refused(
            "read index",
            raw.read_index(with_token(ReadIndexRequest {})).await,
        );
        refused(
            "join",
            raw.join(with_token(JoinRequest {
                id: 9,
                addr: "127.0.0.1:1".into(),
                learner: true,
                forwarded: false,
            }))
            .await,
        );
        refused(
            "campaign",
            raw.campaign(with_token(CampaignRequest {
                campaign: true,
                pause_ms: 0,
            }))
            .await,
        );
    }
    let rows = admin
        .query("SELECT count(*) FROM t", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(0)]],
        "nothing was written"
    );
    let status = admin.status(false).await.expect("status");
    assert!(
        status.members.iter().all(|m| m.id != 9),
        "no member was added: {:?}",
        status.members
    );
}
