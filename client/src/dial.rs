//! How every connection to a Quorumlite node is made: the client's, a
//! node's calls on another's cluster API, and Raft's. One place decides
//! the scheme (`https` exactly when TLS is given), the TLS settings,
//! `TCP_NODELAY`, the connect timeout and the HTTP/2 keepalive.
//!
//! Channels connect lazily: building one never blocks or fails for a node
//! that is down; the first call finds out.

use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The options that differ between callers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dial {
    /// Give up a connection attempt after this long (`None`: the
    /// operating system's limit).
    pub connect_timeout: Option<Duration>,
    /// HTTP/2 pings on the open connection (`None`: none).
    pub keepalive: Option<Keepalive>,
}

/// HTTP/2 pings: a node that went silent (frozen, cut off) is noticed
/// within `interval + timeout`, and the calls waiting on it fail then
/// instead of at their deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    /// Ping this often.
    pub interval: Duration,
    /// Fail the connection when a ping goes unanswered this long.
    pub timeout: Duration,
    /// Ping while no call is out, too.
    pub while_idle: bool,
}

impl Keepalive {
    /// Ping every `d`, idle or not, and give a ping `d` to answer.
    pub fn every(d: Duration) -> Keepalive {
        Keepalive {
            interval: d,
            timeout: d,
            while_idle: true,
        }
    }
}

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("bad address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("TLS configuration for {addr}: {reason}")]
    Tls { addr: String, reason: String },
}

/// A lazily connecting channel to the node at `addr` (`HOST:PORT`), over
/// TLS when `tls` is given.
pub fn channel(addr: &str, tls: Option<ClientTlsConfig>, dial: Dial) -> Result<Channel, DialError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| DialError::BadAddress {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| DialError::Tls {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
    }
    endpoint = endpoint.tcp_nodelay(true);
    if let Some(limit) = dial.connect_timeout {
        endpoint = endpoint.connect_timeout(limit);
    }
    if let Some(k) = dial.keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(k.interval)
            .keep_alive_timeout(k.timeout)
            .keep_alive_while_idle(k.while_idle);
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_address_is_named_in_the_error() {
        let err = channel("not an address", None, Dial::default()).expect_err("refused");
        assert!(err.to_string().contains("not an address"), "{err}");
    }
}
