//! Transports: how two nodes get an ordered, reliable byte stream each way.
//!
//! The protocol ([`crate::proto`]) runs the same over every transport. Two
//! implementations: [`mem`] (in one process, with fault injection, for tests)
//! and `quic` (QUIC with mutual TLS, feature `quic`; certificates from
//! `tls`). A transport authenticates the peer when it can (QUIC with mutual
//! TLS reports the node id from the peer's certificate); the handshake then
//! refuses a `Hello` that claims another id.

pub mod mem;
#[cfg(feature = "quic")]
pub mod quic;
#[cfg(feature = "quic")]
pub mod tls;

use std::io;

use async_trait::async_trait;

/// A way to reach other nodes and be reached.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Starts accepting connections on `addr` and returns the listener.
    async fn listen(&self, addr: &str) -> Result<Box<dyn Listener>, TransportError>;

    /// Opens a connection to the node listening on `addr`.
    async fn connect(&self, addr: &str) -> Result<Connection, TransportError>;

    /// The addresses `addr` stands for: a name may stand for several nodes
    /// (a DNS name with several records). By default, `addr` itself.
    async fn resolve(&self, addr: &str) -> Vec<String> {
        vec![addr.to_owned()]
    }

    /// The node is shutting down and has closed its connections: release
    /// what the transport holds (sockets), so that its listen address is
    /// free once this returns. The default does nothing.
    async fn shutdown(&self) {}

    /// The node id this transport authenticates this node as (the name in
    /// its TLS certificate), if it authenticates nodes at all. A node whose
    /// id differs refuses to start: its peers would refuse every connection.
    fn local_identity(&self) -> Option<String> {
        None
    }
}

/// Accepts incoming connections.
#[async_trait]
pub trait Listener: Send + Sync {
    /// The next incoming connection.
    async fn accept(&mut self) -> Result<Connection, TransportError>;

    /// The address peers dial to reach this listener.
    fn local_addr(&self) -> String;
}

/// One connection: a byte stream each way.
pub struct Connection {
    /// Bytes to the peer.
    pub send: Box<dyn ByteSink>,
    /// Bytes from the peer.
    pub recv: Box<dyn ByteSource>,
    /// The peer's node id as the transport authenticated it, if it can.
    pub peer_identity: Option<String>,
    /// The peer's address, for logs.
    pub remote_addr: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("remote_addr", &self.remote_addr).finish()
    }
}

/// The sending half of a connection.
#[async_trait]
pub trait ByteSink: Send {
    /// Writes a prefix of `bytes`, waiting until at least one byte can be
    /// written (flow control), and returns how many were written.
    ///
    /// Must be cancel safe: if the future is dropped before it completes,
    /// nothing was written. The driver polls it in a `select!` beside reads
    /// and timers, so a peer that stops reading never stalls them.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;

    /// Writes all of `bytes`. Not cancel safe: a prefix may have been written
    /// when the future is dropped.
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.write(bytes).await?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Closes the stream after everything written so far.
    async fn close(&mut self);
}

/// The receiving half of a connection.
#[async_trait]
pub trait ByteSource: Send {
    /// Reads the next bytes into `buf` and returns how many, or `None` once
    /// the peer closed the stream. Waits until at least one byte is there
    /// (for a non-empty `buf`).
    ///
    /// Must be cancel safe: the driver polls it in a `select!`, and a read
    /// dropped before it completed must not lose bytes.
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
}

/// A transport failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Nothing listens at that address.
    #[error("no node listens at {0}")]
    Unreachable(String),
    /// The address is taken or malformed.
    #[error("cannot listen at {0}")]
    Listen(String),
    /// The listener was shut down.
    #[error("the listener is closed")]
    Closed,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}
