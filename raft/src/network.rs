//! The gRPC transport between nodes (tonic/prost, `proto/raft.proto`).
//!
//! [`Network`] is openraft's client side: one lazily connected channel per
//! peer; a peer that cannot be reached is reported as `Unreachable`, so
//! openraft backs off instead of hammering it. [`TransportService`] is the
//! server side: it decodes each request and hands it to the local `Raft`.
//!
//! AppendEntries, the call of every write and heartbeat, travels on one
//! long-lived streaming call per leader and follower (`AppendStream`): a
//! request, then its response, then the next request. A unary call costs
//! an HTTP/2 stream with request headers, response headers and trailers,
//! and a task on the server; a message on an open stream is one DATA frame
//! each way. openraft sends a peer's AppendEntries one at a time (the
//! network client is `&mut`), so the stream needs no request ids. A stream
//! that fails, or whose call was dropped midway (openraft's timeout), is
//! discarded and the next request opens a new one; a peer that does not
//! know `AppendStream` (an older version) gets unary calls.
//! Votes, log ids, entries and snapshot metadata travel in our own encoding
//! (`codec`), inside protobuf `bytes` fields.
//!
//! Security is plugged in here: [`PeerTls`] gives the TLS configuration
//! (CA and this node's certificate) for each new peer client, and a
//! [`PeerAuth`] stamps every call with this node's credentials and cluster
//! id, admits only peers of this cluster on the service, and checks each
//! answer came from the node and cluster the call was meant for.

use crate::codec::{self, DecodeError};
use crate::{Node, NodeId, PeerAuth, PeerHealth, TypeConfig};
use client::dial::Dial;
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
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

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

/// Creates one [`Peer`] per target node; plain text unless given TLS.
#[derive(Clone)]
pub struct Network {
    tls: Option<std::sync::Arc<dyn PeerTls>>,
    /// Stamps every call and checks every answer.
    auth: PeerAuth,
    /// Every call's outcome, per peer.
    health: PeerHealth,
}

impl Network {
    /// Calls authenticated by `auth`, over TLS if `tls` is given.
    pub fn new(auth: PeerAuth, tls: Option<std::sync::Arc<dyn PeerTls>>) -> Network {
        Network {
            tls,
            auth,
            health: PeerHealth::default(),
        }
    }

    /// What the calls to each peer have seen (shared with this network).
    pub fn health(&self) -> PeerHealth {
        self.health.clone()
    }
}

/// A client of the transport at `addr`, over TLS if `tls` is given.
fn transport_client(
    addr: &str,
    tls: Option<&std::sync::Arc<dyn PeerTls>>,
) -> Result<RaftTransportClient<Channel>, String> {
    // No connect timeout or keepalive: Raft's own heartbeats and call
    // deadlines find a silent peer.
    let channel = client::dial::channel(addr, tls.map(|t| t.client_config()), Dial::default())
        .map_err(|e| e.to_string())?;
    Ok(RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Ask the node at `addr` for its cluster's id and membership, as node
/// `me` reached at `my_addr` (a founder that does not draw the id, or a
/// node that joins). The answer is checked to come from a node that has
/// an id.
pub async fn identify(
    auth: &PeerAuth,
    tls: Option<&std::sync::Arc<dyn PeerTls>>,
    addr: &str,
    my_addr: &str,
    timeout: std::time::Duration,
) -> Result<pb::IdentifyResponse, tonic::Status> {
    let mut client = transport_client(addr, tls).map_err(tonic::Status::invalid_argument)?;
    let mut req = tonic::Request::new(pb::IdentifyRequest {
        node_id: auth.identity().node(),
        addr: my_addr.to_owned(),
    });
    req.set_timeout(timeout);
    auth.stamp(&mut req, None);
    let resp = client.identify(req).await?.into_inner();
    if !crate::identity::valid_cluster_id(&resp.cluster) {
        return Err(tonic::Status::unavailable(format!(
            "the node at {addr} answered no valid cluster id"
        )));
    }
    Ok(resp)
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            target,
            client: transport_client(&node.addr, self.tls.as_ref())
                .map_err(|e| format!("node {target}: {e}")),
            auth: self.auth.clone(),
            health: self.health.clone(),
            stream: None,
            unary_only: false,
        }
    }
}

