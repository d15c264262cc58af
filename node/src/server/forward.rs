//! Calls from this node to another on the private cluster API
//! (`cluster.rs`): forwarded writes, read barriers, joins, campaigns.
//!
//! One lazily connected channel per peer address. A forwarded call that
//! fails in transit is classified by what may have happened: refused before
//! sending means nothing was done (the client may retry), anything later is
//! indeterminate for a write. Every call carries this node's peer
//! credentials (`raft::PeerAuth`): the receiving node admits cluster calls
//! from peers only.

use super::cluster_pb::cluster_client::ClusterClient;
use super::cluster_pb::{
    CampaignRequest, HranaPipelineRequest, HranaPipelineResponse, JoinRequest, ReadIndexRequest,
    ReadIndexResponse,
};
use super::error::{Forwarded, Unavailable, WriteError};
use super::members::{Change, Changed, Member, Transferred};
use super::tls::Tls;
use super::write::Written;
use client::dial::{Dial, DialError, Keepalive};
use client::pb::{ExecuteRequest, ExecuteResponse};
use client::ErrorCode;
use client::{pb, Token};
use raft::NodeId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{Column, Params, Statement, StatementResult, Value, WriteRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client whose every call carries this node's peer credentials.
type PeerClient = ClusterClient<InterceptedService<Channel, Stamp>>;

/// Stamps each outgoing call with this node's peer credentials.
#[derive(Clone)]
struct Stamp(raft::PeerAuth);

impl tonic::service::Interceptor for Stamp {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.stamp(&mut req, None);
        Ok(req)
    }
}

pub struct Forwarder {
    clients: Mutex<HashMap<String, PeerClient>>,
    auth: raft::PeerAuth,
    /// TLS toward the leader (presenting this node's certificate, so the
    /// leader sees a peer); `None`: plain text.
    tls: Option<Arc<Tls>>,
    /// Deadline of a forwarded write: the leader's own write timeout plus slack.
    write_deadline: Duration,
}

impl Forwarder {
    pub fn new(write_timeout: Duration, tls: Option<Arc<Tls>>, auth: raft::PeerAuth) -> Forwarder {
        Forwarder {
            clients: Mutex::new(HashMap::new()),
            auth,
            tls,
            write_deadline: write_timeout + Duration::from_secs(2),
        }
    }

    fn client(&self, addr: &str) -> Result<PeerClient, Unavailable> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        // Keepalive pings find a leader that went silent (cut off, paused)
        // in about 2 s, failing the calls stuck on it instead of letting
        // them wait out their deadlines.
        let dial = Dial {
            connect_timeout: Some(Duration::from_millis(500)),
            keepalive: Some(Keepalive::every(Duration::from_secs(1))),
        };
        let tls = self.tls.as_ref().map(|t| t.client_tls().tonic());
        let channel = client::dial::channel(addr, tls, dial).map_err(|e| match e {
            DialError::BadAddress { reason, .. } => {
                Unavailable::Down(format!("bad leader address {addr:?}: {reason}"))
            }
            DialError::Tls { reason, .. } => {
                Unavailable::Internal(format!("TLS toward {addr}: {reason}"))
            }
        })?;
        let c = ClusterClient::with_interceptor(channel, Stamp(self.auth.clone()))
            .max_decoding_message_size(client::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(client::MAX_MESSAGE_BYTES);
        clients.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// Send `message` to the node at `addr` with `send` (one method of the
    /// cluster API), as `how` says; a failure becomes this node's error
    /// ([`remote`]).
    async fn call<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        message: Req,
        how: How<'_>,
        send: F,
    ) -> Result<Resp, Forwarded>
    where
        F: FnOnce(PeerClient, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut req = tonic::Request::new(message);
        if let Some(deadline) = how.deadline {
            req.set_timeout(deadline);
        }
        // The receiving node checks the caller's token again.
        carry_bearer(&mut req, how.bearer);
        match send(self.client(addr)?, req).await {
            Ok(resp) => Ok(resp.into_inner()),
            Err(status) => Err(remote(&status, addr, how.write)),
        }
    }

