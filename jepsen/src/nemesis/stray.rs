//! The `stray-node` fault: a node restarted on another cluster's data dir.
//!
//! The operator's mistake it plays: a cluster is rebuilt with the same node
//! ids, addresses and `--peers`, and one node is started on its old,
//! unwiped data dir. That node carries another cluster's log, terms and
//! database under a name the real cluster knows.
//!
//! - **Setup** ([`prepare`], before the real cluster starts): a throwaway
//!   cluster runs in the real cluster's slots (same ids, addresses and
//!   `--peers`) on data dirs of its own under `data/stray/`, takes
//!   [`ROWS`] writes into a table of its own ([`TABLE`]), and is stopped.
//!   Its dirs are kept as they are: the pristine strays.
//! - **Window** ([`inject`]): kill node k of the real cluster, copy the
//!   pristine dir k to a dir for this window (each window meets the stray
//!   as it was left, not as an earlier window changed it), and start node
//!   k on the copy, logging to a file beside it.
//! - **Undo** ([`undo`]): kill the stray, restart node k on its own data
//!   dir.
//!
//! What must hold: the healthy nodes keep running (the run's `nodes`
//! verdict), the workload's checkers pass, writes and reads stay available
//! (the `availability` verdict), and the throwaway's table never appears
//! on a node of the real cluster ([`leak_check`]).

use crate::checker::{Anomaly, Validity, Verdict};
use crate::db::{self, Cluster};
use client::{Client, Consistency, Statement, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The throwaway cluster's table; the real cluster never creates it.
pub const TABLE: &str = "jepsen_stray";

/// Writes the throwaway cluster takes, one transaction each, so its log
/// has entries of its own.
pub const ROWS: i64 = 10;

/// The pristine data dirs of the throwaway cluster.
#[derive(Clone, Debug)]
pub struct Strays {
    root: PathBuf,
}

impl Strays {
    fn pristine(&self, id: u64) -> PathBuf {
        self.root.join(format!("n{id}"))
    }
}

/// Run the throwaway cluster in `cluster`'s slots on dirs under `root`,
/// write [`ROWS`] rows, stop it. `cluster` must have no node running.
pub async fn prepare(cluster: &Mutex<Cluster>, root: &Path) -> Result<Strays, String> {
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let (ids, addrs) = {
        let mut c = lock(cluster);
        let ids = c.ids();
        for &id in &ids {
            let log = root.join(format!("n{id}.log"));
            c.start_foreign(id, &root.join(format!("n{id}")), &log)?;
        }
        let addrs: Vec<String> = ids.iter().map(|id| c.addr(*id)).collect();
        (ids, addrs)
    };
    let written = async {
        db::wait_ready(&addrs, Duration::from_secs(60)).await?;
        write_rows(&addrs).await
    }
    .await;
    let mut c = lock(cluster);
    for &id in &ids {
        c.stop(id, Duration::from_secs(10));
    }
    written.map_err(|e| {
        let mut out = format!("the stray-node fault's throwaway cluster: {e}");
        for &id in &ids {
            let tail = std::fs::read_to_string(root.join(format!("n{id}.log")))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            out.push_str(&format!("\n--- throwaway node {id} log ---\n{tail}"));
        }
        out
    })?;
    eprintln!(
        "[jepsen] stray-node: throwaway cluster wrote {ROWS} rows and stopped; its data dirs are in {}",
        root.display()
    );
    Ok(Strays {
        root: root.to_owned(),
    })
}

async fn write_rows(addrs: &[String]) -> Result<(), String> {
    let db = Client::connect(addrs.to_vec()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let create = Statement::new(format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"
    ));
    let mut statements = vec![vec![create]];
    for i in 0..ROWS {
        statements.push(vec![Statement::with_params(
            format!("INSERT INTO {TABLE} (id, note) VALUES (?, ?)"),
            vec![
                Value::Integer(i),
                Value::Text(format!("written by the throwaway cluster, row {i}")),
            ],
        )]);
    }
    for batch in statements {
        loop {
            match db.execute(batch.clone()).await {
                Ok(_) => break,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    eprintln!("[jepsen] stray-node setup: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("writing to the throwaway cluster: {e}")),
            }
        }
    }
    Ok(())
}

/// Kill node `target` and start it on a fresh copy of the throwaway's dir
/// `target`; `window` numbers the copy. The description's tail.
pub fn inject(
    c: &mut Cluster,
    strays: &Strays,
    target: u64,
    window: usize,
) -> Result<String, String> {
    c.kill(target);
    let copy = strays.root.join(format!("w{window}-n{target}"));
    let log = strays.root.join(format!("w{window}-n{target}.log"));
    copy_dir(&strays.pristine(target), &copy)?;
    c.start_foreign(target, &copy, &log)?;
    Ok(format!(
        "node {target} restarted on a copy of the throwaway cluster's data dir {target} (stray/w{window}-n{target}, log beside it)"
    ))
}

/// Kill the stray in slot `target`, restart the real node there. What
/// became of the stray, for the description.
pub fn undo(c: &mut Cluster, target: u64) -> Result<String, String> {
    let fate = match c.take_exit(target) {
        Some(status) => format!("the stray exited on its own ({status})"),
        None if c.is_up(target) => "the stray ran until the end of the window".to_owned(),
        None => "the stray was gone".to_owned(),
    };
    c.kill(target);
    c.restart(target)?;
    Ok(fate)
}

/// Copy directory `from` (files and subdirectories) to `to`, replacing it.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let err =
        |p: &Path, e: std::io::Error| format!("copying the stray's data dir: {}: {e}", p.display());
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| err(to, e))?;
    }
    std::fs::create_dir_all(to).map_err(|e| err(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| err(from, e))? {
        let entry = entry.map_err(|e| err(from, e))?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| err(&path, e))?;
        if kind.is_dir() {
            copy_dir(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest).map_err(|e| err(&path, e))?;
        }
    }
    Ok(())
}