/// The client for one peer.
pub struct Peer {
    target: NodeId,
    /// `Err` when the peer's address is not a valid endpoint.
    client: Result<RaftTransportClient<Channel>, String>,
    auth: PeerAuth,
    health: PeerHealth,
    /// The open `AppendStream` call, if any. Taken out while a request is
    /// on it, so a call dropped midway drops the stream with it: a late
    /// response can never be taken for the next request's.
    stream: Option<AppendStream>,
    /// The peer answered `AppendStream` with `Unimplemented` (an older
    /// version): AppendEntries go as unary calls.
    unary_only: bool,
}

/// An open `AppendStream` call: requests go out through `tx`; their
/// responses come back on `rx`, one each, in order.
struct AppendStream {
    tx: mpsc::Sender<pb::AppendEntriesRequest>,
    rx: tonic::Streaming<pb::AppendEntriesResponse>,
    /// The cluster id sent when the call was opened (the peer checks it
    /// then, once): a call opened before this node learned its id is
    /// replaced by one that carries it.
    cluster: Option<Arc<str>>,
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
/// refuses this node (another cluster, not a peer), so openraft backs off
/// from it instead of retrying at once.
fn status<E: std::error::Error>(target: NodeId, s: tonic::Status) -> RPCError<NodeId, Node, E> {
    let msg = format!("node {target}: {}", s.message());
    match s.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::FailedPrecondition
        | tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied
        | tonic::Code::ResourceExhausted => unreachable(msg),
        _ => network(msg),
    }
}

impl Peer {
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftTransportClient<Channel>, RPCError<NodeId, Node, E>> {
        self.client.clone().map_err(unreachable)
    }

    /// A call with openraft's deadline and this node's credentials.
    fn request<T>(&self, msg: T, option: &RPCOption) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(option.hard_ttl());
        self.auth.stamp(&mut req, Some(self.target));
        req
    }

    fn cluster(&self) -> Option<Arc<str>> {
        self.auth.identity().cluster()
    }

    /// The message of an answer that came from the node and cluster meant.
    fn checked<T>(&self, resp: tonic::Response<T>) -> Result<T, tonic::Status> {
        self.auth.check_reply(resp.metadata(), Some(self.target))?;
        Ok(resp.into_inner())
    }

    /// One AppendEntries on the open stream, or on a new one. A reused
    /// stream that fails (the peer restarted, or closed it while stopping)
    /// is replaced once within the call: AppendEntries may be sent again,
    /// as built anew by `again` (rarely needed: no copy of the entries is
    /// made for it on the way).
    async fn append_streamed(
        &mut self,
        msg: pb::AppendEntriesRequest,
        again: impl Fn() -> pb::AppendEntriesRequest,
    ) -> Result<pb::AppendEntriesResponse, tonic::Status> {
        let cluster = self.cluster();
        let open = self.stream.take().filter(|s| s.cluster == cluster);
        let reused = open.is_some();
        let mut stream = match open {
            Some(s) => s,
            None => self.open_stream(cluster.clone()).await?,
        };
        let resp = match stream.exchange(msg).await {
            Ok(resp) => resp,
            Err(_) if reused => {
                stream = self.open_stream(cluster).await?;
                stream.exchange(again()).await?
            }
            Err(e) => return Err(e),
        };
        self.stream = Some(stream);
        Ok(resp)
    }

    async fn open_stream(&self, cluster: Option<Arc<str>>) -> Result<AppendStream, tonic::Status> {
        let mut client = self.client.clone().map_err(tonic::Status::unavailable)?;
        // Room for one request: the next is sent only after a response.
        let (tx, requests) = mpsc::channel(1);
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(requests));
        self.auth.stamp(&mut req, Some(self.target));
        let rx = self.checked(client.append_stream(req).await?)?;
        Ok(AppendStream { tx, rx, cluster })
    }
}

