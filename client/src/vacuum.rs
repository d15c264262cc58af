//! A lone `VACUUM`: the one write whose time grows with the database.
//!
//! The leader makes a compacted copy of the whole file, copies it to the
//! members and every node installs it (`docs/operations.md`, "VACUUM"), so
//! the call takes as long as the database's size needs: seconds per
//! hundreds of megabytes. It is sent alone, as one `Execute` call with no
//! deadline, rather than through the coalesced write calls and their
//! per-call deadline, which would have made a large VACUUM indeterminate
//! while it was still working. A node that dies meanwhile is still noticed
//! (HTTP/2 keepalive), and the outcome is then indeterminate, as for any
//! write.

use crate::error::Error;
use crate::{pb, Client, Node, Statement};

/// Whether `statements` is one `VACUUM` (leading spaces and case aside).
pub(crate) fn is_lone_vacuum(statements: &[Statement]) -> bool {
    match statements {
        [only] => {
            let sql = only.sql.trim_start();
            sql.get(..6)
                .is_some_and(|w| w.eq_ignore_ascii_case("vacuum"))
                && sql[6..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric() && c != '_')
        }
        _ => false,
    }
}

impl Client {
    /// Send `request` to `node` as one call with no deadline.
    pub(crate) async fn execute_unbounded(
        &self,
        node: &Node,
        request: pb::ExecuteRequest,
    ) -> Result<pb::ExecuteResponse, Error> {
        let mut req = self.request(request)?;
        req.metadata_mut().remove("grpc-timeout");
        match node.rpc.clone().execute(req).await {
            Ok(resp) => Ok(resp.into_inner()),
            Err(status) => Err(Error::from_status(&status, &node.addr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_vacuum_goes_without_a_deadline() {
        let one = |sql: &str| vec![Statement::new(sql)];
        for sql in ["VACUUM", "  vacuum;", "Vacuum main", "VACUUM\n"] {
            assert!(is_lone_vacuum(&one(sql)), "{sql}");
        }
        for sql in ["vacuumed", "SELECT 'VACUUM'", "VACUU", "vacuum_x"] {
            assert!(!is_lone_vacuum(&one(sql)), "{sql}");
        }
        assert!(!is_lone_vacuum(&[
            Statement::new("VACUUM"),
            Statement::new("VACUUM")
        ]));
    }
}
