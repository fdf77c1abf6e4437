//! An in-memory network: nodes in one process, with partitions, isolation and
//! delays injected deterministically.
//!
//! Faults model a network under a reliable transport such as QUIC: bytes are
//! never lost or reordered on a live connection; a partition holds them back
//! (the peer hears nothing and, past its idle timeout, declares the node
//! lost), and healing releases them. A delay holds each chunk for a while.
//!
//! ```
//! # use actor_remote::transport::mem::MemoryNetwork;
//! let net = MemoryNetwork::new();
//! let a = net.transport();
//! let b = net.transport();
//! // nodes built on `a` and `b`, listening on "a" and "b" ...
//! net.partition("a", "b");
//! net.heal("a", "b");
//! # let _ = (a, b);
//! ```

use actor_core::entropy::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};

use super::{ByteSink, ByteSource, Connection, Listener, Transport, TransportError};

/// Chunks in flight per direction before a writer waits (backpressure).
const PIPE_CHUNKS: usize = 64;

/// How long a dial to a [silenced](MemoryNetwork::silence) address waits
/// before it fails as unreachable (longer than a node's own dial timeout).
pub const SILENT_DIAL: Duration = Duration::from_secs(30);
/// The most bytes one chunk carries: with [`PIPE_CHUNKS`], at most 1 MiB in
/// flight per direction, as a socket buffer would hold. (Unbounded chunks let
/// a flood of tells put tens of MiB ahead of a membership probe, which then
/// arrived too late and got a busy node suspected.)
const CHUNK_BYTES: usize = 16 * 1024;

/// A network of in-memory transports: every node of a test in one process,
/// with faults injected on purpose.
///
/// ```
/// # use std::time::Duration;
/// # use actor_remote::{Node, transport::mem::MemoryNetwork};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = MemoryNetwork::new();
/// let node = |id: &str| Node::builder(id).transport(net.transport()).listen(id).idle_timeout(Duration::from_secs(2));
/// let a = node("a").start().await?;
/// let b = node("b").start().await?;
/// b.dial("a").await?;
/// b.wait_for_peer("a").await?;
/// net.partition("a", "b"); // bytes are held back: past the idle timeout, each side declares the other lost
/// while !b.peers().is_empty() {
///     tokio::time::sleep(Duration::from_millis(100)).await; // virtual time: no real wait
/// }
/// net.heal("a", "b");
/// # a.shutdown().await; b.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Net>,
}

#[derive(Default)]
struct Net {
    state: Mutex<NetState>,
    changed: Notify,
}

#[derive(Default)]
struct NetState {
    listeners: HashMap<String, mpsc::Sender<Connection>>,
    /// Unordered pairs of addresses that cannot talk.
    cut: HashSet<(String, String)>,
    /// Ordered pairs (from, to): bytes from the first do not reach the second.
    one_way: HashSet<(String, String)>,
    isolated: HashSet<String>,
    delays: HashMap<String, Duration>,
    /// Addresses whose dials get no answer (see [`MemoryNetwork::silence`]).
    silent: HashSet<String>,
    /// Per unordered pair of addresses, how many times its connections
    /// were reset: a pipe made before the last reset is broken.
    resets: HashMap<(String, String), u64>,
    next_client: u64,
}

impl NetState {
    /// Whether bytes from `from` are held back before they reach `to`.
    fn blocked(&self, from: &str, to: &str) -> bool {
        self.isolated.contains(from)
            || self.isolated.contains(to)
            || self.cut.contains(&pair(from, to))
            || (!self.one_way.is_empty() && self.one_way.contains(&(from.to_owned(), to.to_owned())))
    }