impl Peer {
    async fn append_unary(
        &self,
        msg: pb::AppendEntriesRequest,
        option: &RPCOption,
    ) -> Result<pb::AppendEntriesResponse, RpcErr> {
        self.client()?
            .append_entries(self.request(msg, option))
            .await
            .and_then(|r| self.checked(r))
            .map_err(|s| status(self.target, s))
    }
}

impl AppendStream {
    async fn exchange(
        &mut self,
        msg: pb::AppendEntriesRequest,
    ) -> Result<pb::AppendEntriesResponse, tonic::Status> {
        if self.tx.send(msg).await.is_err() {
            return Err(tonic::Status::unavailable("the append stream was closed"));
        }
        match self.rx.message().await? {
            Some(resp) => Ok(resp),
            None => Err(tonic::Status::unavailable(
                "the peer ended the append stream",
            )),
        }
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
        let r = self.append_entries_call(rpc, option).await;
        self.record(&r);
        r
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let r = self.install_snapshot_call(rpc, option).await;
        self.record(&r);
        r
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let r = self.vote_call(rpc, option).await;
        self.record(&r);
        r
    }
}

/// An error as a peer's failure is logged: the message, without the
/// error types' names that openraft's wrappers put in front.
fn describe(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .replace("std::io::error::Error: ", "")
        .replace("Unreachable node: ", "")
        .replace("NetworkError: ", "")
}

impl Peer {
    /// Note a call's outcome in [`PeerHealth`]: an answer of any kind
    /// proves the peer up; a transport failure or a refusal does not.
    fn record<T, E: std::error::Error>(&self, r: &Result<T, RPCError<NodeId, Node, E>>) {
        match r {
            Ok(_) | Err(RPCError::RemoteError(_)) | Err(RPCError::PayloadTooLarge(_)) => {
                self.health.answered(self.target)
            }
            Err(e) => self.health.failed(self.target, &describe(e)),
        }
    }

    async fn append_entries_call(
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
        let with = |entries| pb::AppendEntriesRequest {
            vote: codec::encode_vote(&rpc.vote),
            prev_log_id: codec::encode_log_id(&rpc.prev_log_id),
            entries,
            leader_commit: codec::encode_log_id(&rpc.leader_commit),
        };
        // The request again, for a retry: encoded anew rather than copied
        // ahead of a need that seldom comes.
        let again = || with(rpc.entries.iter().map(codec::encode_entry).collect());
        let resp = if self.unary_only {
            self.append_unary(with(entries), &option).await?
        } else {
            // openraft times the call out itself; this bound only keeps a
            // dropped-in-flight stream from outliving the call.
            let streamed = tokio::time::timeout(
                option.hard_ttl(),
                self.append_streamed(with(entries), again),
            )
            .await;
            match streamed {
                Ok(Ok(resp)) => resp,
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                    tracing::info!(target = self.target, "the peer has no append stream (an older version): sending AppendEntries as unary calls");
                    self.unary_only = true;
                    self.append_unary(again(), &option).await?
                }
                Ok(Err(s)) => return Err(status(self.target, s)),
                Err(_) => {
                    return Err(unreachable(format!(
                        "node {}: no AppendEntries response within {:?}",
                        self.target,
                        option.hard_ttl()
                    )))
                }
            }
        };
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

