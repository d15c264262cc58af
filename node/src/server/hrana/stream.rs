//! Streams and batons.
//!
//! A Hrana stream is a connection-like state that lives across HTTP
//! requests: stored SQL texts, the `foreign_keys` setting, and an open
//! interactive transaction if any. Each response hands out a new **baton**
//! naming the stream; the next request of the stream must present it.
//!
//! ```text
//! baton = base64url( owner node id | stream id | seq | MAC[16] )
//! MAC   = BLAKE3 keyed with this process's random key over the first 24 bytes
//! ```
//! - The owner id is readable by every node, so a node that receives a
//!   baton it does not own passes the request on to the owner, who alone
//!   can check the MAC: a baton cannot be forged or altered.
//! - `seq` grows with every response: a baton is good for one request, so
//!   a replayed or concurrent request is refused instead of interleaving.
//! - The key is drawn at start: batons die with the process, as do the
//!   streams they name.
//!
//! Invariant: a stream is in the map iff it is open; a stream that ended
//! (closed by its client, or idle past `stream_idle`) is remembered for a
//! while so its late requests get the right error.

use super::proto::Error;
use crate::server::session::Session;
use crate::server::write::TxnId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Error codes of stream-level failures (in the HTTP error body).
pub const STREAM_EXPIRED: &str = "STREAM_EXPIRED";
pub const STREAM_CLOSED: &str = "STREAM_CLOSED";
pub const INVALID_BATON: &str = "INVALID_BATON";

const BATON_BYTES: usize = 8 + 8 + 8 + 16;
/// How long an ended stream's id is remembered, for precise errors.
const REMEMBER_ENDED: Duration = Duration::from_secs(600);
/// Most SQL texts one stream may store (`store_sql`).
pub const MAX_STORED_SQL: usize = 1000;

/// A baton as read, before its MAC is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Baton {
    pub owner: u64,
    pub stream: u64,
    pub seq: u64,
    mac: [u8; 16],
}

