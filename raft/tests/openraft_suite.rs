//! openraft's own storage conformance suite, run against the sled log store
//! and the SQLite state machine on real files.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use raft::{LogStore, NodeId, StateMachine, TypeConfig};
use storage::StorageConfig;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path().join("log")).expect("log store");
        let sm = StateMachine::open(dir.path().join("state"), &StorageConfig::default())
            .expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_log_store_and_sqlite_state_machine_pass_the_openraft_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}
