//! What the client library does after an error: a pure function, table-tested.
//!
//! The rule: retry only what certainly had no effect. A write is sent again
//! only when the node said nothing was written (`NotLeader`, `NoLeader`,
//! `Conflict`, `ShuttingDown`, `Unavailable`), or the connection was refused
//! before the request left. A write that may have been applied is
//! `Indeterminate` and goes back to the caller, always. Reads have no effect,
//! so every availability error moves them to another node.

use crate::error::ErrorCode;

/// The kind of call that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Read,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Give the error to the caller.
    Fail,
    /// Send it to the leader the error names (or the next node if none).
    Leader,
    /// Try the next node in the list.
    OtherNode,
    /// Wait a little (an election is under way), then try the next node.
    PauseThenOther,
}

/// The step after a failed call of `op` with `code`.
pub fn after(op: Op, code: ErrorCode) -> Next {
    use ErrorCode as E;
    match (op, code) {
        (_, E::NotLeader) => Next::Leader,
        (_, E::NoLeader) | (_, E::Conflict) | (_, E::NoQuorum) => Next::PauseThenOther,
        (_, E::Unavailable) | (_, E::ShuttingDown) => Next::OtherNode,
        (Op::Read, E::ReplicaBehind | E::TooStale | E::Timeout) => Next::OtherNode,
        (Op::Write, E::Timeout | E::Indeterminate) => Next::Fail,
        (
            _,
            E::SqlError
            | E::NotAllowed
            | E::BadParams
            | E::TooLarge
            | E::BadRequest
            | E::BadToken
            | E::LineageMismatch
            | E::Indeterminate
            | E::ReplicaBehind
            | E::TooStale
            | E::Superseded
            | E::Unauthenticated
            | E::PermissionDenied
            | E::Internal
            | E::StatementTimeout
            | E::DiskFull,
        ) => Next::Fail,
    }
}

/// Whether a write to the leader that failed with `code` (already past
/// [`write_outcome`]) says the leader may be gone: it did not answer, it
/// cannot reach a majority, or the outcome is unknown. The next write then
/// starts elsewhere.
pub fn leader_may_be_gone(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Indeterminate | ErrorCode::NoQuorum | ErrorCode::Unavailable
    )
}

/// A write that failed with `code`: what the caller is told. A write whose
/// reply was lost is indeterminate, whatever the transport said.
pub fn write_outcome(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::Timeout => ErrorCode::Indeterminate,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorCode as E;

    #[test]
    fn a_write_is_retried_only_when_it_certainly_wrote_nothing() {
        let table = [
            (E::NotLeader, Next::Leader),
            (E::NoLeader, Next::PauseThenOther),
            (E::Conflict, Next::PauseThenOther),
            (E::Unavailable, Next::OtherNode),
            (E::ShuttingDown, Next::OtherNode),
            (E::Indeterminate, Next::Fail),
            (E::Timeout, Next::Fail),
            (E::SqlError, Next::Fail),
            (E::TooLarge, Next::Fail),
            (E::Internal, Next::Fail),
            (E::Unauthenticated, Next::Fail),
            (E::PermissionDenied, Next::Fail),
            (E::NoQuorum, Next::PauseThenOther),
            (E::DiskFull, Next::Fail),
            (E::StatementTimeout, Next::Fail),
        ];
        for (code, next) in table {
            assert_eq!(after(Op::Write, code), next, "{code}");
        }
        for code in ErrorCode::ALL {
            if after(Op::Write, code) != Next::Fail {
                assert!(
                    code.nothing_written(),
                    "{code} is retried but may have written"
                );
            }
        }
    }

    #[test]
    fn a_read_moves_to_another_node_on_any_availability_error() {
        let table = [
            (E::ReplicaBehind, Next::OtherNode),
            (E::TooStale, Next::OtherNode),
            (E::Timeout, Next::OtherNode),
            (E::Unavailable, Next::OtherNode),
            (E::NoLeader, Next::PauseThenOther),
            (E::LineageMismatch, Next::Fail),
            (E::BadToken, Next::Fail),
            (E::SqlError, Next::Fail),
            (E::NotAllowed, Next::Fail),
            (E::NoQuorum, Next::PauseThenOther),
            // As long on any other node: not sent again.
            (E::StatementTimeout, Next::Fail),
        ];
        for (code, next) in table {
            assert_eq!(after(Op::Read, code), next, "{code}");
        }
    }

    #[test]
    fn a_write_with_a_lost_reply_is_indeterminate() {
        assert_eq!(write_outcome(E::Timeout), E::Indeterminate);
        assert_eq!(write_outcome(E::SqlError), E::SqlError);
    }
}
