//! Checkers: each reads a whole history and gives a [`Verdict`].
//!
//! - [`linear`]: the register workload is linearizable, key by key
//!   (a Wing–Gong search with memoisation, as Knossos and Porcupine do);
//! - [`bank`]: every balance read sees the total conserved;
//! - [`set`]: the final reads hold every acknowledged insert, nothing never
//!   attempted, nothing twice;
//! - [`session`]: read-your-writes and monotonic reads per session;
//! - [`availability`]: every fault window's first successful write and
//!   read came within a bound, and no node exited on its own.
//!
//! A checker that cannot decide (the search exceeded its budget) says
//! `unknown`, never `valid`.

pub mod availability;
pub mod bank;
pub mod linear;
pub mod session;
pub mod set;

use crate::history::Op;
use serde::Serialize;

/// Whether a history satisfies a checker's property.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker gave up (search budget); not a pass.
    Unknown,
}

/// One violation, with the operations that show it.
#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    /// A stable name: `not-linearizable`, `wrong-total`, `lost`,
    /// `unexpected`, `duplicated`, `read-your-writes`, `non-monotonic`...
    pub kind: &'static str,
    pub message: String,
    pub ops: Vec<Op>,
}

/// A checker's answer.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub checker: &'static str,
    pub valid: Validity,
    /// One line: what was checked, how much, and the outcome.
    pub summary: String,
    /// At most a few of each kind (the first found).
    pub anomalies: Vec<Anomaly>,
}

/// Most anomalies of one kind a verdict lists; the summary gives the count.
pub const MAX_ANOMALIES_PER_KIND: usize = 5;

/// Anomalies found so far: all counted, the first few of each kind kept.
#[derive(Default)]
pub(crate) struct Found {
    pub anomalies: Vec<Anomaly>,
    pub counts: std::collections::BTreeMap<&'static str, usize>,
}

impl Found {
    pub fn push(&mut self, kind: &'static str, message: String, ops: Vec<Op>) {
        let count = self.counts.entry(kind).or_insert(0);
        *count += 1;
        if *count <= MAX_ANOMALIES_PER_KIND {
            self.anomalies.push(Anomaly { kind, message, ops });
        }
    }

    /// `2 lost, 1 duplicated`: every kind with its count.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        parts.join(", ")
    }
}

/// The verdict of a checker that counted `checked` observations: unknown
/// when there were none (`nothing` says which), valid when `found` is
/// empty (`fine` says what held), invalid otherwise. `head` opens the
/// summary with what was checked.
pub(crate) fn verdict(
    checker: &'static str,
    head: String,
    checked: usize,
    nothing: &str,
    fine: &str,
    found: Found,
) -> Verdict {
    if checked == 0 {
        return Verdict {
            checker,
            valid: Validity::Unknown,
            summary: format!("{head}: {nothing}"),
            anomalies: Vec::new(),
        };
    }
    let outcome = if found.counts.is_empty() {
        fine.to_string()
    } else {
        found.describe()
    };
    Verdict::from_anomalies(checker, format!("{head}: {outcome}"), found.anomalies)
}

impl Verdict {
    /// Valid when no anomaly was found, invalid otherwise.
    pub fn from_anomalies(
        checker: &'static str,
        summary: String,
        anomalies: Vec<Anomaly>,
    ) -> Verdict {
        let valid = if anomalies.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        };
        Verdict {
            checker,
            valid,
            summary,
            anomalies,
        }
    }
}