impl Baton {
    /// Parse a baton's text; the MAC is checked by the owner ([`Streams::verify`]).
    pub fn parse(text: &str) -> Result<Baton, Error> {
        let bad = || {
            Error::new(
                INVALID_BATON,
                "the baton is not one this cluster issued: send the baton from the last response of the stream, or null to open a new stream",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text.as_bytes()).map_err(|_| bad())?;
        if bytes.len() != BATON_BYTES {
            return Err(bad());
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&bytes[24..]);
        Ok(Baton {
            owner: word(0),
            stream: word(1),
            seq: word(2),
            mac,
        })
    }

    fn body(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.owner.to_be_bytes());
        b[8..16].copy_from_slice(&self.stream.to_be_bytes());
        b[16..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    fn text(&self) -> String {
        let mut bytes = Vec::with_capacity(BATON_BYTES);
        bytes.extend_from_slice(&self.body());
        bytes.extend_from_slice(&self.mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// What a stream holds between requests.
#[derive(Debug, Default)]
pub struct StreamState {
    /// `store_sql` texts by id.
    pub sqls: HashMap<i32, String>,
    /// The open transaction and the `foreign_keys` setting.
    pub session: Session,
    /// The client sent `close`.
    pub closed: bool,
}

pub struct Stream {
    pub state: StreamState,
    /// The seq the next request's baton must carry.
    next_seq: u64,
}

#[derive(Clone, Copy, Debug)]
enum Ended {
    Closed,
    Expired,
}

struct Entry {
    stream: Arc<tokio::sync::Mutex<Stream>>,
    last_used: Instant,
}

/// This node's streams.
pub struct Streams {
    node: u64,
    key: [u8; 32],
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
    ended: Mutex<HashMap<u64, (Instant, Ended)>>,
}

/// A stream checked out for one request; give it back with [`Streams::finish`].
pub struct Lease {
    pub id: u64,
    pub stream: tokio::sync::OwnedMutexGuard<Stream>,
}

impl Streams {
    pub fn new(node: u64) -> std::io::Result<Streams> {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(Streams {
            node,
            key,
            next_id: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
        })
    }

    fn mac(&self, baton: &Baton) -> [u8; 16] {
        let full = blake3::keyed_hash(&self.key, &baton.body());
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&full.as_bytes()[..16]);
        mac
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_ended(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, Ended)>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open a new stream for a request without a baton.
    pub fn open(&self) -> Lease {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(tokio::sync::Mutex::new(Stream {
            state: StreamState::default(),
            next_seq: 1,
        }));
        let guard = stream
            .clone()
            .try_lock_owned()
            .unwrap_or_else(|_| unreachable!("a new stream is locked by no one"));
        let mut open = self.lock_open();
        open.insert(
            id,
            Entry {
                stream,
                last_used: Instant::now(),
            },
        );
        ::metrics::gauge!(crate::metrics::HTTP_STREAMS).set(open.len() as f64);
        Lease { id, stream: guard }
    }

    /// Check a baton this node owns and check out its stream. A baton used
    /// twice, or sent while its stream is busy, is refused.
    pub fn resume(&self, baton: &Baton) -> Result<Lease, Error> {
        debug_assert_eq!(baton.owner, self.node);
        if self.mac(baton) != baton.mac {
            return Err(Error::new(
                INVALID_BATON,
                "the baton failed its integrity check (altered, or issued before this node restarted): open a new stream",
            ));
        }
        let stream = {
            let mut open = self.lock_open();
            match open.get_mut(&baton.stream) {
                Some(entry) => {
                    entry.last_used = Instant::now();
                    Arc::clone(&entry.stream)
                }
                None => return Err(self.gone(baton.stream)),
            }
        };
        let guard = stream.try_lock_owned().map_err(|_| {
            Error::new(
                INVALID_BATON,
                "the stream is busy with another request: send a stream's requests one at a time, each with the baton of the previous response",
            )
        })?;
        if guard.next_seq != baton.seq {
            return Err(Error::new(
                INVALID_BATON,
                "the baton was already used: each baton is good for one request; send the one from the stream's last response",
            ));
        }
        Ok(Lease {
            id: baton.stream,
            stream: guard,
        })
    }

    fn gone(&self, id: u64) -> Error {
        match self.lock_ended().get(&id).map(|(_, how)| *how) {
            Some(Ended::Expired) => Error::new(
                STREAM_EXPIRED,
                "the stream expired after being idle too long (its transaction, if any, was rolled back): open a new stream",
            ),
            Some(Ended::Closed) | None => Error::new(
                STREAM_CLOSED,
                "the stream is closed: open a new stream (send baton null)",
            ),
        }
    }

    /// Give a stream back after a request: the baton for its next request,
    /// or `None` when the client closed it.
    pub fn finish(&self, lease: Lease) -> Option<String> {
        let Lease { id, mut stream } = lease;
        if stream.state.closed {
            drop(stream);
            self.end(id, Ended::Closed);
            return None;
        }
        let seq = stream.next_seq + 1;
        stream.next_seq = seq;
        let mut baton = Baton {
            owner: self.node,
            stream: id,
            seq,
            mac: [0; 16],
        };
        baton.mac = self.mac(&baton);
        if let Some(entry) = self.lock_open().get_mut(&id) {
            entry.last_used = Instant::now();
        }
        Some(baton.text())
    }

    fn end(&self, id: u64, how: Ended) {
        let mut open = self.lock_open();
        open.remove(&id);
        ::metrics::gauge!(crate::metrics::HTTP_STREAMS).set(open.len() as f64);
        drop(open);
        self.lock_ended().insert(id, (Instant::now(), how));
    }

    /// Close streams idle for `idle` or more; the transactions they held are
    /// returned so the caller can roll them back.
    pub fn expire(&self, idle: Duration) -> Vec<TxnId> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut txns = Vec::new();
        {
            let open = self.lock_open();
            for (id, entry) in open.iter() {
                if now.duration_since(entry.last_used) < idle {
                    continue;
                }
                // A stream in use is not idle, whatever its clock says.
                if let Ok(stream) = entry.stream.try_lock() {
                    txns.extend(stream.state.session.txn);
                    expired.push(*id);
                }
            }
        }
        for id in expired {
            self.end(id, Ended::Expired);
        }
        self.lock_ended()
            .retain(|_, (at, _)| now.duration_since(*at) < REMEMBER_ENDED);
        txns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baton_is_good_once_and_only_unaltered() {
        let streams = Streams::new(7).expect("streams");
        let lease = streams.open();
        let text = streams.finish(lease).expect("open stream has a baton");
        let baton = Baton::parse(&text).expect("parses");
        assert_eq!(baton.owner, 7);
        let lease = streams.resume(&baton).expect("first use");
        let next = streams.finish(lease).expect("baton");
        let err = streams.resume(&baton).err().expect("second use refused");
        assert_eq!(err.code.as_deref(), Some(INVALID_BATON));
        // Flip one byte of the seq: the MAC no longer matches.
        let mut forged = Baton::parse(&next).expect("parses");
        forged.seq += 1;
        let err = streams.resume(&forged).err().expect("forged");
        assert!(err.message.contains("integrity"), "{}", err.message);
        assert!(Baton::parse("not-a-baton").is_err());
        let lease = streams
            .resume(&Baton::parse(&next).expect("parses"))
            .expect("next");
        drop(lease);
    }

    #[test]
    fn closed_and_expired_streams_say_which() {
        let streams = Streams::new(1).expect("streams");
        let mut lease = streams.open();
        lease.stream.state.closed = true;
        let id = lease.id;
        assert!(streams.finish(lease).is_none());
        let fake = |stream| {
            let mut b = Baton {
                owner: 1,
                stream,
                seq: 2,
                mac: [0; 16],
            };
            b.mac = streams.mac(&b);
            b
        };
        let err = streams.resume(&fake(id)).err().expect("closed");
        assert_eq!(err.code.as_deref(), Some(STREAM_CLOSED));
        let lease = streams.open();
        let id = lease.id;
        streams.finish(lease);
        streams.expire(Duration::ZERO);
        let err = streams.resume(&fake(id)).err().expect("expired");
        assert_eq!(err.code.as_deref(), Some(STREAM_EXPIRED));
    }
}
