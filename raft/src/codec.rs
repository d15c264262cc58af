//! Our own on-disk encoding of Raft records: log entries, votes, log ids,
//! memberships.
//!
//! openraft's serde derives are not a stable format, so nothing on disk
//! depends on them. Each record starts with a format byte; a record of an
//! unknown format, or a short or malformed one, is an error, never a guess.
//! All integers are little-endian.
//!
//! A log entry is `format | log id | tag | payload`, by tag: 0 blank;
//! 1 a batch (bytes); 2 a membership; 3 a part of a batch (id, index,
//! total, bytes); 4 a batch with its proposal number; 5 an image install
//! (hash as 32 bytes, size, base, new-lineage flag 0/1, proposal number).
//! A node that does not know a tag refuses the entry rather than guess, so
//! every member must run a version that knows tag 5 before the first
//! VACUUM or restore.

use crate::{Command, Entry, Install, NodeId, Part, TypeConfig};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, LeaderId, LogId, Membership, StoredMembership, Vote,
};
use std::collections::{BTreeMap, BTreeSet};

const FORMAT: u8 = 1;

/// A record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    what: &'static str,
    reason: String,
}

fn bad(what: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        what,
        reason: reason.into(),
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn log_id(&mut self, id: &LogId<NodeId>) {
        self.u64(id.leader_id.term);
        self.u64(id.leader_id.node_id);
        self.u64(id.index);
    }
    fn opt_log_id(&mut self, id: &Option<LogId<NodeId>>) {
        match id {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.log_id(id);
            }
        }
    }
    fn membership(&mut self, m: &Membership<NodeId, BasicNode>) {
        let configs = m.get_joint_config();
        self.u64(configs.len() as u64);
        for c in configs {
            self.u64(c.len() as u64);
            for id in c {
                self.u64(*id);
            }
        }
        let nodes: Vec<_> = m.nodes().collect();
        self.u64(nodes.len() as u64);
        for (id, node) in nodes {
            self.u64(*id);
            self.bytes(node.addr.as_bytes());
        }
    }
}

struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { what, buf };
        let format = r.u8()?;
        if format != FORMAT {
            return Err(bad(what, format!("format {format} is not supported")));
        }
        Ok(r)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(bad(self.what, "record is truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len())
            .ok_or_else(|| bad(self.what, "length past the end of the record"))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let v = self.u64()?;
        u32::try_from(v).map_err(|_| bad(self.what, format!("{v} does not fit 32 bits")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }
    fn log_id(&mut self) -> Result<LogId<NodeId>, DecodeError> {
        let term = self.u64()?;
        let node = self.u64()?;
        let index = self.u64()?;
        Ok(LogId::new(CommittedLeaderId::new(term, node), index))
    }
    fn opt_log_id(&mut self) -> Result<Option<LogId<NodeId>>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.log_id()?)),
            t => Err(bad(self.what, format!("bad option tag {t}"))),
        }
    }
    fn membership(&mut self) -> Result<Membership<NodeId, BasicNode>, DecodeError> {
        let n_configs = self.len()?;
        let mut configs = Vec::with_capacity(n_configs);
        for _ in 0..n_configs {
            let n = self.len()?;
            let mut set = BTreeSet::new();
            for _ in 0..n {
                set.insert(self.u64()?);
            }
            configs.push(set);
        }
        let n_nodes = self.len()?;
        let mut nodes = BTreeMap::new();
        for _ in 0..n_nodes {
            let id = self.u64()?;
            let addr = String::from_utf8(self.bytes()?.to_vec())
                .map_err(|_| bad(self.what, "node address is not UTF-8"))?;
            nodes.insert(id, BasicNode { addr });
        }
        Ok(Membership::new(configs, nodes))
    }
    fn install(&mut self) -> Result<Install, DecodeError> {
        let hash: [u8; 32] = self
            .bytes()?
            .try_into()
            .map_err(|_| bad(self.what, "an image hash is not 32 bytes"))?;
        let size = self.u64()?;
        let base = self.u64()?;
        if base == u64::MAX {
            return Err(bad(self.what, "an image at an impossible version"));
        }
        let new_lineage = match self.u8()? {
            0 => false,
            1 => true,
            t => return Err(bad(self.what, format!("bad new-lineage flag {t}"))),
        };
        let proposal = self.u64()?;
        Ok(Install {
            hash,
            size,
            base,
            new_lineage,
            proposal,
        })
    }
    fn done<T>(self, v: T) -> Result<T, DecodeError> {
        if self.buf.is_empty() {
            Ok(v)
        } else {
            Err(bad(self.what, "trailing bytes"))
        }
    }
}

pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    w.log_id(&e.log_id);
    match &e.payload {
        EntryPayload::Blank => w.u8(0),
        EntryPayload::Normal(Command::Batch { bytes, proposal: 0 }) => {
            w.u8(1);
            w.bytes(bytes);
        }
        EntryPayload::Normal(Command::Batch { bytes, proposal }) => {
            w.u8(4);
            w.u64(*proposal);
            w.bytes(bytes);
        }
        EntryPayload::Membership(m) => {
            w.u8(2);
            w.membership(m);
        }
        EntryPayload::Normal(Command::Part(p)) => {
            w.u8(3);
            w.u64(p.id);
            w.u64(u64::from(p.index));
            w.u64(u64::from(p.total));
            w.bytes(&p.bytes);
        }
        EntryPayload::Normal(Command::Install(i)) => {
            w.u8(5);
            w.bytes(&i.hash);
            w.u64(i.size);
            w.u64(i.base);
            w.u8(u8::from(i.new_lineage));
            w.u64(i.proposal);
        }
    }
    w.0
}

pub fn decode_entry(buf: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader::new("log entry", buf)?;
    let log_id = r.log_id()?;
    let payload = match r.u8()? {
        0 => EntryPayload::<TypeConfig>::Blank,
        1 => EntryPayload::Normal(Command::batch(r.bytes()?.to_vec())),
        2 => EntryPayload::Membership(r.membership()?),
        3 => {
            let id = r.u64()?;
            let index = r.u32()?;
            let total = r.u32()?;
            if index >= total {
                return Err(bad("log entry", format!("part {index} of {total}")));
            }
            EntryPayload::Normal(Command::Part(Part {
                id,
                index,
                total,
                bytes: r.bytes()?.to_vec(),
            }))
        }
        4 => {
            let proposal = r.u64()?;
            EntryPayload::Normal(Command::Batch {
                bytes: r.bytes()?.to_vec(),
                proposal,
            })
        }
        5 => EntryPayload::Normal(Command::Install(r.install()?)),
        t => return Err(bad("log entry", format!("unknown payload tag {t}"))),
    };
    r.done(Entry { log_id, payload })
}

pub fn encode_log_id(id: &Option<LogId<NodeId>>) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    w.opt_log_id(id);
    w.0
}

pub fn decode_log_id(buf: &[u8]) -> Result<Option<LogId<NodeId>>, DecodeError> {
    let mut r = Reader::new("log id", buf)?;
    let id = r.opt_log_id()?;
    r.done(id)
}

pub fn encode_vote(v: &Vote<NodeId>) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    w.u64(v.leader_id.term);
    w.u64(v.leader_id.node_id);
    w.u8(u8::from(v.committed));
    w.0
}

pub fn decode_vote(buf: &[u8]) -> Result<Vote<NodeId>, DecodeError> {
    let mut r = Reader::new("vote", buf)?;
    let term = r.u64()?;
    let node_id = r.u64()?;
    let committed = match r.u8()? {
        0 => false,
        1 => true,
        t => return Err(bad("vote", format!("bad committed flag {t}"))),
    };
    r.done(Vote {
        leader_id: LeaderId { term, node_id },
        committed,
    })
}

/// The state machine's applied position: last log id, membership, and the
/// data version the SQLite file had once that entry was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    pub last_log_id: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub version: u64,
}

pub fn encode_applied(a: &AppliedState) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    w.opt_log_id(&a.last_log_id);
    w.opt_log_id(a.membership.log_id());
    w.membership(a.membership.membership());
    w.u64(a.version);
    w.0
}

pub fn decode_applied(buf: &[u8]) -> Result<AppliedState, DecodeError> {
    let mut r = Reader::new("applied state", buf)?;
    let last_log_id = r.opt_log_id()?;
    let membership_log_id = r.opt_log_id()?;
    let membership = r.membership()?;
    let version = r.u64()?;
    r.done(AppliedState {
        last_log_id,
        membership: StoredMembership::new(membership_log_id, membership),
        version,
    })
}

