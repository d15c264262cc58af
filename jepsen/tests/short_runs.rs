//! Short Jepsen runs in the default suite: every workload for ~25 s under
//! a mix of faults against a real three-node cluster (network namespaces
//! when this runs as root, loopback otherwise: the run prints which), and
//! the deliberately broken read path, which the register checker must
//! catch. Between them the runs meet every fault, `heavy-read` and
//! `stray-node` included, and each run is also judged on availability
//! (every fault window's first successful write and read within the
//! default bound, no node exiting on its own). The long runs are
//! `scripts/jepsen.sh` (see docs/jepsen.md).
//!
//! Runs are serialised: two clusters at once on a 2-core machine would
//! mostly test the scheduler.

use jepsen::checker::Validity;
use jepsen::nemesis::Fault;
use jepsen::net::NetMode;
use jepsen::run::{print_summary, run, RunConfig, RunResult};
use jepsen::workload::Workload;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn short_run(
    workload: Workload,
    nemesis: &str,
    seconds: u64,
    seed: u64,
    broken: bool,
) -> RunResult {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let bin =
        jepsen::default_bin().expect("the quorumlite binary (cargo test --workspace builds it)");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = RunConfig {
        workload,
        faults: Fault::parse_list(nemesis).expect("nemesis"),
        nemesis: nemesis.to_string(),
        time: Duration::from_secs(seconds),
        seed,
        dir: root.path().join("run"),
        bin,
        net: NetMode::Auto,
        nodes: 3,
        concurrency: 6,
        broken_reads: broken,
        op_timeout: Duration::from_secs(2),
        availability_bound: jepsen::checker::availability::DEFAULT_BOUND,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt
        .block_on(run(&cfg))
        .unwrap_or_else(|e| panic!("harness: {e}"));
    print_summary(&result);
    assert!(
        result.counts.ok >= 100,
        "too few operations succeeded to mean anything: {:?}",
        result.counts
    );
    assert!(!result.windows.is_empty(), "the nemesis injected no fault");
    // The nemesis deals every enabled fault once per round.
    if result.windows.len() >= cfg.faults.len() {
        for f in &cfg.faults {
            assert!(
                result.windows.iter().any(|w| w.fault == *f),
                "the nemesis never injected {}: {:#?}",
                f.name(),
                result.windows
            );
        }
    }
    // Keep the files of a failing run where a human can find them.
    if result.valid != Validity::Valid && !broken {
        let kept = std::env::temp_dir().join(format!("jepsen-failed-{}-{seed}", workload.name()));
        let _ = std::fs::remove_dir_all(&kept);
        let _ = std::fs::rename(root.path().join("run"), &kept);
        eprintln!("run kept in {}", kept.display());
    }
    result
}

#[test]
fn register_is_linearizable_on_every_node_under_partitions_and_kills() {
    let r = short_run(Workload::Register, "partition,kill", 25, 1, false);
    assert_eq!(r.valid, Validity::Valid, "{:#?}", r.verdicts);
}

/// Heavy reads (issue 20): seconds of CPU per read on one node must cost
/// neither an election nor the availability bound.
#[test]
fn bank_transfers_conserve_the_total_under_partitions_pauses_and_heavy_reads() {
    let r = short_run(Workload::Bank, "partition,pause,heavy-read", 25, 2, false);
    assert_eq!(r.valid, Validity::Valid, "{:#?}", r.verdicts);
}

/// A stray node (issue 20): a node restarted on another cluster's data
/// dir must be refused, and the healthy majority must keep running.
#[test]
fn set_keeps_every_acknowledged_insert_exactly_once_under_kills_partitions_and_a_stray_node() {
    let r = short_run(Workload::Set, "kill,partition,stray-node", 25, 3, false);
    assert_eq!(r.valid, Validity::Valid, "{:#?}", r.verdicts);
    assert!(
        r.verdicts.iter().any(|v| v.checker == "stray"),
        "the stray-node fault's leak check ran"
    );
}

#[test]
fn sessions_read_their_writes_and_never_go_back_on_other_nodes_under_every_fault() {
    let r = short_run(Workload::Session, "all", 25, 4, false);
    assert_eq!(r.valid, Validity::Valid, "{:#?}", r.verdicts);
}

/// The harness can see the bug it exists to find: with linearizable reads
/// served from local state (no read index), followers and a deposed leader
/// answer stale values, and the register checker says so.
#[test]
fn register_checker_catches_linearizable_reads_served_without_a_read_index() {
    let r = short_run(Workload::Register, "partition", 20, 5, true);
    assert_eq!(r.valid, Validity::Invalid, "{:#?}", r.verdicts);
    assert!(r.verdicts[0]
        .anomalies
        .iter()
        .any(|a| a.kind == "not-linearizable"));
}
