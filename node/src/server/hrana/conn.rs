//! The HTTP API's connections: one accept loop for plain text and TLS, and
//! what a request knows of its connection: whether the client is still
//! there ([`ClientConn`]).
//!
//! hyper does not read from an HTTP/1.1 connection while a request is
//! being served, so it never notices a client that hung up: a read of
//! seconds ran to the end for nobody. Each connection keeps a duplicate of
//! its socket; a request's handler asks the kernel whether the peer shut
//! its side (`POLLRDHUP`, which a TLS close or a killed client both give),
//! and stops its reads when it did.

use crate::server::tls::Tls;
use axum::Router;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often a request in progress checks that its client is still there.
const GONE_POLL: Duration = Duration::from_millis(100);

/// A TLS handshake that takes longer is dropped (a stuck or hostile client).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection a request came on, in the request's extensions.
#[derive(Clone, Debug)]
pub struct ClientConn {
    /// A duplicate of the connection's socket, only ever polled.
    sock: Arc<std::net::TcpStream>,
}

impl ClientConn {
    /// Whether the client shut its side of the connection (or it broke).
    pub fn gone(&self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout; the fd stays open as
        // long as `self.sock` does.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        n > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Resolves once the client is gone.
    pub async fn closed(&self) {
        while !self.gone() {
            tokio::time::sleep(GONE_POLL).await;
        }
    }
}

/// Serve `app` on `listener` (HTTPS with `tls`'s current certificate when
/// given) until `stop` fires; connections then finish the requests they
/// hold and close.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    app: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(stop);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, remote) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (tcp, conn) = match watched(tcp) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "HTTP connection");
                continue;
            }
        };
        let (app, tls, stopped) = (app.clone(), tls.clone(), stopped.clone());
        connections.spawn(async move {
            let result = match tls {
                None => serve_one(tcp, conn, app, stopped).await,
                Some(tls) => {
                    let acceptor = tls.http_acceptor();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_one(stream, conn, app, stopped).await,
                        _ => {
                            tracing::debug!(%remote, "HTTP TLS handshake failed");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "HTTP connection");
            }
        });
    }
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
}

/// The socket for hyper, and a [`ClientConn`] on a duplicate of it.
fn watched(tcp: tokio::net::TcpStream) -> std::io::Result<(tokio::net::TcpStream, ClientConn)> {
    let std = tcp.into_std()?;
    let dup = std.try_clone()?;
    let tcp = tokio::net::TcpStream::from_std(std)?;
    Ok((
        tcp,
        ClientConn {
            sock: Arc::new(dup),
        },
    ))
}

/// Serve one connection's requests, each with `conn` in its extensions.
async fn serve_one<S>(
    io: S,
    conn: ClientConn,
    app: Router,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(conn)));
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::select! {
        result = &mut connection => result,
        () = stop => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}