    /// Forward a write to the leader at `addr`, in the core's terms.
    pub async fn write(
        &self,
        addr: &str,
        request: &WriteRequest,
        bearer: Option<&str>,
    ) -> Result<Written, WriteError> {
        let resp = self
            .execute(addr, write_request_out(request), bearer)
            .await?;
        written_in(resp)
    }

    /// Forward several writes to the leader at `addr` as one batch call:
    /// each one's outcome, in order.
    pub async fn write_many(
        &self,
        addr: &str,
        requests: &[&WriteRequest],
        bearer: Option<&str>,
    ) -> Result<Vec<Result<Written, WriteError>>, WriteError> {
        let writes = requests.iter().map(|r| write_request_out(r)).collect();
        let resp = self
            .execute_batch(addr, client::pb::ExecuteBatchRequest { writes }, bearer)
            .await?;
        Ok(resp.outcomes.into_iter().map(outcome_in).collect())
    }

    /// Send a write to the leader at `addr`.
    pub async fn execute(
        &self,
        addr: &str,
        request: ExecuteRequest,
        bearer: Option<&str>,
    ) -> Result<ExecuteResponse, Forwarded> {
        ::metrics::counter!(crate::metrics::FORWARDED, "kind" => "write").increment(1);
        // A lone VACUUM takes as long as the database's size needs
        // (`writer/image.rs`): no deadline; keepalive notices a dead leader.
        let vacuum = matches!(request.statements.as_slice(), [s] if storage::is_vacuum_sql(&s.sql));
        let deadline = (!vacuum).then_some(self.write_deadline);
        let how = How::write(deadline, bearer);
        self.call(
            addr,
            request,
            how,
            |mut c, r| async move { c.execute(r).await },
        )
        .await
    }

    /// Send a batch of writes to the leader at `addr`, as one call.
    pub async fn execute_batch(
        &self,
        addr: &str,
        request: client::pb::ExecuteBatchRequest,
        bearer: Option<&str>,
    ) -> Result<client::pb::ExecuteBatchResponse, Forwarded> {
        ::metrics::counter!(crate::metrics::FORWARDED, "kind" => "write")
            .increment(request.writes.len() as u64);
        let how = How::write(Some(self.write_deadline), bearer);
        self.call(addr, request, how, |mut c, r| async move {
            c.execute_batch(r).await
        })
        .await
    }

    /// Pass a Hrana pipeline on to the node at `addr` (the leader, or the
    /// stream's owner). It may hold writes: a failure in transit after
    /// sending is indeterminate.
    pub async fn hrana(
        &self,
        addr: &str,
        request: HranaPipelineRequest,
        bearer: Option<&str>,
    ) -> Result<HranaPipelineResponse, Forwarded> {
        ::metrics::counter!(crate::metrics::FORWARDED, "kind" => "http").increment(1);
        let how = How::write(Some(self.write_deadline), bearer);
        self.call(addr, request, how, |mut c, r| async move {
            c.hrana_pipeline(r).await
        })
        .await
    }

    /// Pass a libSQL replica's program on to the leader at `addr`, where
    /// the replicas' sessions are. It may hold writes: a failure in
    /// transit after sending is indeterminate.
    pub async fn replica_execute(
        &self,
        addr: &str,
        program: &client::libsql::proxy::ProgramReq,
        bearer: Option<&str>,
    ) -> Result<client::libsql::proxy::ExecuteResults, Forwarded> {
        use prost::Message;
        ::metrics::counter!(crate::metrics::FORWARDED, "kind" => "replica").increment(1);
        let how = How::write(Some(self.write_deadline), bearer);
        let request = super::cluster_pb::ReplicaExecuteRequest {
            program: program.encode_to_vec(),
        };
        let resp = self
            .call(addr, request, how, |mut c, r| async move {
                c.replica_execute(r).await
            })
            .await?;
        client::libsql::proxy::ExecuteResults::decode(resp.results.as_slice()).map_err(|e| {
            Unavailable::Internal(format!("the leader answered a replica's program with {e}"))
                .into()
        })
    }

