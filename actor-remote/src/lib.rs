//! Footlight's remoting layer.
//!
//! This first part is the wire protocol as a sans-IO state machine
//! ([`proto`]): frames and their byte encoding, the versioned handshake, ask
//! correlation and deadlines, heartbeats and close reasons. It owns no socket,
//! no task and no clock: a driver feeds it bytes and the current time and
//! carries out what it asks for. The same state machine will run over QUIC and
//! over the in-memory test transport. `PROTOCOL.md` documents the bytes.

pub mod codec;
#[cfg(feature = "runtime")]
mod node;
pub mod proto;
#[cfg(feature = "runtime")]
pub mod transport;

#[cfg(feature = "runtime")]
pub use node::{Node, NodeBuilder, NodeError, RemoteActor, RemoteMessages};