    fn resets(&self, a: &str, b: &str) -> u64 {
        self.resets.get(&pair(a, b)).copied().unwrap_or(0)
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b { (a.to_owned(), b.to_owned()) } else { (b.to_owned(), a.to_owned()) }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport attached to this network.
    pub fn transport(&self) -> MemoryTransport {
        MemoryTransport { net: self.inner.clone(), local: Arc::new(Mutex::new(None)) }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.inner.lock()
    }

    /// Cuts the link between the nodes listening at `a` and `b`, both ways.
    pub fn partition(&self, a: &str, b: &str) {
        self.lock().cut.insert(pair(a, b));
        self.inner.changed.notify_waiters();
    }

    /// Restores the link between `a` and `b`; held bytes flow again.
    pub fn heal(&self, a: &str, b: &str) {
        self.lock().cut.remove(&pair(a, b));
        self.inner.changed.notify_waiters();
    }

    /// Cuts the link from `from` to `to` only: what `from` sends is held
    /// back, what `to` sends still arrives (an asymmetric partition, as a
    /// one-sided firewall rule or a broken route makes). A dial either way
    /// gets no answer, as a handshake needs both directions.
    pub fn partition_one_way(&self, from: &str, to: &str) {
        self.lock().one_way.insert((from.to_owned(), to.to_owned()));
        self.inner.changed.notify_waiters();
    }

    /// Undoes [`partition_one_way`](Self::partition_one_way).
    pub fn heal_one_way(&self, from: &str, to: &str) {
        self.lock().one_way.remove(&(from.to_owned(), to.to_owned()));
        self.inner.changed.notify_waiters();
    }

    /// Breaks every connection between `a` and `b` now, as a TCP reset or a
    /// QUIC connection lost to a middlebox would: bytes in flight either
    /// way are lost, and each end's next read or write fails. New
    /// connections between them work at once (the nodes reconnect as after
    /// any lost connection). For tests of what must survive a lost
    /// connection (resends, deduplication).
    pub fn reset(&self, a: &str, b: &str) {
        *self.lock().resets.entry(pair(a, b)).or_default() += 1;
        self.inner.changed.notify_waiters();
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&self, node: &str) {
        self.lock().isolated.insert(node.to_owned());
        self.inner.changed.notify_waiters();
    }

    /// Undoes [`isolate`](Self::isolate).
    pub fn rejoin(&self, node: &str) {
        self.lock().isolated.remove(node);
        self.inner.changed.notify_waiters();
    }

    /// Delays every chunk `node` receives by `delay` (zero clears it): each
    /// arrives `delay` after it was written, as on a link with that
    /// latency (chunks in flight overlap; throughput is not capped).
    pub fn delay(&self, node: &str, delay: Duration) {
        let mut st = self.lock();
        if delay.is_zero() {
            st.delays.remove(node);
        } else {
            st.delays.insert(node.to_owned(), delay);
        }
        drop(st);
        self.inner.changed.notify_waiters();
    }

    /// Makes dials to `addr` go unanswered until [`SILENT_DIAL`] has passed
    /// (then they fail as unreachable), as a QUIC dial to the address of a
    /// host that is gone does: nothing refuses it, the dialer waits for its
    /// own timeout. Nodes listening at `addr` are not affected otherwise.
    pub fn silence(&self, addr: &str) {
        self.lock().silent.insert(addr.to_owned());
    }

    /// Undoes every partition (both-way and one-way), isolation, delay and silence.
    pub fn heal_all(&self) {
        let mut st = self.lock();
        st.silent.clear();
        st.cut.clear();
        st.one_way.clear();
        st.isolated.clear();
        st.delays.clear();
        drop(st);
        self.inner.changed.notify_waiters();
    }
}

impl Net {
    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryNetwork")
    }
}

/// One node's access to a [`MemoryNetwork`]. Its address is the one it
/// listens on; a node that only dials gets a generated one.
#[derive(Clone)]
pub struct MemoryTransport {
    net: Arc<Net>,
    local: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryTransport")
    }
}

