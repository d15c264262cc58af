//! Histories: every operation a workload attempted, as Jepsen records them.
//!
//! A client operation leaves two events: an `invoke` when it is sent and a
//! completion when its fate is known:
//! - `ok`: it took effect (for a read: it returned the recorded value);
//! - `fail`: it certainly did **not** take effect;
//! - `info`: unknown, it may take effect at any time from its invocation
//!   on, or never (a timeout, a lost connection, `INDETERMINATE`).
//!
//! Invariants, relied on by every checker:
//! - events are numbered (`index`) in the order they were recorded, and
//!   `time_ns` never decreases along `index`: an event recorded before
//!   another happened before it in real time;
//! - a process runs one operation at a time: its completion follows its
//!   invocation, with no other event of that process in between;
//! - after an `info` the process never invokes again (its operation may
//!   still be in flight); the worker continues under a fresh process id.
//!   Exception: a `session` workload's process is its session for life
//!   (its reads carry the session's token); the session checker needs only
//!   its acknowledged writes to be ordered.
//!
//! The history is written as JSON lines (`history.jsonl`), one event per
//! line, e.g.
//! `{"index":7,"time_ns":81234,"process":2,"type":"ok","node":3,"f":"read","key":0,"value":4}`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What happened to an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One operation of one workload, with its arguments and (on completion)
/// its result. The invocation carries the same variant with the result
/// fields empty (`None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Call {
    /// register: read one key; `None` when the key has no value yet.
    Read { key: u64, value: Option<i64> },
    /// register: set one key.
    Write { key: u64, value: i64 },
    /// register: set `key` to `to` only if it holds `from` (`fail` when it
    /// did not).
    Cas { key: u64, from: i64, to: i64 },
    /// bank: move `amount` between two accounts in one transaction.
    Transfer { from: u64, to: u64, amount: i64 },
    /// bank: every account's balance, read at once.
    Balances {
        #[serde(default, with = "int_keys")]
        balances: Option<BTreeMap<u64, i64>>,
    },
    /// set: insert one element.
    Add { element: i64 },
    /// set: read every element (the final read, on each node).
    ReadSet { elements: Option<Vec<i64>> },
    /// session: set this session's own key (`key` = the session).
    SessionWrite { key: u64, value: i64 },
    /// session: read every session's key with the session's token;
    /// `version` is the applied version the reply's token carried.
    SessionRead {
        #[serde(default, with = "int_keys")]
        rows: Option<BTreeMap<u64, i64>>,
        version: Option<u64>,
    },
}

/// Whether an operation reads or writes, for the availability table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Call {
    /// Whether this operation reads or writes.
    pub fn access(&self) -> Access {
        match self {
            Call::Read { .. }
            | Call::Balances { .. }
            | Call::ReadSet { .. }
            | Call::SessionRead { .. } => Access::Read,
            Call::Write { .. }
            | Call::Cas { .. }
            | Call::Transfer { .. }
            | Call::Add { .. }
            | Call::SessionWrite { .. } => Access::Write,
        }
    }
}

/// Maps with integer keys, written as JSON objects (whose keys are
/// strings). Needed by hand: inside the flattened, tagged [`Call`] serde
/// buffers the map and no longer turns `"0"` back into `0` by itself.
mod int_keys {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &Option<BTreeMap<u64, i64>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeMap<u64, i64>>, D::Error> {
        let raw: Option<BTreeMap<String, i64>> = Option::deserialize(d)?;
        raw.map(|m| {
            m.into_iter()
                .map(|(k, v)| {
                    k.parse::<u64>().map(|k| (k, v)).map_err(|_| {
                        serde::de::Error::custom(format!("map key {k:?} is not an integer"))
                    })
                })
                .collect()
        })
        .transpose()
    }
}

/// One event of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history (see the module invariants).
    pub index: u64,
    /// Nanoseconds since the run started.
    pub time_ns: u64,
    /// The logical client that ran it.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The node the operation was sent to, when it was sent to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(flatten)]
    pub call: Call,
    /// Why it failed or is indeterminate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// A bare event, for checkers' tests and tools; `index` and `time_ns`
    /// are both `index`.
    pub fn new(index: u64, process: u64, kind: OpType, call: Call) -> Op {
        Op {
            index,
            time_ns: index,
            process,
            kind,
            node: None,
            call,
            error: None,
        }
    }
}

