//! The gRPC transport between nodes (tonic/prost, `proto/raft.proto`).
//!
//! [`Network`] is openraft's client side: one lazily connected channel per
//! peer; a peer that cannot be reached is reported as `Unreachable`, so
//! openraft backs off instead of hammering it. [`TransportService`] is the
//! server side: it decodes each request and hands it to the local `Raft`.
//! Votes, log ids, entries and snapshot metadata travel in our own encoding
//! (`codec`), inside protobuf `bytes` fields.
//!
//! Security is the node's business, plugged in here: [`PeerTls`] gives the
//! TLS configuration (CA and this node's certificate) for each new peer
//! client, and a [`PeerGuard`] on the service refuses callers that did not
//! authenticate as peers. With a [`ClusterIdentity`], every call carries the
//! cluster id and the service refuses calls from another cluster.

use crate::codec::{self, DecodeError};
use crate::{ClusterIdentity, Node, NodeId, TypeConfig, CLUSTER_HEADER};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    SnapshotMismatch, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, SnapshotSegmentId};
use tonic::transport::{Channel, Endpoint};

/// Generated protobuf and gRPC code.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("quorumlite.raft.v1");
}

use pb::raft_transport_client::RaftTransportClient;
use pb::raft_transport_server::{RaftTransport, RaftTransportServer};

/// Largest message either side accepts: a frame batch (capped by
/// `max_batch_bytes`, 64 MiB by default) plus framing, with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The TLS configuration for connections to peers. Asked for each new
/// peer client, so certificates reloaded on disk reach new clients.
pub trait PeerTls: Send + Sync + 'static {
    fn client_config(&self) -> tonic::transport::ClientTlsConfig;
}

/// Decides whether a transport call comes from a peer (e.g. it presented a
/// certificate the cluster's CA signed); `Err` is returned to the caller.
pub type PeerGuard =
    std::sync::Arc<dyn Fn(&tonic::Extensions) -> Result<(), tonic::Status> + Send + Sync>;

/// Creates one [`Peer`] per target node; plain text unless given TLS.
#[derive(Clone, Default)]
pub struct Network {
    tls: Option<std::sync::Arc<dyn PeerTls>>,
    /// Sent with every call; `None`: no cluster id is sent.
    identity: Option<ClusterIdentity>,
}

impl Network {
    /// Connect to peers over TLS.
    pub fn with_tls(tls: std::sync::Arc<dyn PeerTls>) -> Network {
        Network {
            tls: Some(tls),
            identity: None,
        }
    }

    /// Send this node's cluster id with every call.
    pub fn with_identity(self, identity: ClusterIdentity) -> Network {
        Network {
            identity: Some(identity),
            ..self
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{}", node.addr))
            .map_err(|e| format!("bad address {:?} for node {target}: {e}", node.addr));
        let endpoint = match (&self.tls, endpoint) {
            (Some(tls), Ok(e)) => e
                .tls_config(tls.client_config())
                .map_err(|e| format!("TLS configuration for node {target}: {e}")),
            (_, e) => e,
        };
        let client = endpoint.map(|e| {
            RaftTransportClient::new(e.connect_lazy())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        Peer {
            target,
            client,
            identity: self.identity.clone(),
        }
    }
}

/// The client for one peer.
pub struct Peer {
    target: NodeId,
    /// `Err` when the peer's address is not a valid endpoint.
    client: Result<RaftTransportClient<Channel>, String>,
    identity: Option<ClusterIdentity>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

fn unreachable<E>(msg: impl std::fmt::Display) -> RPCError<NodeId, Node, E>
where
    E: std::error::Error,
{
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg.to_string())))
}

fn network<E>(msg: impl std::fmt::Display) -> RPCError<NodeId, Node, E>
where
    E: std::error::Error,
{
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg.to_string())))
}

