//! QUIC (quinn) with mutual TLS (rustls on ring).
//!
//! One bidirectional stream per connection carries the protocol, opened by the
//! dialer. Settings made explicit (quinn's defaults are tuned for the open
//! internet, and its connection receive window is unbounded):
//!
//! | setting | value |
//! |---|---|
//! | ALPN | `footlight/1` |
//! | TLS | 1.3 only, both sides present certificates from the cluster CA, 0-RTT off |
//! | streams | 1 bidirectional per connection, no unidirectional |
//! | stream / connection receive window | 2 MiB / 4 MiB |
//! | send window | 8 MiB |
//! | keep-alive / QUIC idle timeout | 1 s / 10 s (the protocol's own 5 s budget fires first) |
//! | incoming connections | at most [`Quic::max_incoming`] (default 256) handshaking or open; past half of it, clients must validate their address (QUIC retry) first |
//! | handshake | 5 s, then dropped |

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::sync::mpsc;

use super::tls::{Tls, TlsError, identity_of};
use super::{ByteSink, ByteSource, Connection, Listener, Transport, TransportError};

/// The ALPN protocol id.
pub const ALPN: &[u8] = b"footlight/1";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The server name dialers present; certificates are checked against the
/// name they carry themselves (the node id), see [`ClusterVerifier`].
const DIAL_NAME: &str = "footlight.node";

/// The QUIC transport. Build it with the node's [`Tls`].
#[derive(Clone)]
pub struct Quic {
    tls: Tls,
    max_incoming: usize,
    endpoint: Arc<Mutex<Option<quinn::Endpoint>>>,
    open: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Quic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quic").field("identity", &self.tls.identity()).finish_non_exhaustive()
    }
}

impl Quic {
    /// A QUIC transport authenticating as `tls`'s node.
    pub fn new(tls: Tls) -> Self {
        Self { tls, max_incoming: 256, endpoint: Arc::new(Mutex::new(None)), open: Arc::new(AtomicUsize::new(0)) }
    }

    /// Limits connections accepted from peers (handshaking or open); more are
    /// refused at once. Default 256.
    pub fn max_incoming(mut self, limit: usize) -> Self {
        self.max_incoming = limit.max(1);
        self
    }

    fn transport_config() -> Arc<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(1u8.into());
        t.max_concurrent_uni_streams(0u8.into());
        t.stream_receive_window(quinn::VarInt::from_u32(2 * 1024 * 1024));
        t.receive_window(quinn::VarInt::from_u32(4 * 1024 * 1024));
        t.send_window(8 * 1024 * 1024);
        t.keep_alive_interval(Some(Duration::from_secs(1)));
        t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(10_000))));
        Arc::new(t)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let cfg_err = |e: rustls::Error| TlsError::Config(e.to_string());
        let provider = Self::provider();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.tls.roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(cfg_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.tls.chain.clone(), self.tls.key.clone_key())
            .map_err(cfg_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.max_early_data_size = 0;
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Self::transport_config());
        Ok(server)
    }

    fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let cfg_err = |e: rustls::Error| TlsError::Config(e.to_string());
        let provider = Self::provider();
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(self.tls.roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(cfg_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterVerifier { inner }))
            .with_client_auth_cert(self.tls.chain.clone(), self.tls.key.clone_key())
            .map_err(cfg_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.enable_early_data = false;
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Self::transport_config());
        Ok(client)
    }

    fn endpoint(&self) -> Result<quinn::Endpoint, TransportError> {
        let mut slot = self.endpoint.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ep) = slot.as_ref() {
            return Ok(ep.clone());
        }
        // A dial-only node: a client endpoint on an ephemeral port.
        let mut ep =
            quinn::Endpoint::client("0.0.0.0:0".parse().map_err(|_| TransportError::Listen("0.0.0.0:0".into()))?)?;
        ep.set_default_client_config(self.client_config().map_err(tls_err)?);
        *slot = Some(ep.clone());
        Ok(ep)
    }
}

fn tls_err(e: TlsError) -> TransportError {
    TransportError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// Verifies a peer's certificate chain against the cluster CA, for the name
/// the certificate itself carries (its node id). Which node id is expected is
/// not known when dialing an address; the protocol handshake then requires
/// the peer's `Hello` to claim exactly that id.
#[derive(Debug)]
struct ClusterVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = identity_of(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))?;
        let name = ServerName::try_from(identity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))?;
        self.inner.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The node id in the certificate a QUIC peer presented.
fn peer_identity(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(identity_of)
}

#[async_trait]
impl Transport for Quic {
    fn local_identity(&self) -> Option<String> {
        Some(self.tls.identity().to_owned())
    }

