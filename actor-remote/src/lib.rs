//! Footlight's remoting layer: the same `ActorRef` reaches an actor on another
//! node.
//!
//! - [`proto`]: the wire protocol as a sans-IO state machine: frames and
//!   their byte encoding, the versioned handshake, ask correlation and
//!   deadlines, heartbeats, close reasons. No socket, no task, no clock; it
//!   builds without tokio (`--no-default-features`). `PROTOCOL.md` documents
//!   the bytes.
//! - [`codec`]: how application messages are encoded (named MessagePack).
//! - [`transport`]: byte streams between nodes: QUIC with mutual TLS
//!   (`quic`, `tls`) and an in-memory network with fault injection (`mem`).
//! - [`Node`]: runs a session per connection over a transport, exposes local
//!   actors to peers, and hands out remote refs. Nodes form a cluster:
//!   SWIM membership (the `foca` crate) over the same connections, with
//!   [`ClusterEvent`]s, cluster-wide names and process groups.

pub mod codec;
#[cfg(feature = "runtime")]
mod node;
pub mod proto;
#[cfg(feature = "runtime")]
pub mod transport;

#[cfg(feature = "runtime")]
pub use node::{
    ClusterEvent, FailureDetection, GossipStats, MAX_ENTRIES_PER_NODE, MAX_NAME_LEN, Member, Node, NodeBuilder,
    NodeError, RemoteActor, RemoteMessages, Subscription,
};