/// A failed call: unreachable when the peer cannot be reached at all, or
/// belongs to another cluster (so openraft backs off from it).
fn status<E: std::error::Error>(target: NodeId, s: tonic::Status) -> RPCError<NodeId, Node, E> {
    let msg = format!("node {target}: {}", s.message());
    match s.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::FailedPrecondition => unreachable(msg),
        _ => network(msg),
    }
}

impl Peer {
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftTransportClient<Channel>, RPCError<NodeId, Node, E>> {
        self.client.clone().map_err(unreachable)
    }

    /// A call with openraft's deadline and this node's cluster id.
    fn request<T>(&self, msg: T, option: &RPCOption) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(option.hard_ttl());
        let id = self.identity.as_ref().and_then(ClusterIdentity::get);
        if let Some(value) = id.and_then(|id| id.parse().ok()) {
            req.metadata_mut().insert(CLUSTER_HEADER, value);
        }
        req
    }
}

/// The most entry bytes one AppendEntries call carries (when it holds more
/// than one entry). openraft 0.9 times the whole call out after one
/// heartbeat interval, so a call must be sent, written and flushed by the
/// follower well within it; entries themselves are at most
/// [`crate::MAX_ENTRY_BYTES`].
pub const MAX_APPEND_BYTES: usize = 4 * crate::MAX_ENTRY_BYTES;

/// `None` if `entries` fit in `budget` bytes together, or there is only one;
/// otherwise how many leading entries do (at least one).
fn entries_that_fit(entries: &[Vec<u8>], budget: usize) -> Option<usize> {
    let total: usize = entries.iter().map(Vec::len).sum();
    if entries.len() <= 1 || total <= budget {
        return None;
    }
    let mut used = 0;
    let fit = entries
        .iter()
        .take_while(|e| {
            used += e.len();
            used <= budget
        })
        .count();
    Some(fit.max(1))
}

impl RaftNetwork<TypeConfig> for Peer {
    /// After an unreachable peer, openraft waits this long before the next
    /// try: 50 ms, doubling to 400, then 500 ms each (openraft's own is a
    /// flat 500 ms). A node started a moment after the leader was elected
    /// (the others at a cluster's first start) hears from it within
    /// 50-150 ms of listening, before its election timer fires; with 500 ms
    /// it called an election and unseated a leader 0.5 s old.
    fn backoff(&self) -> Backoff {
        let ramp = [50, 100, 200, 400]
            .into_iter()
            .chain(std::iter::repeat(500));
        Backoff::new(ramp.map(std::time::Duration::from_millis))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let entries: Vec<Vec<u8>> = rpc.entries.iter().map(codec::encode_entry).collect();
        if let Some(fit) = entries_that_fit(&entries, MAX_APPEND_BYTES) {
            // openraft sends the first `fit` entries at once, then the rest.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit as u64),
            ));
        }
        let msg = pb::AppendEntriesRequest {
            vote: codec::encode_vote(&rpc.vote),
            prev_log_id: codec::encode_log_id(&rpc.prev_log_id),
            entries,
            leader_commit: codec::encode_log_id(&rpc.leader_commit),
        };
        let resp = self
            .client()?
            .append_entries(self.request(msg, &option))
            .await
            .map_err(|s| status(self.target, s))?
            .into_inner();
        use pb::append_entries_response::Result as R;
        match resp.result {
            Some(R::Success(_)) => Ok(AppendEntriesResponse::Success),
            Some(R::Conflict(_)) => Ok(AppendEntriesResponse::Conflict),
            Some(R::PartialSuccess(id)) => codec::decode_log_id(&id)
                .map(AppendEntriesResponse::PartialSuccess)
                .map_err(network),
            Some(R::HigherVote(v)) => codec::decode_vote(&v)
                .map(AppendEntriesResponse::HigherVote)
                .map_err(network),
            None => Err(network("empty append-entries response")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let msg = pb::InstallSnapshotRequest {
            vote: codec::encode_vote(&rpc.vote),
            meta: codec::encode_snapshot_meta(&rpc.meta),
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let resp = self
            .client()?
            .install_snapshot(self.request(msg, &option))
            .await
            .map_err(|s| status(self.target, s))?
            .into_inner();
        if let (Some(expect), Some(got)) = (resp.mismatch_expect, resp.mismatch_got) {
            let mismatch = SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: expect.id,
                    offset: expect.offset,
                },
                got: SnapshotSegmentId {
                    id: got.id,
                    offset: got.offset,
                },
            };
            return Err(RPCError::RemoteError(RemoteError::new(
                self.target,
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
            )));
        }
        Ok(InstallSnapshotResponse {
            vote: codec::decode_vote(&resp.vote).map_err(network)?,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let msg = pb::VoteRequest {
            vote: codec::encode_vote(&rpc.vote),
            last_log_id: codec::encode_log_id(&rpc.last_log_id),
        };
        let resp = self
            .client()?
            .vote(self.request(msg, &option))
            .await
            .map_err(|s| status(self.target, s))?
            .into_inner();
        Ok(VoteResponse {
            vote: codec::decode_vote(&resp.vote).map_err(network)?,
            vote_granted: resp.vote_granted,
            last_log_id: codec::decode_log_id(&resp.last_log_id).map_err(network)?,
        })
    }
}

/// When this node last accepted entries or a heartbeat from a leader.
///
/// A follower uses it to bound how stale its local reads may be; openraft
/// 0.9 reports no such figure for followers. Cheap to clone and to update.
#[derive(Clone, Debug)]
pub struct LeaderContact {
    epoch: std::time::Instant,
    /// Milliseconds since `epoch` of the last accepted AppendEntries, plus
    /// one (0: never).
    last_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            epoch: std::time::Instant::now(),
            last_ms: Default::default(),
        }
    }
}