    async fn listen(&self, addr: &str) -> Result<Box<dyn Listener>, TransportError> {
        let bind: SocketAddr = addr.parse().map_err(|_| TransportError::Listen(addr.to_owned()))?;
        let mut endpoint = quinn::Endpoint::server(self.server_config().map_err(tls_err)?, bind)?;
        endpoint.set_default_client_config(self.client_config().map_err(tls_err)?);
        let local = endpoint.local_addr()?;
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoint.clone());
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(accept_loop(endpoint, tx, self.max_incoming, self.open.clone()));
        Ok(Box::new(QuicListener { incoming: rx, addr: local.to_string() }))
    }

    /// An `ip:port` stands for itself; a `name:port` for every address DNS
    /// gives for the name (none if it does not resolve).
    async fn resolve(&self, addr: &str) -> Vec<String> {
        if addr.parse::<SocketAddr>().is_ok() {
            return vec![addr.to_owned()];
        }
        match tokio::net::lookup_host(addr).await {
            Ok(found) => found.map(|a| a.to_string()).collect(),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "seed name does not resolve");
                Vec::new()
            }
        }
    }

    /// Closes the endpoint (its connections are closed already) and waits,
    /// a few seconds at most, until it is idle: its UDP socket is released
    /// once the last handle goes, right after.
    async fn shutdown(&self) {
        let endpoint = self.endpoint.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(endpoint) = endpoint else { return };
        let local = endpoint.local_addr().ok();
        endpoint.close(0u32.into(), b"shutdown");
        if tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await.is_err() {
            tracing::debug!("QUIC endpoint still draining after 3 s");
        }
        drop(endpoint);
        // The endpoint's driver task drops the socket once it sees the last
        // handle gone: wait (a second at most) until the address binds.
        let Some(local) = local.filter(|a| a.port() != 0) else { return };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while std::net::UdpSocket::bind(local).is_err() {
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(%local, "QUIC socket not released within 1 s of the shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn connect(&self, addr: &str) -> Result<Connection, TransportError> {
        // `ip:port`, or `name:port` (the first address DNS gives).
        let to: SocketAddr = match addr.parse() {
            Ok(to) => to,
            Err(_) => tokio::net::lookup_host(addr)
                .await
                .ok()
                .and_then(|mut found| found.next())
                .ok_or_else(|| TransportError::Unreachable(format!("{addr}: does not resolve")))?,
        };
        let endpoint = self.endpoint()?;
        let connecting =
            endpoint.connect(to, DIAL_NAME).map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| TransportError::Unreachable(format!("{addr}: handshake timed out")))?
            .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        let identity = peer_identity(&conn)
            .ok_or_else(|| TransportError::Unreachable(format!("{addr}: no node identity in the certificate")))?;
        let (send, recv) = conn.open_bi().await.map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        Ok(Connection {
            send: Box::new(QuicSink { send, _conn: conn.clone(), _slot: None }),
            recv: Box::new(QuicSource { recv }),
            peer_identity: Some(identity),
            remote_addr: addr.to_owned(),
        })
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, ready: mpsc::Sender<Connection>, max: usize, open: Arc<AtomicUsize>) {
    while let Some(incoming) = endpoint.accept().await {
        let busy = open.load(Ordering::SeqCst);
        if busy >= max {
            tracing::warn!(remote = %incoming.remote_address(), max, "incoming connection refused: limit reached");
            incoming.refuse();
            continue;
        }
        // Under load, make a client prove its address (a QUIC retry round
        // trip) before any handshake work is spent on it.
        if busy >= max / 2 && !incoming.remote_address_validated() && incoming.may_retry() {
            if let Err(e) = incoming.retry() {
                tracing::debug!(error = %e, "retry not sent");
            }
            continue;
        }
        let slot = Slot::take(&open);
        let ready = ready.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let handshake = async {
                let conn = incoming.await.map_err(|e| e.to_string())?;
                let identity =
                    peer_identity(&conn).ok_or_else(|| "no identity in the client certificate".to_owned())?;
                let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((conn, identity, send, recv))
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok((conn, identity, send, recv))) => {
                    let connection = Connection {
                        send: Box::new(QuicSink { send, _conn: conn, _slot: Some(slot) }),
                        recv: Box::new(QuicSource { recv }),
                        peer_identity: Some(identity),
                        remote_addr: remote.to_string(),
                    };
                    let _ = ready.send(connection).await;
                }
                // A bad certificate is for an operator to see; a peer that went
                // away mid-handshake (a restart, a leave) is not.
                Ok(Err(why)) if why.contains("certificate") => {
                    tracing::warn!(%remote, %why, "incoming connection refused during the handshake");
                }
                Ok(Err(why)) => tracing::info!(%remote, %why, "incoming connection failed during the handshake"),
                Err(_) => tracing::info!(%remote, "incoming connection dropped: handshake timed out"),
            }
        });
    }
}

/// Counts an accepted connection against the incoming limit while it lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct QuicListener {
    incoming: mpsc::Receiver<Connection>,
    addr: String,
}

#[async_trait]
impl Listener for QuicListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.incoming.recv().await.ok_or(TransportError::Closed)
    }

    fn local_addr(&self) -> String {
        self.addr.clone()
    }
}

struct QuicSink {
    send: quinn::SendStream,
    /// Keeps the connection open while the stream is in use.
    _conn: quinn::Connection,
    _slot: Option<Slot>,
}

#[async_trait]
impl ByteSink for QuicSink {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // Cancel safe: quinn writes nothing unless the future completes.
        self.send.write(bytes).await.map_err(io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.send.finish();
        // Give the peer a moment to read the last frames before the
        // connection goes.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.send.stopped()).await;
        self._conn.close(0u32.into(), b"closed");
    }
}

struct QuicSource {
    recv: quinn::RecvStream,
}

#[async_trait]
impl ByteSource for QuicSource {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // Cancel safe; copies as many received segments as fit, so one
        // wake-up takes everything that arrived meanwhile.
        self.recv.read(buf).await.map_err(io::Error::other)
    }
}
