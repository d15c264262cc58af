//! The messages, client and server generated from `proto/cluster.proto`
//! (the private cluster API): a leaf, imported by the service that serves
//! it (`cluster.rs`), the client that calls it (`forward.rs`) and the
//! transports that pass calls on.

tonic::include_proto!("quorumlite.cluster.v1");