    /// Pass a membership change on to the leader at `addr`.
    pub async fn change_membership(
        &self,
        addr: &str,
        change: &Change,
        bearer: Option<&str>,
        limit: Duration,
    ) -> Result<Changed, Forwarded> {
        let how = How::other(limit, bearer);
        let request = change_out(change);
        self.call(addr, request, how, |mut c, r| async move {
            c.change_membership(r).await
        })
        .await
        .map(changed_in)
    }

    /// Ask the member at `addr` to add node `join` (`--join`), or pass
    /// such a request on to the leader (`passed_on`).
    pub async fn join(
        &self,
        addr: &str,
        join: &super::members::Join,
        passed_on: bool,
        limit: Duration,
    ) -> Result<Changed, Forwarded> {
        let request = JoinRequest {
            id: join.id,
            addr: join.addr.clone(),
            learner: join.learner,
            forwarded: passed_on,
        };
        let how = How::other(limit, None);
        self.call(
            addr,
            request,
            how,
            |mut c, r| async move { c.join(r).await },
        )
        .await
        .map(changed_in)
    }

    /// Pass a leader transfer on to the leader at `addr`.
    pub async fn transfer_leader(
        &self,
        addr: &str,
        to: NodeId,
        bearer: Option<&str>,
    ) -> Result<Transferred, Forwarded> {
        let how = How::other(self.write_deadline, bearer);
        let request = pb::TransferLeaderRequest { to };
        self.call(addr, request, how, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
        .map(|t| Transferred {
            leader_id: t.leader_id,
            term: t.term,
            elapsed: Duration::from_millis(t.elapsed_ms),
        })
    }

    /// Tell a voter its part in a leader transfer.
    pub async fn campaign(
        &self,
        addr: &str,
        campaign: bool,
        pause_ms: u64,
    ) -> Result<(), Forwarded> {
        let request = CampaignRequest { campaign, pause_ms };
        let how = How::other(Duration::from_secs(1), None);
        self.call(
            addr,
            request,
            how,
            |mut c, r| async move { c.campaign(r).await },
        )
        .await
        .map(drop)
    }

    /// Ask the leader at `addr` for a read barrier.
    pub async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<ReadIndexResponse, Forwarded> {
        ::metrics::counter!(crate::metrics::FORWARDED, "kind" => "read_index").increment(1);
        let how = How::other(timeout, None);
        self.call(addr, ReadIndexRequest {}, how, |mut c, r| async move {
            c.read_index(r).await
        })
        .await
    }
}

/// How a call is sent.
struct How<'a> {
    /// Its deadline (`None`: none; keepalive still notices a dead peer).
    deadline: Option<Duration>,
    /// The client's token, for the receiving node to check again.
    bearer: Option<&'a str>,
    /// It may change data: a failure in transit after sending is
    /// indeterminate, not "nothing done".
    write: bool,
}