/// Snapshot metadata kept beside the snapshot file.
pub fn encode_snapshot_meta(m: &openraft::SnapshotMeta<NodeId, BasicNode>) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    w.opt_log_id(&m.last_log_id);
    w.opt_log_id(m.last_membership.log_id());
    w.membership(m.last_membership.membership());
    w.bytes(m.snapshot_id.as_bytes());
    w.0
}

pub fn decode_snapshot_meta(
    buf: &[u8],
) -> Result<openraft::SnapshotMeta<NodeId, BasicNode>, DecodeError> {
    let mut r = Reader::new("snapshot meta", buf)?;
    let last_log_id = r.opt_log_id()?;
    let membership_log_id = r.opt_log_id()?;
    let membership = r.membership()?;
    let snapshot_id = String::from_utf8(r.bytes()?.to_vec())
        .map_err(|_| bad("snapshot meta", "snapshot id is not UTF-8"))?;
    r.done(openraft::SnapshotMeta {
        last_log_id,
        last_membership: StoredMembership::new(membership_log_id, membership),
        snapshot_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<u64, BasicNode> = (1..=3)
            .map(|i| {
                (
                    i,
                    BasicNode {
                        addr: format!("127.0.0.1:{i}"),
                    },
                )
            })
            .collect();
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    #[test]
    fn every_entry_kind_round_trips() {
        let id = LogId::new(CommittedLeaderId::new(3, 2), 17);
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Command::batch(vec![1, 2, 3])),
            EntryPayload::Normal(Command::Batch {
                bytes: vec![4, 5],
                proposal: u64::MAX,
            }),
            EntryPayload::Membership(membership()),
            EntryPayload::Normal(Command::Part(Part {
                id: u64::MAX - 1,
                index: 2,
                total: 3,
                bytes: vec![9; 5],
            })),
            EntryPayload::Normal(Command::Install(Install {
                hash: [7; 32],
                size: 500 << 20,
                base: 41,
                new_lineage: true,
                proposal: 12,
            })),
        ] {
            let e = Entry {
                log_id: id,
                payload,
            };
            let back = decode_entry(&encode_entry(&e)).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
        }
    }

    #[test]
    fn votes_log_ids_and_applied_state_round_trip() {
        for v in [Vote::new(4, 1), Vote::new_committed(9, 3)] {
            assert_eq!(decode_vote(&encode_vote(&v)).expect("vote"), v);
        }
        for id in [None, Some(LogId::new(CommittedLeaderId::new(1, 1), 5))] {
            assert_eq!(decode_log_id(&encode_log_id(&id)).expect("id"), id);
        }
        let a = AppliedState {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
            membership: StoredMembership::new(
                Some(LogId::new(CommittedLeaderId::new(1, 1), 1)),
                membership(),
            ),
            version: 42,
        };
        assert_eq!(decode_applied(&encode_applied(&a)).expect("applied"), a);
    }

    #[test]
    fn truncated_foreign_or_padded_records_are_refused() {
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Command::Batch {
                bytes: vec![7; 10],
                proposal: 3,
            }),
        };
        let bytes = encode_entry(&e);
        for cut in 0..bytes.len() {
            assert!(decode_entry(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode_entry(&padded).is_err());
        let mut foreign = bytes;
        foreign[0] = 9;
        assert!(decode_entry(&foreign).is_err());
        // A part numbered past its batch's count.
        let past = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Command::Part(Part {
                id: 1,
                index: 3,
                total: 3,
                bytes: vec![],
            })),
        };
        assert!(decode_entry(&encode_entry(&past)).is_err());
        // An install whose hash is not 32 bytes, or whose flag is not 0 or 1.
        let install = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Command::Install(Install {
                hash: [1; 32],
                size: 4096,
                base: 1,
                new_lineage: false,
                proposal: 0,
            })),
        };
        let good = encode_entry(&install);
        for cut in 0..good.len() {
            assert!(decode_entry(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut short_hash = good.clone();
        // format 1, log id 24, tag 1: the hash's length field at 26.
        short_hash[26] = 31;
        assert!(decode_entry(&short_hash).is_err());
        let mut flag = good;
        let at = flag.len() - 9;
        flag[at] = 2;
        assert!(decode_entry(&flag).is_err());
    }
}
