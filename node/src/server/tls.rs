//! TLS on the node's one listener and on its connections to peers.
//!
//! One port serves clients and peers, so the handshake asks for a client
//! certificate without requiring one:
//! - a certificate is verified against `tls_ca` (and `tls_client_ca` when
//!   set); a bad one fails the handshake;
//! - a connection whose certificate verifies against `tls_ca` itself is a
//!   **peer** ([`ConnInfo::peer`]): only peers may call the Raft transport
//!   and `ReadIndex`. Clients authenticate with bearer tokens (`auth`).
//!
//! Outgoing connections (Raft replication, forwarded writes, read barriers)
//! present this node's certificate and verify the other side against
//! `tls_ca`.
//!
//! `reload` re-reads the PEM files (on SIGHUP): new connections use the new
//! certificates and CA; established ones keep theirs. A reload that fails
//! keeps the old material and says why.

pub use crate::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A certificate problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// What one load of the files produced.
struct Material {
    server: Arc<ServerConfig>,
    /// The same, speaking HTTP/1.1 (the metrics endpoint).
    http: Arc<ServerConfig>,
    /// Verifies that a client certificate comes from the cluster CA.
    peers: Arc<dyn ClientCertVerifier>,
    client: client::TlsConfig,
}

/// The node's TLS state; `reload` swaps it whole.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{}: {e}", path.display())))
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn roots(paths: &[&Path]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for path in paths {
        for cert in certs(path, &read(path)?)? {
            store
                .add(cert)
                .map_err(|e| TlsError(format!("{}: not a usable CA: {e}", path.display())))?;
        }
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsFiles) -> Result<Material, TlsError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let ca_pem = read(&files.ca)?;
    let chain = certs(&files.cert, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError(format!(
            "{}: no usable private key: {e}",
            files.key.display()
        ))
    })?;
    let mut accepted = vec![files.ca.as_path()];
    if let Some(c) = &files.client_ca {
        accepted.push(c.as_path());
    }
    let clients =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&accepted)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError(format!("client verifier: {e}")))?;
    let peers =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&[&files.ca])?), provider())
            .build()
            .map_err(|e| TlsError(format!("peer verifier: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError(format!(
                "{} and {} do not make a usable identity: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    let mut http = server.clone();
    server.alpn_protocols = vec![b"h2".to_vec()];
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Material {
        server: Arc::new(server),
        http: Arc::new(http),
        peers,
        client: client::TlsConfig {
            ca_pem,
            identity: Some((cert_pem, key_pem)),
            domain: None,
        },
    })
}

impl Tls {
    /// Load the files; the error names the one at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let material = load(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(material)),
        }))
    }

    /// Re-read the files; on error the old material stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = load(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(material);
        Ok(())
    }

    fn material(&self) -> Arc<Material> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// An acceptor for an HTTP/1.1 connection (the HTTP API), with the
    /// certificate current now.
    pub fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.material().http))
    }

    /// For this node's own client connections (forwarding, read barriers).
    pub fn client_tls(&self) -> client::TlsConfig {
        self.material().client.clone()
    }

    /// Whether a certificate chain verifies against the cluster CA.
    fn is_peer(&self, chain: Option<&[CertificateDer<'static>]>) -> bool {
        let Some((end, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return false;
        };
        self.material()
            .peers
            .verify_client_cert(end, intermediates, UnixTime::now())
            .is_ok()
    }
}

impl raft::PeerTls for Tls {
    fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        self.client_tls().tonic()
    }
}

pub use raft::ConnInfo;

/// A server-side TLS connection, as tonic serves it.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: ConnInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A handshake that takes longer is dropped (a stuck or hostile client).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept TCP connections on `listener` and hand out those that complete a
/// TLS handshake with the material current at accept time.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(Arc::clone(&tls.material().server));
            let tls = Arc::clone(&tls);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = tls.is_peer(stream.get_ref().1.peer_certificates());
                        tracing::debug!(%remote, peer, "TLS connection");
                        let info = ConnInfo {
                            peer,
                            remote: Some(remote),
                        };
                        let _ = tx.send(Ok(TlsConn { stream, info })).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serve `GET /metrics` over HTTPS (HTTP/1.1) with the node's certificate.
pub async fn serve_metrics(
    listener: TcpListener,
    tls: Arc<Tls>,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.material().http));
        let handle = handle.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                _ => {
                    tracing::debug!(%remote, "metrics TLS handshake failed");
                    return;
                }
            };
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (status, body) = if req.uri().path() == "/metrics" {
                        (hyper::StatusCode::OK, handle.render())
                    } else {
                        (
                            hyper::StatusCode::NOT_FOUND,
                            "only /metrics is served here\n".to_owned(),
                        )
                    };
                    let response = hyper::Response::builder()
                        .status(status)
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(body)));
                    async move { response }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%remote, error = %e, "metrics connection");
            }
        });
    }
}
