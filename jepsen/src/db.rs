//! The database under test: real `quorumlite node` processes.
//!
//! Control is by signals, as an operator's mistakes and a kernel's would
//! be: SIGKILL (crash, restart later from the same data directory), SIGSTOP
//! / SIGCONT (a process that stops being scheduled: a GC pause, a VM
//! migration), SIGTERM (graceful stop). Each node logs to its own file in
//! the run directory. Dropping the cluster kills every node.
//!
//! A node's slot (id, address, `--peers`) can also run a process on a data
//! dir that is not its own: the throwaway cluster of the `stray-node` fault
//! runs in the same slots on its own dirs before the real cluster starts,
//! and the fault later puts one such process back in a slot (see
//! `nemesis::stray`). A process that exits without being told to is
//! reaped and remembered ([`Cluster::reap_exited`]): a node that stops on
//! its own is a finding, not noise.

use crate::net::Net;
use client::pb::StatusResponse;
use client::{Client, ClientConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// One node process.
pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    dir: PathBuf,
    log: PathBuf,
    /// Invariant: `None` exactly while the node is killed or stopped.
    child: Option<Child>,
    /// Whether the node is SIGSTOPped (and so must be SIGCONTed before a
    /// kill can be reaped).
    paused: bool,
    /// Invariant: `true` only while `child` is `Some` and runs on a data
    /// dir other than `dir` (the throwaway cluster's).
    foreign: bool,
}

/// A node process that exited without the harness stopping it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Exit {
    pub node: u64,
    /// Seconds into the run when the harness noticed (not when it died:
    /// the node's log has that).
    pub noticed_s: f64,
    pub status: String,
    /// The last lines of the node's log.
    pub log_tail: String,
}

/// A cluster of node processes on a [`Net`].
pub struct Cluster {
    pub net: Net,
    bin: PathBuf,
    peers: String,
    extra: Vec<String>,
    /// Indexed by id - 1.
    nodes: Vec<NodeProc>,
    /// Nodes that exited on their own, in the order noticed.
    exits: Vec<Exit>,
}

/// A port the kernel just handed out on loopback, free when we looked.
/// Another process can take it before the node binds it; the node then
/// fails to start, naming the address.
fn loopback_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free loopback port: {e}"))
}

impl Cluster {
    /// Start `n` nodes from `bin` with data under `dir`, each with `extra`
    /// flags.
    pub fn start(
        net: Net,
        bin: &Path,
        dir: &Path,
        n: u64,
        extra: &[String],
    ) -> Result<Cluster, String> {
        let mut cluster = Cluster::plan(net, bin, dir, n, extra)?;
        cluster.start_all()?;
        Ok(cluster)
    }

