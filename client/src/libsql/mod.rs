//! libSQL's replication protocol, as libSQL's embedded replicas speak it
//! (`proto/libsql/`): the messages ([`wal_log`], [`proxy`], [`metadata`]),
//! how a committed batch becomes numbered frames ([`frames`]), and the
//! value encoding of the proxy's messages ([`value`]).
//!
//! The node serves it (`node/src/server/libsql/`); `docs/embedded-replicas.md`
//! tells what a replica sees. What the clients send and expect is recorded
//! in `../shared/EMBEDDED-REPLICAS.md`.

pub mod frames;
pub mod value;

/// libSQL's database configuration message.
pub mod metadata {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("metadata");
}

/// The replication log service (`/wal_log.ReplicationLog/*`).
pub mod wal_log {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("wal_log");
}

/// The proxy service a replica's writes go through (`/proxy.Proxy/*`).
pub mod proxy {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("proxy");
}

/// The one page size libSQL replicas take: a frame carries exactly this.
pub const PAGE_SIZE: usize = 4096;

/// The protocol's log id for a lineage: the lineage's 128 bits (32 hex
/// digits) as a UUID, so a restore, which draws a new lineage, makes every
/// replica start over. `None` if `lineage` is not 32 hex digits.
pub fn log_id(lineage: &str) -> Option<String> {
    let hex = lineage.as_bytes();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let l = lineage.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &l[0..8],
        &l[8..12],
        &l[12..16],
        &l[16..20],
        &l[20..32]
    ))
}

/// The log id of a cluster that has no lineage yet (nothing written).
pub const NIL_LOG_ID: &str = "00000000-0000-0000-0000-000000000000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lineage_is_its_log_id_as_a_uuid() {
        assert_eq!(
            log_id("0123456789abcdefFEDCBA9876543210").as_deref(),
            Some("01234567-89ab-cdef-fedc-ba9876543210")
        );
        assert_eq!(log_id("0123"), None);
        assert_eq!(log_id("0123456789abcdefFEDCBA987654321g"), None);
    }
}
