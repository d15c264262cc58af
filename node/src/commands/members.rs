//! The members table of `quorumlite status` and the shell's `.status`:
//! every member's own view, side by side.
//!
//! Only the leader knows how far each follower has replicated, and only
//! through openraft's metrics. Instead, every member is asked for its own
//! status over the client API (the address in the membership is the one
//! it serves clients on): it reports the data version it has applied and
//! how long ago it last heard from the leader. The lag of a member is the
//! leader's version minus its own, in data versions (replicated write
//! batches). The answers are taken at slightly different moments, so the
//! lag is approximate (never below 0); a member that does not answer
//! within the deadline is shown as `unreachable`.

use super::output;
use client::pb::StatusResponse;
use client::{Client, ClientConfig};
use std::time::Duration;

/// What one member said about itself.
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    /// `voter` or `learner`, from the membership.
    pub kind: String,
    /// Its own status; `None` when it did not answer.
    pub status: Option<StatusResponse>,
}

/// Ask every member of `seen.members` for its status, `deadline` each, all
/// at once. The member that answered `seen` is not asked again.
pub async fn survey(
    config: &ClientConfig,
    seen: &StatusResponse,
    deadline: Duration,
) -> Vec<MemberView> {
    let config = ClientConfig {
        request_timeout: deadline,
        retry_budget: deadline,
        connect_timeout: deadline.min(config.connect_timeout),
        ..config.clone()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in seen.members.iter().enumerate() {
        if m.id == seen.id {
            continue;
        }
        let (config, addr) = (config.clone(), m.addr.clone());
        tasks.spawn(async move {
            let status = match Client::with_config([addr.as_str()], config) {
                Ok(c) => c.status(false).await.ok(),
                Err(_) => None,
            };
            (i, status)
        });
    }
    let mut views: Vec<MemberView> = seen
        .members
        .iter()
        .map(|m| MemberView {
            id: m.id,
            addr: m.addr.clone(),
            kind: m.kind.clone(),
            status: (m.id == seen.id).then(|| seen.clone()),
        })
        .collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, status)) = joined {
            if let Some(view) = views.get_mut(i) {
                view.status = status;
            }
        }
    }
    views.sort_by_key(|v| v.id);
    views
}

/// The applied version of the member that says it leads, if one answered.
fn leader_version(views: &[MemberView]) -> Option<u64> {
    views
        .iter()
        .filter_map(|v| v.status.as_ref())
        .find(|s| s.role == "leader")
        .map(|s| s.version)
}

/// The table's facts as JSON, one object per member: `id`, `addr`,
/// `kind`, `reachable`, and for a member that answered `role` (as the
/// table shows it), `version`, `lag` (null when no leader answered) and
/// `last_contact_ms` (null for the leader, and for a member that never
/// heard from one); these three are null for an unreachable member.
pub fn json(views: &[MemberView]) -> Vec<serde_json::Value> {
    let leader_version = leader_version(views);
    views
        .iter()
        .map(|v| {
            let status = v.status.as_ref();
            serde_json::json!({
                "id": v.id,
                "addr": v.addr,
                "kind": v.kind,
                "reachable": status.is_some(),
                "role": status.map_or("unreachable".to_owned(), |s| role(&s.role, &v.kind)),
                "version": status.map(|s| s.version),
                "lag": status.and_then(|s| leader_version.map(|l| l.saturating_sub(s.version))),
                "last_contact_ms": status
                    .filter(|s| s.role != "leader" && s.leader_contact_ms != u64::MAX)
                    .map(|s| s.leader_contact_ms),
            })
        })
        .collect()
}

/// The table: id, address, role, applied version, lag, last contact.
pub fn table(views: &[MemberView]) -> String {
    let leader_version = leader_version(views);
    let header: Vec<String> = ["id", "address", "role", "version", "lag", "last contact"]
        .into_iter()
        .map(String::from)
        .collect();
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let mut row = vec![v.id.to_string(), v.addr.clone()];
            match &v.status {
                Some(s) => row.extend([
                    role(&s.role, &v.kind),
                    s.version.to_string(),
                    leader_version.map_or("?".into(), |l| l.saturating_sub(s.version).to_string()),
                    contact(&s.role, s.leader_contact_ms),
                ]),
                None => row.extend(["unreachable", "-", "-", "-"].map(String::from)),
            }
            row
        })
        .collect();
    output::table(&header, &rows)
}

/// The role a member reports, marked when the membership makes it a
/// learner but it does not say so (it has not caught up with the change).
fn role(reported: &str, kind: &str) -> String {
    if kind == "learner" && reported != "learner" {
        format!("{reported} (learner)")
    } else {
        reported.to_owned()
    }
}

/// How long ago a member last heard from the leader.
fn contact(role: &str, ms: u64) -> String {
    match (role, ms) {
        ("leader", _) => "-".into(),
        (_, u64::MAX) => "never".into(),
        (_, ms) if ms < 10_000 => format!("{ms} ms ago"),
        (_, ms) => format!("{} s ago", ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: &str, version: u64, contact_ms: u64) -> StatusResponse {
        StatusResponse {
            id,
            role: role.into(),
            version,
            leader_contact_ms: contact_ms,
            ..StatusResponse::default()
        }
    }

    fn view(id: u64, status: Option<StatusResponse>) -> MemberView {
        MemberView {
            id,
            addr: format!("127.0.0.1:400{id}"),
            kind: "voter".into(),
            status,
        }
    }

    #[test]
    fn the_table_shows_each_members_lag_behind_the_leader_and_who_is_unreachable() {
        let t = table(&[
            view(1, Some(status(1, "follower", 7, 40))),
            view(2, Some(status(2, "leader", 9, 0))),
            view(3, None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "id  address         role         version  lag  last contact"
        );
        assert_eq!(
            lines[2],
            "1   127.0.0.1:4001  follower     7        2    40 ms ago"
        );
        assert_eq!(lines[3], "2   127.0.0.1:4002  leader       9        0    -");
        assert_eq!(lines[4], "3   127.0.0.1:4003  unreachable  -        -    -");
    }

    #[test]
    fn the_json_carries_every_column_of_the_table() {
        let j = json(&[
            view(1, Some(status(1, "follower", 7, 40))),
            view(2, Some(status(2, "leader", 9, 0))),
            view(3, None),
        ]);
        assert_eq!(
            j[0],
            serde_json::json!({"id": 1, "addr": "127.0.0.1:4001", "kind": "voter", "reachable": true,
                "role": "follower", "version": 7, "lag": 2, "last_contact_ms": 40})
        );
        assert_eq!(j[1]["lag"], 0);
        assert_eq!(j[1]["last_contact_ms"], serde_json::Value::Null);
        assert_eq!(
            j[2],
            serde_json::json!({"id": 3, "addr": "127.0.0.1:4003", "kind": "voter", "reachable": false,
                "role": "unreachable", "version": null, "lag": null, "last_contact_ms": null})
        );
    }

    #[test]
    fn without_a_leader_the_lag_is_unknown() {
        let t = table(&[view(1, Some(status(1, "candidate", 3, u64::MAX)))]);
        assert!(
            t.lines()
                .nth(2)
                .is_some_and(|l| l.ends_with("3        ?    never")),
            "{t}"
        );
        assert_eq!(contact("follower", 12_345), "12 s ago");
        assert_eq!(role("follower", "learner"), "follower (learner)");
        assert_eq!(role("learner", "learner"), "learner");
    }
}