/// After healing: no node of the real cluster holds the throwaway's table
/// (read at `stale`, each node's own state). `Unknown` when no node
/// answered.
pub async fn leak_check(nodes: &[(u64, String)], timeout: Duration) -> Verdict {
    let sql = Statement::with_params(
        "SELECT count(*) FROM sqlite_master WHERE name = ?",
        vec![Value::Text(TABLE.to_owned())],
    );
    let mut answered = Vec::new();
    let mut silent = Vec::new();
    let mut anomalies = Vec::new();
    for (id, addr) in nodes {
        let Ok(db) = db::client_of(addr, timeout) else {
            silent.push(*id);
            continue;
        };
        match db
            .query(sql.clone(), Consistency::Stale { max_lag: None })
            .await
        {
            Ok(r) => {
                answered.push(*id);
                let count = r
                    .rows
                    .first()
                    .and_then(|row| row.first())
                    .and_then(crate::workload::int);
                if count != Some(0) {
                    anomalies.push(Anomaly {
                        kind: "stray-data",
                        message: format!(
                            "node {id} holds the throwaway cluster's table {TABLE} (sqlite_master count {count:?})"
                        ),
                        ops: Vec::new(),
                    });
                }
            }
            Err(_) => silent.push(*id),
        }
    }
    let head = format!("nodes {answered:?} answered, {silent:?} did not");
    if answered.is_empty() {
        return Verdict {
            checker: "stray",
            valid: Validity::Unknown,
            summary: format!("{head}: no node to look at"),
            anomalies,
        };
    }
    let summary = if anomalies.is_empty() {
        format!("{head}: no node holds the throwaway cluster's table")
    } else {
        format!(
            "{head}: {} hold the throwaway cluster's table",
            anomalies.len()
        )
    };
    Verdict::from_anomalies("stray", summary, anomalies)
}

fn lock(c: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}