    async fn install_snapshot_call(
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
            .and_then(|r| self.checked(r))
            .map_err(|s| status(self.target, s))?;
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

    async fn vote_call(
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
            .and_then(|r| self.checked(r))
            .map_err(|s| status(self.target, s))?;
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
    /// Becomes true when the node stops serving: open append streams end.
    closing: watch::Receiver<bool>,
    /// Admits only peers of this cluster; stamps the answers.
    auth: PeerAuth,
    /// Appends and snapshots are refused while the disk is below its
    /// reserve (`None`: not checked).
    disk: Option<Arc<crate::DiskSpace>>,
}

impl TransportService {
    /// The tonic service to mount on the node's gRPC server: calls admitted
    /// by `auth`, leader contact recorded in `contact`.
    ///
    /// Open append streams end when `closing` becomes true (a sender
    /// dropped while false never ends them). Set it before stopping the gRPC server: an
    /// orderly stop waits for every open call, and a leader keeps its
    /// stream to a follower open for as long as it leads.
    pub fn server(
        raft: Raft<TypeConfig>,
        contact: LeaderContact,
        auth: PeerAuth,
        disk: Option<Arc<crate::DiskSpace>>,
        closing: watch::Receiver<bool>,
    ) -> RaftTransportServer<TransportService> {
        RaftTransportServer::new(TransportService {
            raft,
            contact,
            closing,
            auth,
            disk,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// `message` as this node's answer, stamped with its ids.
    fn answer<T>(&self, message: T) -> tonic::Response<T> {
        let mut resp = tonic::Response::new(message);
        self.auth.stamp_reply(resp.metadata_mut());
        resp
    }
}

/// Resolves once `closing` is true; never if its sender is gone while false.
/// The node's `Calls` streams end on the same signal.
pub async fn closed(closing: &mut watch::Receiver<bool>) {
    if closing.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn bad_request(e: DecodeError) -> tonic::Status {
    tonic::Status::invalid_argument(e.to_string())
}

/// The local Raft refused or failed: the sender should retry later.
fn raft_failed(e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::unavailable(format!("raft: {e}"))
}

/// The response side of an `AppendStream` call.
type AppendResponses = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::AppendEntriesResponse, tonic::Status>> + Send>,
>;

/// An open append stream's state between two requests.
struct StreamState {
    requests: tonic::Streaming<pb::AppendEntriesRequest>,
    raft: Raft<TypeConfig>,
    contact: LeaderContact,
    disk: Option<Arc<crate::DiskSpace>>,
    closing: watch::Receiver<bool>,
}

/// Decode one AppendEntries, hand it to Raft, encode the answer. Entries
/// are refused while the disk is below its reserve: the leader then takes
/// this node for one that does not answer, and sends them again later.
async fn append(
    raft: &Raft<TypeConfig>,
    contact: &LeaderContact,
    disk: Option<&crate::DiskSpace>,
    req: pb::AppendEntriesRequest,
) -> Result<pb::AppendEntriesResponse, tonic::Status> {
    if !req.entries.is_empty() {
        // Room for the entries in the log, in the WAL when they are
        // applied, and in the database after the checkpoint, beside the
        // reserve.
        let bytes: usize = req.entries.iter().map(Vec::len).sum();
        if let Some(full) = disk.and_then(|d| d.check(3 * bytes as u64).err()) {
            return Err(tonic::Status::resource_exhausted(full.to_string()));
        }
    }
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
    let result = match raft.append_entries(rpc).await.map_err(raft_failed)? {
        AppendEntriesResponse::Success => {
            contact.touch();
            R::Success(true)
        }
        AppendEntriesResponse::Conflict => R::Conflict(true),
        AppendEntriesResponse::PartialSuccess(id) => {
            contact.touch();
            R::PartialSuccess(codec::encode_log_id(&id))
        }
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(codec::encode_vote(&v)),
    };
    Ok(pb::AppendEntriesResponse {
        result: Some(result),
    })
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: tonic::Request<pb::AppendEntriesRequest>,
    ) -> Result<tonic::Response<pb::AppendEntriesResponse>, tonic::Status> {
        self.auth.admit(&request, "append entries")?;
        let resp = append(
            &self.raft,
            &self.contact,
            self.disk.as_deref(),
            request.into_inner(),
        )
        .await?;
        Ok(self.answer(resp))
    }

    type AppendStreamStream = AppendResponses;

    /// Requests are served one at a time, in order, by the call's own
    /// task. The caller and its cluster were checked once, when it opened
    /// the call. An error ends the call (the caller opens a new one), and
    /// so does `closing`, between two requests.
    async fn append_stream(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<tonic::Response<Self::AppendStreamStream>, tonic::Status> {
        self.auth.admit(&request, "append stream")?;
        let open = Some(StreamState {
            requests: request.into_inner(),
            raft: self.raft.clone(),
            contact: self.contact.clone(),
            disk: self.disk.clone(),
            closing: self.closing.clone(),
        });
        let responses = futures::stream::unfold(open, |state| async move {
            let mut st = state?;
            let next = tokio::select! {
                biased;
                _ = closed(&mut st.closing) => return None,
                next = st.requests.message() => next,
            };
            match next {
                Ok(Some(req)) => match append(&st.raft, &st.contact, st.disk.as_deref(), req).await
                {
                    Ok(resp) => Some((Ok(resp), Some(st))),
                    Err(e) => Some((Err(e), None)),
                },
                // The caller closed its side, or the connection broke.
                Ok(None) | Err(_) => None,
            }
        });
        Ok(self.answer(Box::pin(responses)))
    }

    async fn vote(
        &self,
        request: tonic::Request<pb::VoteRequest>,
    ) -> Result<tonic::Response<pb::VoteResponse>, tonic::Status> {
        self.auth.admit(&request, "vote")?;
        let req = request.into_inner();
        let rpc = VoteRequest {
            vote: codec::decode_vote(&req.vote).map_err(bad_request)?,
            last_log_id: codec::decode_log_id(&req.last_log_id).map_err(bad_request)?,
        };
        let resp = self.raft.vote(rpc).await.map_err(raft_failed)?;
        Ok(self.answer(pb::VoteResponse {
            vote: codec::encode_vote(&resp.vote),
            vote_granted: resp.vote_granted,
            last_log_id: codec::encode_log_id(&resp.last_log_id),
        }))
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<pb::InstallSnapshotRequest>,
    ) -> Result<tonic::Response<pb::InstallSnapshotResponse>, tonic::Status> {
        self.auth.admit(&request, "install snapshot")?;
        if let Some(full) = self.disk.as_deref().and_then(|d| d.check(0).err()) {
            return Err(tonic::Status::resource_exhausted(full.to_string()));
        }
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
            Ok(resp) => Ok(self.answer(pb::InstallSnapshotResponse {
                vote: codec::encode_vote(&resp.vote),
                mismatch_expect: None,
                mismatch_got: None,
            })),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
                Ok(self.answer(pb::InstallSnapshotResponse {
                    vote: Vec::new(),
                    mismatch_expect: Some(segment(m.expect)),
                    mismatch_got: Some(segment(m.got)),
                }))
            }
            Err(e) => Err(raft_failed(e)),
        }
    }

    async fn identify(
        &self,
        request: tonic::Request<pb::IdentifyRequest>,
    ) -> Result<tonic::Response<pb::IdentifyResponse>, tonic::Status> {
        let Some(cluster) = self.auth.identity().cluster() else {
            return Err(tonic::Status::unavailable(
                "this node has no cluster id yet (it is waiting for its founder, or joining): ask another member",
            ));
        };
        let members: Vec<pb::Member> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            membership
                .nodes()
                .map(|(id, n)| pb::Member {
                    id: *id,
                    addr: n.addr.clone(),
                    voter: voters.contains(id),
                })
                .collect()
        };
        if members.is_empty() {
            return Err(tonic::Status::unavailable(
                "this node's cluster has no membership yet (its founder is initializing it): ask again",
            ));
        }
        let ask = request.get_ref();
        let voters: Vec<(NodeId, String)> = members
            .iter()
            .filter(|m| m.voter)
            .map(|m| (m.id, m.addr.clone()))
            .collect();
        let secret = self
            .auth
            .admit_identify(&request, ask.node_id, &ask.addr, &voters)?
            .inspect(|_| {
                tracing::info!(
                    node = ask.node_id,
                    addr = %ask.addr,
                    "handing the cluster secret to a founding member on loopback"
                )
            })
            .unwrap_or_default();
        Ok(self.answer(pb::IdentifyResponse {
            cluster: cluster.to_string(),
            node_id: self.auth.identity().node(),
            members,
            secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    /// What a fake peer was asked.
    #[derive(Clone, Default)]
    struct Seen {
        unary: Arc<AtomicUsize>,
        streams_opened: Arc<AtomicUsize>,
        streamed: Arc<AtomicUsize>,
    }

    /// A peer that answers every AppendEntries with success. `streams`:
    /// whether it knows `AppendStream` (an older version does not);
    /// `per_stream`: how many requests it serves on a stream before
    /// ending it.
    struct FakePeer {
        seen: Seen,
        streams: bool,
        per_stream: usize,
    }

    fn success() -> pb::AppendEntriesResponse {
        pb::AppendEntriesResponse {
            result: Some(pb::append_entries_response::Result::Success(true)),
        }
    }

    #[tonic::async_trait]
    impl RaftTransport for FakePeer {
        async fn append_entries(
            &self,
            _: tonic::Request<pb::AppendEntriesRequest>,
        ) -> Result<tonic::Response<pb::AppendEntriesResponse>, tonic::Status> {
            self.seen.unary.fetch_add(1, SeqCst);
            Ok(tonic::Response::new(success()))
        }

        type AppendStreamStream = AppendResponses;

        async fn append_stream(
            &self,
            request: tonic::Request<tonic::Streaming<pb::AppendEntriesRequest>>,
        ) -> Result<tonic::Response<Self::AppendStreamStream>, tonic::Status> {
            if !self.streams {
                return Err(tonic::Status::unimplemented("no AppendStream here"));
            }
            self.seen.streams_opened.fetch_add(1, SeqCst);
            let start = (request.into_inner(), 0, self.per_stream, self.seen.clone());
            let responses =
                futures::stream::unfold(start, |(mut requests, n, max, seen)| async move {
                    if n == max {
                        return None;
                    }
                    match requests.message().await {
                        Ok(Some(_)) => {
                            seen.streamed.fetch_add(1, SeqCst);
                            Some((Ok(success()), (requests, n + 1, max, seen)))
                        }
                        _ => None,
                    }
                });
            Ok(tonic::Response::new(Box::pin(responses)))
        }

        async fn vote(
            &self,
            _: tonic::Request<pb::VoteRequest>,
        ) -> Result<tonic::Response<pb::VoteResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn install_snapshot(
            &self,
            _: tonic::Request<pb::InstallSnapshotRequest>,
        ) -> Result<tonic::Response<pb::InstallSnapshotResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn identify(
            &self,
            _: tonic::Request<pb::IdentifyRequest>,
        ) -> Result<tonic::Response<pb::IdentifyResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    /// Serve `fake` on a loopback port; a client for it.
    async fn peer_for(fake: FakePeer) -> Peer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftTransportServer::new(fake))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = crate::ClusterIdentity::open(dir.path(), 1, None).expect("identity");
        identity.adopt("test").expect("adopt");
        let secret = crate::PeerSecret::new("a-test-secret-0123456789").expect("secret");
        let auth = PeerAuth::new(identity, false, Some(secret), false);
        Network::new(auth, None).new_client(2, &Node { addr }).await
    }

    async fn append(peer: &mut Peer) -> AppendEntriesResponse<NodeId> {
        let rpc = AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        peer.append_entries(rpc, RPCOption::new(Duration::from_secs(5)))
            .await
            .expect("append entries")
    }

    /// Make `appends` successful appends to a fake peer; what it saw.
    async fn appends_to(streams: bool, per_stream: usize, appends: usize) -> Seen {
        let seen = Seen::default();
        let fake = FakePeer {
            seen: seen.clone(),
            streams,
            per_stream,
        };
        let mut peer = peer_for(fake).await;
        for _ in 0..appends {
            assert_eq!(append(&mut peer).await, AppendEntriesResponse::Success);
        }
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_to_a_peer_share_one_stream() {
        let seen = appends_to(true, usize::MAX, 5).await;
        assert_eq!(seen.streams_opened.load(SeqCst), 1);
        assert_eq!(seen.streamed.load(SeqCst), 5);
        assert_eq!(seen.unary.load(SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_the_peer_ended_is_replaced_within_the_call() {
        // The peer ends each stream after one response.
        let seen = appends_to(true, 1, 3).await;
        assert_eq!(seen.streams_opened.load(SeqCst), 3);
        assert_eq!(seen.streamed.load(SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_without_streams_gets_unary_calls() {
        let seen = appends_to(false, 0, 3).await;
        assert_eq!(seen.unary.load(SeqCst), 3);
        assert_eq!(seen.streams_opened.load(SeqCst), 0);
    }

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