impl MemoryTransport {
    fn local_addr(&self) -> String {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local
            .get_or_insert_with(|| {
                let mut st = self.net.lock();
                st.next_client += 1;
                format!("client-{}", st.next_client)
            })
            .clone()
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn listen(&self, addr: &str) -> Result<Box<dyn Listener>, TransportError> {
        let (tx, rx) = mpsc::channel(64);
        {
            let mut st = self.net.lock();
            if addr.is_empty() || st.listeners.contains_key(addr) {
                return Err(TransportError::Listen(addr.to_owned()));
            }
            st.listeners.insert(addr.to_owned(), tx);
        }
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
        Ok(Box::new(MemoryListener { net: self.net.clone(), addr: addr.to_owned(), incoming: rx }))
    }

    async fn connect(&self, addr: &str) -> Result<Connection, TransportError> {
        let local = self.local_addr();
        if self.net.lock().silent.contains(addr) {
            tokio::time::sleep(SILENT_DIAL).await;
            return Err(TransportError::Unreachable(addr.to_owned()));
        }
        let listener = {
            let st = self.net.lock();
            // A partitioned dial gets no answer, as on a real network; the
            // caller's retry finds the node again once healed.
            if st.blocked(&local, addr) || st.blocked(addr, &local) {
                return Err(TransportError::Unreachable(addr.to_owned()));
            }
            st.listeners.get(addr).cloned().ok_or_else(|| TransportError::Unreachable(addr.to_owned()))?
        };
        let (to_peer_tx, to_peer_rx) = mpsc::channel(PIPE_CHUNKS);
        let (to_me_tx, to_me_rx) = mpsc::channel(PIPE_CHUNKS);
        let link = Link::new(&self.net, &local, addr);
        let theirs = Connection {
            send: Box::new(MemSink { tx: to_me_tx, link: link.clone() }),
            recv: Box::new(MemSource::new(to_peer_rx, &self.net, &local, addr, link.clone())),
            peer_identity: None,
            remote_addr: local.clone(),
        };
        listener.send(theirs).await.map_err(|_| TransportError::Unreachable(addr.to_owned()))?;
        Ok(Connection {
            send: Box::new(MemSink { tx: to_peer_tx, link: link.clone() }),
            recv: Box::new(MemSource::new(to_me_rx, &self.net, addr, &local, link)),
            peer_identity: None,
            remote_addr: addr.to_owned(),
        })
    }
}

struct MemoryListener {
    net: Arc<Net>,
    addr: String,
    incoming: mpsc::Receiver<Connection>,
}

#[async_trait]
impl Listener for MemoryListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.incoming.recv().await.ok_or(TransportError::Closed)
    }

    fn local_addr(&self) -> String {
        self.addr.clone()
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.net.lock().listeners.remove(&self.addr);
    }
}

/// Which connection a pipe belongs to, to tell whether it was reset.
#[derive(Clone)]
struct Link {
    net: Arc<Net>,
    a: String,
    b: String,
    /// The pair's reset count when the connection was made.
    made_at: u64,
}

impl Link {
    fn new(net: &Arc<Net>, a: &str, b: &str) -> Self {
        let made_at = net.lock().resets(a, b);
        Link { net: net.clone(), a: a.to_owned(), b: b.to_owned(), made_at }
    }

    fn is_reset(&self) -> bool {
        self.net.lock().resets(&self.a, &self.b) != self.made_at
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset (MemoryNetwork::reset)")
}

/// A chunk and when it was written (a delay counts from then).
type Chunk = (tokio::time::Instant, Vec<u8>);

struct MemSink {
    tx: mpsc::Sender<Chunk>,
    link: Link,
}

#[async_trait]
impl ByteSink for MemSink {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.link.is_reset() {
            return Err(reset_error());
        }
        // Cancel safe: nothing is queued until room is reserved.
        let permit = self.tx.reserve().await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "peer closed"))?;
        if self.link.is_reset() {
            return Err(reset_error());
        }
        let n = bytes.len().min(CHUNK_BYTES);
        permit.send((tokio::time::Instant::now(), bytes[..n].to_vec()));
        Ok(n)
    }

    async fn close(&mut self) {
        // Dropping the sender ends the peer's stream after queued chunks.
        let (tx, _) = mpsc::channel(1);
        self.tx = tx;
    }
}

struct MemSource {
    rx: mpsc::Receiver<Chunk>,
    /// A chunk taken from the pipe but not yet returned (held by a partition
    /// or a delay); kept here so a cancelled `read` loses nothing.
    held: Option<Chunk>,
    /// The part of a released chunk that did not fit the last read.
    released: Option<Vec<u8>>,
    net: Arc<Net>,
    from: String,
    to: String,
    link: Link,
}

impl MemSource {
    /// The end of the pipe carrying bytes from `from` to `to`.
    fn new(rx: mpsc::Receiver<Chunk>, net: &Arc<Net>, from: &str, to: &str, link: Link) -> Self {
        Self { rx, held: None, released: None, net: net.clone(), from: from.to_owned(), to: to.to_owned(), link }
    }