impl<'a> How<'a> {
    fn write(deadline: Option<Duration>, bearer: Option<&'a str>) -> How<'a> {
        How {
            deadline,
            bearer,
            write: true,
        }
    }

    fn other(deadline: Duration, bearer: Option<&'a str>) -> How<'a> {
        How {
            deadline: Some(deadline),
            bearer,
            write: false,
        }
    }
}

// The core's writes as the cluster API carries them, and the leader's
// answers back.

/// A write request as the cluster API carries it to the leader (which
/// checks it again, as it would a client's).
fn write_request_out(request: &WriteRequest) -> pb::ExecuteRequest {
    let (session, seq, floor) = match &request.fence {
        Some(f) => (f.session.clone(), f.seq, f.floor),
        None => (String::new(), 0, 0),
    };
    pb::ExecuteRequest {
        statements: request.statements.iter().map(statement_out).collect(),
        session,
        seq,
        floor,
    }
}

/// A statement as the wire carries it.
fn statement_out(s: &Statement) -> pb::Statement {
    let value = |v: &Value| pb::Value::from(v.clone());
    match &s.params {
        Params::None => pb::Statement {
            sql: s.sql.clone(),
            ..pb::Statement::default()
        },
        Params::Positional(values) => pb::Statement {
            sql: s.sql.clone(),
            positional: values.iter().map(value).collect(),
            ..pb::Statement::default()
        },
        Params::Named(values) => pb::Statement {
            sql: s.sql.clone(),
            named: values
                .iter()
                .map(|(name, v)| pb::NamedValue {
                    name: name.clone(),
                    value: Some(value(v)),
                })
                .collect(),
            ..pb::Statement::default()
        },
    }
}

/// The leader's answer to a forwarded write, in the core's terms.
fn written_in(resp: pb::ExecuteResponse) -> Result<Written, WriteError> {
    let token = match resp.token.as_str() {
        "" => Token::empty(),
        text => text.parse().map_err(|e: client::TokenError| {
            Unavailable::Internal(format!("the leader answered a bad token: {e}"))
        })?,
    };
    Ok(Written {
        results: resp.results.into_iter().map(result_in).collect(),
        token,
        leader: resp.leader,
    })
}

/// One item's outcome of a forwarded batch, in the core's terms.
fn outcome_in(outcome: pb::ExecuteOutcome) -> Result<Written, WriteError> {
    use pb::execute_outcome::Outcome;
    match outcome.outcome {
        Some(Outcome::Ok(resp)) => written_in(resp),
        Some(Outcome::Error(item)) => Err(WriteError::Remote(client::Error::from_item(
            &item,
            client::ErrorCode::Internal,
        ))),
        None => Err(Unavailable::Internal(
            "the leader answered a write of the batch with nothing".into(),
        )
        .into()),
    }
}

fn result_in(r: pb::StatementResult) -> StatementResult {
    StatementResult {
        columns: r
            .columns
            .into_iter()
            .map(|c| Column {
                name: c.name,
                decltype: c.decltype,
            })
            .collect(),
        rows: r
            .rows
            .into_iter()
            .map(|row| row.values.into_iter().map(Value::from).collect())
            .collect(),
        rows_affected: r.rows_affected,
        last_insert_rowid: r.last_insert_rowid,
    }
}

fn change_out(change: &Change) -> pb::ChangeMembershipRequest {
    use pb::MembershipAction as A;
    let (action, id, addr, learner) = match change {
        Change::Add { id, addr, learner } => (A::Add, *id, addr.clone(), *learner),
        Change::Promote { id } => (A::Promote, *id, String::new(), false),
        Change::Remove { id } => (A::Remove, *id, String::new(), false),
    };
    pb::ChangeMembershipRequest {
        action: action as i32,
        id,
        addr,
        learner,
    }
}

fn changed_in(resp: pb::ChangeMembershipResponse) -> Changed {
    Changed {
        members: resp
            .members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                addr: m.addr,
                voter: m.kind == "voter",
            })
            .collect(),
        leader_id: resp.leader_id,
        elapsed: Duration::from_millis(resp.elapsed_ms),
    }
}

/// Pass the caller's bearer token on: the receiving node checks it again.
fn carry_bearer<T>(req: &mut tonic::Request<T>, bearer: Option<&str>) {
    if let Some(value) = bearer.and_then(|b| b.parse().ok()) {
        req.metadata_mut().insert("authorization", value);
    }
}

/// A failed call to the leader, as this node reports it to its caller.
fn remote(status: &tonic::Status, addr: &str, write: bool) -> Forwarded {
    let err = client::Error::from_status(status, addr);
    match err.code {
        // The leader could not be reached at all: nothing was done there.
        ErrorCode::Unavailable if status.metadata().get(client::error::ERROR_KEY).is_none() => {
            Unavailable::NoLeader.into()
        }
        // Lost in transit after it may have arrived.
        ErrorCode::Timeout if write => Forwarded::Indeterminate(format!(
            "forwarding to the leader at {addr} failed: {}",
            err.message
        )),
        _ => Forwarded::Remote(err),
    }
}
