//! `quorumlite members`: list, add, promote, remove, transfer-leader.
//!
//! Each change is one call to any node, which passes it on to the leader
//! (see `server::members`); the reply comes once the change is committed.
//! Then the command prints the members table, as `status` does.

use super::{client_config, members, output, with_client};
use crate::cli::{ConnectArgs, MembersCommand};
use client::{pb, Client};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(command: MembersCommand) -> ExitCode {
    match command {
        MembersCommand::List { connect } => {
            let c = connect.clone();
            with_client(&c, |client| list(client, connect))
        }
        MembersCommand::Add {
            connect,
            id,
            node_addr,
            learner,
            wait_secs,
        } => {
            let request = pb::ChangeMembershipRequest {
                action: pb::MembershipAction::Add as i32,
                id,
                addr: node_addr,
                learner,
            };
            change(connect, request, Duration::from_secs(wait_secs))
        }
        MembersCommand::Promote { connect, id } => change(
            connect,
            pb::ChangeMembershipRequest {
                action: pb::MembershipAction::Promote as i32,
                id,
                ..pb::ChangeMembershipRequest::default()
            },
            Duration::from_secs(30),
        ),
        MembersCommand::Remove { connect, id } => change(
            connect,
            pb::ChangeMembershipRequest {
                action: pb::MembershipAction::Remove as i32,
                id,
                ..pb::ChangeMembershipRequest::default()
            },
            Duration::from_secs(30),
        ),
        MembersCommand::TransferLeader { connect, to } => {
            let c = connect.clone();
            with_client(&c, |client| transfer(client, connect, to))
        }
    }
}

/// Every member's own view, asked of the nodes in `connect`, as `status`
/// shows them; and the leader's id.
async fn survey(
    client: &Client,
    connect: &ConnectArgs,
) -> Result<(u64, Vec<members::MemberView>), client::Error> {
    let s = client.status(false).await?;
    let config =
        client_config(connect).map_err(|m| client::Error::new(client::ErrorCode::BadRequest, m))?;
    let deadline = Duration::from_millis(connect.timeout_ms.min(2_000));
    Ok((s.leader_id, members::survey(&config, &s, deadline).await))
}

async fn list(client: Client, connect: ConnectArgs) -> Result<(), client::Error> {
    let (leader_id, views) = survey(&client, &connect).await?;
    if connect.json {
        outln!(
            "{}",
            json!({ "leader_id": leader_id, "members": members::json(&views) })
        );
        return Ok(());
    }
    out!("{}", members::table(&views));
    Ok(())
}

fn change(connect: ConnectArgs, request: pb::ChangeMembershipRequest, wait: Duration) -> ExitCode {
    let c = connect.clone();
    with_client(&c, |client| async move {
        let action = pb::MembershipAction::try_from(request.action).map_or("change", |a| match a {
            pb::MembershipAction::Add if request.learner => "added as a learner",
            pb::MembershipAction::Add => "added as a voter",
            pb::MembershipAction::Promote => "promoted to voter",
            pb::MembershipAction::Remove => "removed",
        });
        let id = request.id;
        let r = client.change_membership(request, wait).await?;
        let (_, views) = survey(&client, &connect).await?;
        if connect.json {
            outln!(
                "{}",
                json!({
                    "id": id,
                    "done": action,
                    "leader_id": r.leader_id,
                    "elapsed_ms": r.elapsed_ms,
                    "members": members::json(&views),
                })
            );
            return Ok(());
        }
        outln!("node {id} {action} in {} ms", r.elapsed_ms);
        outln!();
        out!("{}", members::table(&views));
        Ok(())
    })
}

async fn transfer(client: Client, connect: ConnectArgs, to: u64) -> Result<(), client::Error> {
    let r = client.transfer_leader(to).await?;
    if connect.json {
        outln!(
            "{}",
            json!({ "leader_id": r.leader_id, "term": r.term, "elapsed_ms": r.elapsed_ms })
        );
        return Ok(());
    }
    if r.leader_id != to {
        output::error(
            false,
            "UNAVAILABLE",
            &format!("node {} leads, not node {to}", r.leader_id),
        );
    }
    outln!(
        "node {} leads (term {}), transfer took {} ms",
        r.leader_id,
        r.term,
        r.elapsed_ms
    );
    Ok(())
}