/// Pairs each invocation with its completion, in invocation order; a
/// completion is `None` when the history ended first (treat as `info`).
pub fn pairs(history: &[Op]) -> Vec<(&Op, Option<&Op>)> {
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut out: Vec<(&Op, Option<&Op>)> = Vec::new();
    for op in history {
        if op.kind == OpType::Invoke {
            open.insert(op.process, out.len());
            out.push((op, None));
        } else if let Some(i) = open.remove(&op.process) {
            out[i].1 = Some(op);
        }
    }
    out
}

/// Records a history as a run goes: in memory for the checkers, and as JSON
/// lines on disk as it happens (so a crashed run still leaves its history).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    start: Instant,
    ops: Vec<Op>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Recorder {
    /// A recorder whose clock starts now; `path` receives the JSON lines.
    pub fn new(path: Option<&Path>) -> std::io::Result<Recorder> {
        let file = match path {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
            None => None,
        };
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                start: Instant::now(),
                ops: Vec::new(),
                file,
            })),
        })
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.lock().start
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record an event; index and time are taken under one lock, so they
    /// agree with each other and with real time.
    pub fn record(
        &self,
        process: u64,
        kind: OpType,
        node: Option<u64>,
        call: Call,
        error: Option<String>,
    ) {
        let mut inner = self.lock();
        let op = Op {
            index: inner.ops.len() as u64,
            time_ns: inner.start.elapsed().as_nanos() as u64,
            process,
            kind,
            node,
            call,
            error,
        };
        if let Some(f) = inner.file.as_mut() {
            // The in-memory copy is what gets checked; a failing disk only
            // costs the file, which `finish` reports.
            if let Ok(line) = serde_json::to_string(&op) {
                let _ = writeln!(f, "{line}");
            }
        }
        inner.ops.push(op);
    }

    /// The history so far.
    pub fn snapshot(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    /// Flush the JSON lines file.
    pub fn finish(&self) -> std::io::Result<()> {
        match self.lock().file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Read a history written by a [`Recorder`].
pub fn load(path: &Path) -> Result<Vec<Op>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let rec = Recorder::new(Some(&path)).expect("recorder");
        rec.record(
            1,
            OpType::Invoke,
            Some(2),
            Call::Read {
                key: 0,
                value: None,
            },
            None,
        );
        rec.record(
            1,
            OpType::Ok,
            Some(2),
            Call::Read {
                key: 0,
                value: Some(3),
            },
            None,
        );
        rec.record(
            2,
            OpType::Ok,
            None,
            Call::SessionRead {
                rows: Some(BTreeMap::from([(0, 5), (7, 9)])),
                version: Some(3),
            },
            None,
        );
        rec.record(
            3,
            OpType::Invoke,
            None,
            Call::Balances { balances: None },
            None,
        );
        rec.finish().expect("flush");
        let loaded = load(&path).expect("load");
        assert_eq!(loaded, rec.snapshot());
        let line = std::fs::read_to_string(&path).expect("read");
        assert!(line.contains(r#""type":"ok","node":2,"f":"read","key":0,"value":3"#));
    }

    #[test]
    fn pairs_match_completions_to_invocations_per_process() {
        let r = |v| Call::Read { key: 0, value: v };
        let h = vec![
            Op::new(0, 1, OpType::Invoke, r(None)),
            Op::new(1, 2, OpType::Invoke, r(None)),
            Op::new(2, 2, OpType::Ok, r(Some(1))),
            Op::new(3, 1, OpType::Fail, r(None)),
            Op::new(4, 3, OpType::Invoke, r(None)),
        ];
        let p = pairs(&h);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].1.map(|o| o.index), Some(3));
        assert_eq!(p[1].1.map(|o| o.index), Some(2));
        assert!(p[2].1.is_none());
    }
}
