//! A node takes Raft calls only from its own cluster. A node of another
//! cluster whose peer list names one of ours by mistake (ids and terms are
//! small numbers every cluster reuses) is refused before its messages reach
//! openraft, and our cluster goes on.

mod common;

use common::{elect, listeners, peer_auth, start_in, SECRET};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::Vote;
use raft::Network;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_raft_calls_from_another_cluster_and_from_strangers_without_the_secret() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = common::config((300, 600), |c| c);
    let (mut listeners, members) = listeners(3).await;
    let ours = "our-cluster";
    let l3 = listeners.pop().expect("l3");
    let l2 = listeners.pop().expect("l2");
    let l1 = listeners.pop().expect("l1");
    let n1 = start_in(ours, 1, l1, root.path(), config.clone()).await;
    let n2 = start_in(ours, 2, l2, root.path(), config.clone()).await;
    let n3 = start_in(ours, 3, l3, root.path(), config.clone()).await;
    elect(&n1, members.clone()).await;
    let term = n1.raft.metrics().borrow().current_term;
    let target = n2.raft.metrics().borrow().id;

    // A vote from "node 3" of another cluster (a stray holding the same
    // secret), and from a stranger without the secret, in a far higher
    // term: if either reached openraft, node 2 would move to that term and
    // drop its leader.
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let option = RPCOption::new(Duration::from_secs(2));
    let vote = VoteRequest::new(Vote::new(term + 100, 3), None);
    for (auth, what, expect) in [
        (
            peer_auth(dirs[0].path(), 3, "another-cluster", SECRET),
            "another cluster",
            "cluster",
        ),
        (
            peer_auth(dirs[1].path(), 3, ours, "not-the-cluster-secret"),
            "a stranger",
            "secret",
        ),
    ] {
        let mut network = Network::new(auth, None);
        let mut peer = network.new_client(target, &members[&target]).await;
        let refused = peer
            .vote(vote.clone(), option.clone())
            .await
            .expect_err(what);
        let text = refused.to_string();
        assert!(text.contains(expect), "{what}: {text}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = n2.raft.metrics().borrow().clone();
    assert_eq!(m.current_term, term, "node 2 never saw the foreign vote");
    assert!(m.current_leader.is_some());

    // The cluster's own calls still flow: the leader confirms its
    // leadership with a quorum round over the transport.
    let nodes = [n1, n2, n3];
    let leader = m.current_leader.expect("leader");
    let leader = nodes
        .iter()
        .find(|n| n.raft.metrics().borrow().id == leader)
        .expect("leader node");
    tokio::time::timeout(Duration::from_secs(5), leader.raft.ensure_linearizable())
        .await
        .expect("in time")
        .expect("a quorum answers the leader");
    assert_eq!(leader.raft.metrics().borrow().current_term, term);
    for n in nodes {
        n.stop().await;
    }
}
