//! The network the nodes run on, and the partitions the nemesis makes.
//!
//! **Namespaces** (the real thing, needs root, `ip` and `nft`): each node
//! runs in its own network namespace with one veth into a bridge that this
//! process's namespace also sits on (address `.254`), so the harness's
//! clients reach every node directly:
//!
//! ```text
//!   ns qj<tag>n1 (10.a.b.1) ─veth─┐
//!   ns qj<tag>n2 (10.a.b.2) ─veth─┼─ bridge qj<tag>br (10.a.b.254) ── harness clients
//!   ns qj<tag>n3 (10.a.b.3) ─veth─┘
//! ```
//!
//! A partition is a *grudge*: for each node, the peers whose packets it
//! drops, as an nftables `input` rule inside that node's namespace. Every
//! grudge is symmetric, so both directions of a cut are lost silently (no
//! RST, no ICMP), as on a real switch failure. Client traffic from the
//! harness is never dropped: clients keep talking to both sides, which is
//! how stale reads from a deposed leader would be seen.
//!
//! **Loopback** (the fallback when namespaces cannot be made: not root, no
//! `ip` or `nft`, a sandbox without `CAP_NET_ADMIN`): nodes on 127.0.0.1
//! with their own ports. Packets cannot be dropped there, so a partition is
//! **emulated by pausing** (SIGSTOP) the minority side for the window: the
//! majority sees the same silence, but the paused side cannot serve stale
//! reads meanwhile. The run says so in its log and its report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// Nodes each node drops packets from. Invariant (`symmetric`): `b` in
/// `grudge[a]` iff `a` in `grudge[b]`.
pub type Grudge = BTreeMap<u64, BTreeSet<u64>>;

/// Which network to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// Namespaces when they can be made, loopback otherwise.
    Auto,
    Namespaces,
    Loopback,
}

/// The network a cluster runs on.
pub enum Net {
    Namespaces(Namespaces),
    /// Why namespaces were not used.
    Loopback {
        reason: String,
    },
}

/// Namespaces, veths and a bridge made for one run; removed on drop.
pub struct Namespaces {
    tag: String,
    /// First two octets after 10: the run's /24 is 10.a.b.0.
    subnet: (u8, u8),
    ids: Vec<u64>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

impl Net {
    /// Build the network for nodes `ids`.
    pub fn new(mode: NetMode, ids: &[u64]) -> Result<Net, String> {
        match mode {
            NetMode::Loopback => Ok(Net::Loopback {
                reason: "loopback was asked for (--net loopback)".into(),
            }),
            NetMode::Namespaces => Namespaces::new(ids).map(Net::Namespaces),
            NetMode::Auto => match Namespaces::new(ids) {
                Ok(ns) => Ok(Net::Namespaces(ns)),
                Err(why) => Ok(Net::Loopback {
                    reason: format!("network namespaces unavailable: {why}"),
                }),
            },
        }
    }

    /// Whether partitions drop packets (true) or are emulated by pausing.
    pub fn real_partitions(&self) -> bool {
        matches!(self, Net::Namespaces(_))
    }

    /// A one-line description for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Net::Namespaces(ns) => format!(
                "network namespaces qj{}n* on bridge qj{}br, 10.{}.{}.0/24; partitions drop packets with nftables",
                ns.tag, ns.tag, ns.subnet.0, ns.subnet.1
            ),
            Net::Loopback { reason } => format!(
                "loopback ({reason}); partitions are emulated by pausing the minority side"
            ),
        }
    }

    /// The address node `id` listens on, given a port for loopback use.
    pub fn addr(&self, id: u64, loopback_port: u16) -> String {
        match self {
            Net::Namespaces(ns) => format!("{}:7001", ns.ip(id)),
            Net::Loopback { .. } => format!("127.0.0.1:{loopback_port}"),
        }
    }

    /// A command that runs `program` inside node `id`'s network.
    pub fn command(&self, id: u64, program: &std::path::Path) -> Command {
        match self {
            Net::Namespaces(ns) => {
                // `ip netns exec` execs the program in place: the child's
                // pid is the node's, so signals reach the node itself.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name(id)]).arg(program);
                c
            }
            Net::Loopback { .. } => Command::new(program),
        }
    }

    /// Replace the current partition with `grudge` (empty: heal).
    pub fn partition(&self, grudge: &Grudge) -> Result<(), String> {
        debug_assert!(symmetric(grudge), "grudges are symmetric");
        match self {
            Net::Namespaces(ns) => ns.partition(grudge),
            Net::Loopback { .. } => Err("loopback networks cannot drop packets".into()),
        }
    }

    /// Drop no packets.
    pub fn heal(&self) -> Result<(), String> {
        match self {
            Net::Namespaces(ns) => ns.partition(&Grudge::new()),
            Net::Loopback { .. } => Ok(()),
        }
    }
}