impl LeaderContact {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time since a leader was last heard from; `None` if never.
    pub fn age(&self) -> Option<std::time::Duration> {
        match self.last_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(std::time::Duration::from_millis(ms - 1)),
            ),
        }
    }
}

/// The server side: decodes requests and hands them to the local Raft.
pub struct TransportService {
    raft: Raft<TypeConfig>,
    contact: LeaderContact,
    /// Checked before every call; `None` admits everyone (plain text).
    guard: Option<PeerGuard>,
    /// Calls from another cluster are refused; `None`: not checked.
    identity: Option<ClusterIdentity>,
}

impl TransportService {
    /// The tonic service to mount on the node's gRPC server.
    pub fn server(raft: Raft<TypeConfig>) -> RaftTransportServer<TransportService> {
        Self::with_contact(raft, LeaderContact::default())
    }

    /// As [`TransportService::server`], recording leader contact in `contact`.
    pub fn with_contact(
        raft: Raft<TypeConfig>,
        contact: LeaderContact,
    ) -> RaftTransportServer<TransportService> {
        Self::guarded(raft, contact, None, None)
    }

    /// As [`TransportService::with_contact`], admitting only the calls
    /// `guard` accepts that come from `identity`'s cluster.
    pub fn guarded(
        raft: Raft<TypeConfig>,
        contact: LeaderContact,
        guard: Option<PeerGuard>,
        identity: Option<ClusterIdentity>,
    ) -> RaftTransportServer<TransportService> {
        RaftTransportServer::new(TransportService {
            raft,
            contact,
            guard,
            identity,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn bad_request(e: DecodeError) -> tonic::Status {
    tonic::Status::invalid_argument(e.to_string())
}

/// The local Raft refused or failed: the sender should retry later.
fn raft_failed(e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::unavailable(format!("raft: {e}"))
}

impl TransportService {
    fn admit<T>(&self, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
        if let Some(guard) = &self.guard {
            guard(request.extensions())?;
        }
        match &self.identity {
            Some(identity) => identity.admit(
                request
                    .metadata()
                    .get(CLUSTER_HEADER)
                    .and_then(|v| v.to_str().ok()),
            ),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: tonic::Request<pb::AppendEntriesRequest>,
    ) -> Result<tonic::Response<pb::AppendEntriesResponse>, tonic::Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let entries = req
            .entries
            .iter()
            .map(|e| codec::decode_entry(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad_request)?;
        let rpc = AppendEntriesRequest {
            vote: codec::decode_vote(&req.vote).map_err(bad_request)?,
            prev_log_id: codec::decode_log_id(&req.prev_log_id).map_err(bad_request)?,
            entries,
            leader_commit: codec::decode_log_id(&req.leader_commit).map_err(bad_request)?,
        };
        use pb::append_entries_response::Result as R;
        let result = match self.raft.append_entries(rpc).await.map_err(raft_failed)? {
            AppendEntriesResponse::Success => {
                self.contact.touch();
                R::Success(true)
            }
            AppendEntriesResponse::Conflict => R::Conflict(true),
            AppendEntriesResponse::PartialSuccess(id) => {
                self.contact.touch();
                R::PartialSuccess(codec::encode_log_id(&id))
            }
            AppendEntriesResponse::HigherVote(v) => R::HigherVote(codec::encode_vote(&v)),
        };
        Ok(tonic::Response::new(pb::AppendEntriesResponse {
            result: Some(result),
        }))
    }

    async fn vote(
        &self,
        request: tonic::Request<pb::VoteRequest>,
    ) -> Result<tonic::Response<pb::VoteResponse>, tonic::Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let rpc = VoteRequest {
            vote: codec::decode_vote(&req.vote).map_err(bad_request)?,
            last_log_id: codec::decode_log_id(&req.last_log_id).map_err(bad_request)?,
        };
        let resp = self.raft.vote(rpc).await.map_err(raft_failed)?;
        Ok(tonic::Response::new(pb::VoteResponse {
            vote: codec::encode_vote(&resp.vote),
            vote_granted: resp.vote_granted,
            last_log_id: codec::encode_log_id(&resp.last_log_id),
        }))
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<pb::InstallSnapshotRequest>,
    ) -> Result<tonic::Response<pb::InstallSnapshotResponse>, tonic::Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let rpc = InstallSnapshotRequest {
            vote: codec::decode_vote(&req.vote).map_err(bad_request)?,
            meta: codec::decode_snapshot_meta(&req.meta).map_err(bad_request)?,
            offset: req.offset,
            data: req.data,
            done: req.done,
        };
        let segment = |s: SnapshotSegmentId| pb::SnapshotSegment {
            id: s.id,
            offset: s.offset,
        };
        match self.raft.install_snapshot(rpc).await {
            Ok(resp) => Ok(tonic::Response::new(pb::InstallSnapshotResponse {
                vote: codec::encode_vote(&resp.vote),
                mismatch_expect: None,
                mismatch_got: None,
            })),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
                Ok(tonic::Response::new(pb::InstallSnapshotResponse {
                    vote: Vec::new(),
                    mismatch_expect: Some(segment(m.expect)),
                    mismatch_got: Some(segment(m.got)),
                }))
            }
            Err(e) => Err(raft_failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::entries_that_fit;

    #[test]
    fn an_append_over_the_byte_budget_is_cut_after_the_entries_that_fit() {
        let e = |n: usize| vec![0u8; n];
        // Within the budget, or a single entry: sent as is.
        assert_eq!(entries_that_fit(&[e(4), e(6)], 10), None);
        assert_eq!(entries_that_fit(&[e(50)], 10), None);
        // Over it: the leading entries that fit, and never zero.
        assert_eq!(entries_that_fit(&[e(4), e(6), e(1)], 10), Some(2));
        assert_eq!(entries_that_fit(&[e(30), e(1)], 10), Some(1));
    }
}
