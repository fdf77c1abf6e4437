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
//!   actors to peers, and hands out remote refs. Services attach to a node
//!   through [`NodeService`]: membership, cluster-wide names and groups live
//!   in the `actor-cluster` crate.

pub mod codec;
#[cfg(feature = "runtime")]
mod node;
pub mod proto;
pub mod trace;
#[cfg(feature = "runtime")]
pub mod transport;

/// The boxed future [`NodeService::leave`] returns.
#[cfg(feature = "runtime")]
pub use actor_core::remote::BoxFuture;
#[cfg(feature = "runtime")]
pub use node::{
    Located, Node, NodeBuilder, NodeContext, NodeError, NodeService, PeerRun, PeerStats, RemoteActor, RemoteMessages,
};