    /// Lay out `n` nodes (ids, addresses, `--peers`, data dirs under
    /// `dir`) without starting any.
    pub fn plan(
        net: Net,
        bin: &Path,
        dir: &Path,
        n: u64,
        extra: &[String],
    ) -> Result<Cluster, String> {
        let nodes: Vec<NodeProc> = (1..=n)
            .map(|id| {
                Ok(NodeProc {
                    id,
                    addr: net.addr(id, loopback_port()?),
                    dir: dir.join(format!("n{id}")),
                    log: dir.join(format!("n{id}.log")),
                    child: None,
                    paused: false,
                    foreign: false,
                })
            })
            .collect::<Result<_, String>>()?;
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Nodes in namespaces talk over non-loopback addresses: without TLS
        // they prove a shared cluster secret to each other. The throwaway
        // cluster of the stray-node fault gets the same flags, hence the
        // same secret: the operator's mistake it models reuses the whole
        // configuration.
        let secret = dir.join("cluster.secret");
        let text: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..32)
                .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
                .collect()
        };
        std::fs::write(&secret, text).map_err(|e| format!("{}: {e}", secret.display()))?;
        let mut extra = extra.to_vec();
        extra.push("--cluster-secret-file".into());
        extra.push(secret.to_string_lossy().into_owned());
        Ok(Cluster {
            net,
            bin: bin.to_owned(),
            peers,
            extra,
            nodes,
            exits: Vec::new(),
        })
    }

    /// Start every node that is not running, on its own data dir.
    pub fn start_all(&mut self) -> Result<(), String> {
        for id in self.ids() {
            self.restart(id)?;
        }
        Ok(())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.node(id).addr.clone()
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Start node `id`'s process on `data_dir`, logging to `log`.
    fn launch(&mut self, id: u64, data_dir: &Path, log_path: &Path) -> Result<(), String> {
        let mut cmd = self.net.command(id, &self.bin);
        let node = self.node(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        cmd.arg("node")
            .args(["--id", &id.to_string(), "--listen", &node.addr])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(data_dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start node {id} ({}): {e}", self.bin.display()))?;
        let foreign = data_dir != node.dir;
        let node = self.node_mut(id);
        node.child = Some(child);
        node.paused = false;
        node.foreign = foreign;
        Ok(())
    }

    /// Start node `id` (not running) on another data dir, with the same
    /// id, address and `--peers`: what an operator does who reuses an old,
    /// unwiped data dir. Its log goes to `log`.
    pub fn start_foreign(&mut self, id: u64, data_dir: &Path, log: &Path) -> Result<(), String> {
        if self.is_up(id) {
            return Err(format!("node {id} is running; kill it first"));
        }
        self.launch(id, data_dir, log)
    }

    /// Whether node `id` runs on a data dir that is not its own.
    pub fn is_foreign(&self, id: u64) -> bool {
        self.node(id).foreign
    }

    /// Reap every process that exited on its own and remember the nodes
    /// that did (`now_s`: seconds into the run). A process on a foreign
    /// data dir is reaped but not remembered: the harness put it there to
    /// be refused, and may find it gone. Returns the exits found now.
    pub fn reap_exited(&mut self, now_s: f64) -> Vec<Exit> {
        let mut found = Vec::new();
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => continue,
                Err(e) => format!("unknown ({e})"),
            };
            node.child = None;
            node.paused = false;
            if std::mem::take(&mut node.foreign) {
                continue;
            }
            let id = node.id;
            found.push(Exit {
                node: id,
                noticed_s: now_s,
                status,
                log_tail: self.log_tail(id, 5),
            });
        }
        self.exits.extend(found.iter().cloned());
        found
    }

    /// Every exit [`Cluster::reap_exited`] has remembered.
    pub fn exits(&self) -> &[Exit] {
        &self.exits
    }

    /// If node `id`'s process has exited, reap it (the slot is then down)
    /// and give its exit status. Not remembered as an exit: for a process
    /// whose exit the caller expects to explain (a stray).
    pub fn take_exit(&mut self, id: u64) -> Option<String> {
        let node = self.node_mut(id);
        let status = match node.child.as_mut()?.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => return None,
        };
        // Reaped: the pid may be reused, so it must never be signalled.
        node.child = None;
        node.paused = false;
        node.foreign = false;
        Some(status)
    }

    /// Whether node `id` has a process (running or paused).
    pub fn is_up(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.node(id).paused
    }

    fn signal(&self, id: u64, sig: libc::c_int) {
        if let Some(child) = &self.node(id).child {
            // SAFETY: kill(2) with a pid we spawned and have not reaped, so
            // it cannot name another process.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        self.signal(id, libc::SIGKILL);
        self.signal(id, libc::SIGCONT);
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.wait();
        }
        node.paused = false;
        node.foreign = false;
    }

    /// SIGTERM node `id` and wait up to `within` for it to exit, then kill.
    pub fn stop(&mut self, id: u64, within: Duration) {
        self.signal(id, libc::SIGCONT);
        self.signal(id, libc::SIGTERM);
        let started = Instant::now();
        let node = self.node_mut(id);
        node.paused = false;
        if let Some(child) = node.child.as_mut() {
            while started.elapsed() < within {
                if let Ok(Some(_)) = child.try_wait() {
                    node.child = None;
                    node.foreign = false;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill(id);
    }

    /// Start node `id` again on its data directory (no-op when it runs).
    pub fn restart(&mut self, id: u64) -> Result<(), String> {
        if self.is_up(id) {
            return Ok(());
        }
        let node = self.node(id);
        let (dir, log) = (node.dir.clone(), node.log.clone());
        self.launch(id, &dir, &log)
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) {
        if self.is_up(id) {
            self.signal(id, libc::SIGSTOP);
            self.node_mut(id).paused = true;
        }
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
        self.node_mut(id).paused = false;
    }

    /// The last lines of node `id`'s log, for failure reports.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}

/// A client bound to one node, with deadlines short enough that a fault
/// turns into a failed or indeterminate operation within seconds.
pub fn client_of(addr: &str, timeout: Duration) -> Result<Client, client::Error> {
    Client::with_config(
        [addr.to_owned()],
        ClientConfig {
            request_timeout: timeout,
            retry_budget: timeout,
            connect_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        },
    )
}

/// Node `addr`'s status, or `None` when it does not answer quickly.
pub async fn status(addr: &str) -> Option<StatusResponse> {
    let c = client_of(addr, Duration::from_millis(500)).ok()?;
    c.status(false).await.ok()
}

/// Wait until every address answers and one of them leads; the leader's id.
pub async fn wait_ready(addrs: &[String], within: Duration) -> Result<u64, String> {
    let started = Instant::now();
    let mut last = String::from("no node answered");
    while started.elapsed() < within {
        let mut leader = None;
        let mut answered = 0;
        for a in addrs {
            if let Some(s) = status(a).await {
                answered += 1;
                if s.role == "leader" {
                    leader = Some(s.id);
                }
            }
        }
        match leader {
            Some(id) if answered == addrs.len() => return Ok(id),
            _ => {
                last = format!(
                    "{answered}/{} nodes answered, leader {leader:?}",
                    addrs.len()
                )
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("cluster not ready after {within:?}: {last}"))
}

/// What the nodes that answer now say about leadership.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The node that says it leads.
    pub leader: Option<u64>,
    /// The highest term any node reports: it grows with every election.
    pub term: Option<u64>,
}

/// Ask every node for its status (half a second each at most).
/// [`view`] once the cluster has settled: a leader known and the highest
/// term unchanged for `stable` (at most `limit`, then as it is). A window
/// that judges elections (heavy-read) must not count one still under way
/// from the previous window.
pub async fn settled_view(addrs: &[(u64, String)], stable: Duration, limit: Duration) -> View {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = view(addrs).await;
    let mut since = tokio::time::Instant::now();
    loop {
        if last.leader.is_some() && since.elapsed() >= stable {
            return last;
        }
        if tokio::time::Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = view(addrs).await;
        if now.term != last.term || now.leader.is_none() {
            since = tokio::time::Instant::now();
        }
        last = now;
    }
}

pub async fn view(addrs: &[(u64, String)]) -> View {
    let mut v = View::default();
    for (id, a) in addrs {
        if let Some(s) = status(a).await {
            if s.role == "leader" {
                v.leader = Some(*id);
            }
            v.term = v.term.max(Some(s.term));
        }
    }
    v
}