    /// After a reset, what was in flight is lost.
    fn broken(&mut self) -> io::Error {
        self.held = None;
        self.released = None;
        self.rx.close();
        reset_error()
    }
}

/// Copies what fits of a released chunk into `buf`; keeps the rest in `rest`
/// for the next read (it already passed the fault rules).
fn copy_out(rest: &mut Option<Vec<u8>>, mut chunk: Vec<u8>, buf: &mut [u8]) -> usize {
    let n = chunk.len().min(buf.len());
    buf[..n].copy_from_slice(&chunk[..n]);
    if n < chunk.len() {
        chunk.drain(..n);
        *rest = Some(chunk);
    }
    n
}

#[async_trait]
impl ByteSource for MemSource {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.link.is_reset() {
            return Err(self.broken());
        }
        if let Some(rest) = self.released.take() {
            return Ok(Some(copy_out(&mut self.released, rest, buf)));
        }
        // Take a chunk, hold it while the link is cut, then apply the
        // receiver's delay; a reset ends it all. One look at the network's
        // state per turn, taken after subscribing to its changes.
        loop {
            let net = self.net.clone();
            let changed = net.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (reset, blocked, delay) = {
                let st = net.lock();
                (
                    st.resets(&self.from, &self.to) != self.link.made_at,
                    st.blocked(&self.from, &self.to),
                    st.delays.get(&self.to).copied(),
                )
            };
            if reset {
                return Err(self.broken());
            }
            if self.held.is_none() {
                tokio::select! {
                    chunk = self.rx.recv() => match chunk {
                        Some(chunk) => self.held = Some(chunk),
                        None => return Ok(None),
                    },
                    () = changed => {}
                }
                continue;
            }
            if !blocked {
                if let (Some(d), Some((written, _))) = (delay, &self.held) {
                    // Latency: a chunk arrives `d` after it was written, so
                    // chunks in flight overlap (and a cancelled read
                    // resumes the same wait).
                    tokio::time::sleep_until(*written + d).await;
                }
                let Some((_, chunk)) = self.held.take() else { continue };
                return Ok(Some(copy_out(&mut self.released, chunk, buf)));
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read into a buffer smaller than what was written takes a prefix and
    /// leaves the rest, in order, for the next reads.
    #[tokio::test]
    async fn short_reads_lose_nothing() {
        let net = MemoryNetwork::new();
        let server = net.transport();
        let mut listener = server.listen("s").await.unwrap_or_else(|e| panic!("{e}"));
        let client = net.transport();
        let mut conn = client.connect("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut accepted = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        conn.send.write_all(&[1, 2, 3, 4, 5]).await.unwrap_or_else(|e| panic!("{e}"));
        conn.send.write_all(&[6, 7]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        let mut buf = [0u8; 2];
        while got.len() < 7 {
            let n = accepted.recv.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or(0);
            assert!(n > 0 && n <= 2);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7]);
        conn.send.close().await;
        assert_eq!(accepted.recv.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")), None);
    }

    /// A pipe holds at most `PIPE_CHUNKS` chunks of at most `CHUNK_BYTES`:
    /// a writer waits once about 1 MiB is in flight, as on a socket, so
    /// what is written later (a membership probe) is not queued behind
    /// tens of MiB.
    #[tokio::test]
    async fn a_pipe_holds_a_bounded_number_of_bytes() {
        let net = MemoryNetwork::new();
        let mut listener = net.transport().listen("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut conn = net.transport().connect("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut accepted = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let big = vec![7u8; 3 * CHUNK_BYTES];
        assert_eq!(conn.send.write(&big).await.unwrap_or_else(|e| panic!("{e}")), CHUNK_BYTES);
        let mut in_flight = CHUNK_BYTES;
        loop {
            let write = conn.send.write(&big);
            match tokio::time::timeout(std::time::Duration::from_millis(50), write).await {
                Ok(written) => in_flight += written.unwrap_or_else(|e| panic!("{e}")),
                Err(_) => break,
            }
        }
        assert_eq!(in_flight, PIPE_CHUNKS * CHUNK_BYTES, "the writer waits at the bound");
        let mut buf = vec![0u8; CHUNK_BYTES];
        let n = accepted.recv.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or(0);
        assert_eq!(n, CHUNK_BYTES);
        assert_eq!(conn.send.write(&big).await.unwrap_or_else(|e| panic!("{e}")), CHUNK_BYTES, "room again");
    }

    /// A reset breaks the connection both ways, loses what was in flight,
    /// and leaves new connections working.
    #[tokio::test]
    async fn a_reset_breaks_both_ends_and_loses_what_was_in_flight() {
        let net = MemoryNetwork::new();
        let mut listener = net.transport().listen("s").await.unwrap_or_else(|e| panic!("{e}"));
        let client = net.transport();
        let mut conn = client.connect("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut accepted = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        conn.send.write_all(&[1, 2, 3]).await.unwrap_or_else(|e| panic!("{e}"));
        let client_addr = accepted.remote_addr.clone();
        net.reset("s", &client_addr);
        let mut buf = [0u8; 8];
        let read = accepted.recv.read(&mut buf).await;
        assert_eq!(read.err().map(|e| e.kind()), Some(io::ErrorKind::ConnectionReset), "in flight: lost");
        let write = accepted.send.write(&[4]).await;
        assert_eq!(write.err().map(|e| e.kind()), Some(io::ErrorKind::ConnectionReset));
        let read = conn.recv.read(&mut buf).await;
        assert_eq!(read.err().map(|e| e.kind()), Some(io::ErrorKind::ConnectionReset), "the other end too");
        // A new connection works.
        let mut again = client.connect("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut accepted = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        again.send.write_all(&[5]).await.unwrap_or_else(|e| panic!("{e}"));
        let n = accepted.recv.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or(0);
        assert_eq!(&buf[..n], &[5]);
    }

    /// A reader waiting for bytes learns of the reset at once.
    #[tokio::test]
    async fn a_reset_wakes_a_waiting_reader() {
        let net = MemoryNetwork::new();
        let mut listener = net.transport().listen("s").await.unwrap_or_else(|e| panic!("{e}"));
        let _conn = net.transport().connect("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut accepted = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let client_addr = accepted.remote_addr.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            accepted.recv.read(&mut buf).await.err().map(|e| e.kind())
        });
        tokio::task::yield_now().await;
        net.reset(&client_addr, "s");
        assert_eq!(reader.await.unwrap_or_else(|e| panic!("{e}")), Some(io::ErrorKind::ConnectionReset));
    }

    /// A one-way partition holds back what one end sends and lets the other
    /// end's bytes through; a dial either way gets no answer; healing
    /// releases what was held, in order.
    #[tokio::test(start_paused = true)]
    async fn a_one_way_partition_holds_one_direction_only() {
        let net = MemoryNetwork::new();
        let mut listener = net.transport().listen("s").await.unwrap_or_else(|e| panic!("{e}"));
        let client = net.transport();
        let mut conn = client.connect("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut accepted = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let client_addr = accepted.remote_addr.clone();
        net.partition_one_way(&client_addr, "s");
        conn.send.write_all(&[1, 2]).await.unwrap_or_else(|e| panic!("{e}"));
        accepted.send.write_all(&[9]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 8];
        let n = conn.recv.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or(0);
        assert_eq!(&buf[..n], &[9], "the other direction flows");
        let held = tokio::time::timeout(Duration::from_secs(60), accepted.recv.read(&mut buf)).await;
        assert!(held.is_err(), "what the cut-off end sends is held back");
        assert!(client.connect("s").await.is_err(), "a dial from the cut-off end gets no answer");
        let mut other = net.transport().listen("o").await.unwrap_or_else(|e| panic!("{e}"));
        net.partition_one_way("o", &client_addr);
        assert!(client.connect("o").await.is_err(), "nor a dial whose answer cannot come back");
        net.heal_one_way(&client_addr, "s");
        let n = accepted.recv.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or(0);
        assert_eq!(&buf[..n], &[1, 2], "healing releases what was held");
        net.heal_all();
        let _conn = client.connect("o").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(other.accept().await.is_ok());
    }
}