/// Whether every cut in `grudge` goes both ways.
pub fn symmetric(grudge: &Grudge) -> bool {
    grudge.iter().all(|(a, peers)| {
        peers
            .iter()
            .all(|b| grudge.get(b).is_some_and(|s| s.contains(a)))
    })
}

/// Cut every node of `a` off from every node of `b`, both ways.
pub fn cut(a: &[u64], b: &[u64]) -> Grudge {
    let mut g = Grudge::new();
    for &x in a {
        for &y in b {
            if x != y {
                g.entry(x).or_default().insert(y);
                g.entry(y).or_default().insert(x);
            }
        }
    }
    g
}

impl Namespaces {
    fn new(ids: &[u64]) -> Result<Namespaces, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        for tool in ["ip", "nft"] {
            let found = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            if !found {
                return Err(format!("`{tool}` is not installed (run jepsen/setup.sh)"));
            }
        }
        let seed = std::process::id() as u64 * 7919 + now_nanos() % 7919;
        let ns = Namespaces {
            tag: format!("{:04x}", seed % 0xffff),
            subnet: (100 + (seed % 100) as u8, ((seed / 100) % 250) as u8 + 1),
            ids: Vec::new(),
        };
        ns.build(ids)
    }

    fn build(mut self, ids: &[u64]) -> Result<Namespaces, String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // From here on, drop removes whatever was made.
        let gateway = format!("10.{}.{}.254/24", self.subnet.0, self.subnet.1);
        ip(&["addr", "add", &gateway, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for &id in ids {
            let name = self.name(id);
            ip(&["netns", "add", &name])?;
            self.ids.push(id);
            let veth = format!("qj{}v{id}", self.tag);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", self.ip(id));
            ip(&["-n", &name, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            // nftables must work in there, or partitions would be silent no-ops.
            run(Command::new("ip").args(["netns", "exec", &name, "nft", "flush", "ruleset"]))?;
        }
        Ok(self)
    }

    fn bridge(&self) -> String {
        format!("qj{}br", self.tag)
    }

    fn name(&self, id: u64) -> String {
        format!("qj{}n{id}", self.tag)
    }

    fn ip(&self, id: u64) -> String {
        format!("10.{}.{}.{id}", self.subnet.0, self.subnet.1)
    }

    fn partition(&self, grudge: &Grudge) -> Result<(), String> {
        for &id in &self.ids {
            let ns = self.name(id);
            let mut rules = String::from("flush ruleset\n");
            if let Some(peers) = grudge.get(&id).filter(|p| !p.is_empty()) {
                let from: Vec<String> = peers.iter().map(|p| self.ip(*p)).collect();
                rules.push_str(&format!(
                    "table inet jepsen {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}\n",
                    from.join(", ")
                ));
            }
            nft(&ns, &rules)?;
        }
        Ok(())
    }
}

fn nft(ns: &str, rules: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| format!("nft in {ns}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for &id in &self.ids {
            let _ = ip(&["netns", "del", &self.name(id)]);
        }
        // Deleting a namespace deletes its veth end, and so the pair.
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_symmetric_and_never_cut_a_node_from_itself() {
        let g = cut(&[1], &[2, 3]);
        assert!(symmetric(&g));
        assert_eq!(g[&1], BTreeSet::from([2, 3]));
        assert_eq!(g[&2], BTreeSet::from([1]));
        let bridge = {
            let mut g = cut(&[1], &[3]);
            g.extend(Grudge::new());
            g
        };
        assert!(!bridge.contains_key(&2), "the bridge node sees both sides");
        assert!(symmetric(&cut(&[1, 2], &[2, 3])));
        assert!(!cut(&[1, 2], &[2, 3])[&2].contains(&2));
        let mut broken = Grudge::new();
        broken.entry(1).or_default().insert(2);
        assert!(!symmetric(&broken));
    }
}
