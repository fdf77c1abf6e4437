//! Reliable delivery between a producer and a consumer, opt-in (Akka's
//! producer and consumer controllers): sequence numbers per (producer,
//! consumer) pair, acknowledgements, resends after a lost connection or a
//! silence, and a window the consumer grants, so that nothing buffers
//! without bound.
//!
//! A consumer is registered cluster-wide under a name
//! ([`Cluster::reliable_consumer`]); its handler, any actor that handles
//! [`Delivered<M>`], gets each message with a stable key (producer id,
//! sequence number). A producer ([`Cluster::reliable_producer`]) sends to
//! the consumer by that name.
//!
//! **What is promised.**
//! - While the consumer lives, its handler gets every message once, in the
//!   order sent, across lost connections and resends: a message resent
//!   after a lost acknowledgement is recognised by its sequence number and
//!   dropped (acknowledged again).
//! - A message counts as delivered once the handler has handled it (the
//!   consumer asks the handler, and acknowledges after the reply), so when
//!   the consumer's node dies, the messages it had not acknowledged are
//!   sent again to the consumer that replaces it (registered under the same
//!   name, anywhere): delivery is then at least once, and a message handled
//!   just before the death comes again **with the same key**: make the
//!   handler idempotent by key where that matters.
//! - A producer that starts again with the same id (a new run) numbers
//!   from where its store's kept messages start (1 with an empty store),
//!   and the consumer follows it: keys are stable across resends, not
//!   across runs of a producer without a kept store (give each run its own
//!   id if keys must never repeat).
//! - The producer keeps every unacknowledged message in its
//!   [`ProducerStore`] (at most the window's worth). With the in-memory
//!   store, a producer whose node dies loses them; a store that keeps them
//!   (a file, a database) lets a producer started again with the same id
//!   send them again: the consumer then sees them at least once.
//!
//! **Flow control.** The consumer grants the producer up to
//! [`window`](ProducerBuilder::window) messages beyond the last one
//! handled; [`Producer::send`] waits while they are all in flight,
//! [`Producer::try_send`] refuses with the message handed back.
//!
//! **Work pulling.** A [`WorkProducer`] ([`Cluster::work_producer`]) hands
//! each message to one of the workers of a group ([`Cluster::reliable_worker`],
//! on any nodes), the one with room in its window: a slow worker gets less,
//! a new one gets its share once found (within a quarter of a second). Each message keeps the key the work
//! producer gave it on every delivery; when a worker's node is lost, what it
//! had not acknowledged goes to the others (at least once, same key).
//!
//! **Into sharded entities.** An [`EntityProducer`]
//! ([`Sharding::reliable_producer`](crate::Sharding::reliable_producer))
//! sends to entities by id, through a consumer on the host of each shard
//! ([`Sharding::reliable_consumer`](crate::Sharding::reliable_consumer));
//! a shard that moves takes its deliveries with it: nothing lost, nothing
//! handled twice on a hand-off, at least once (same key) when the host's
//! node is lost.
//!
//! Messages travel as MessagePack (serde); refs inside them are not
//! supported.

use actor_core::entropy::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_core::{Actor, ActorRef, Context, Handler, Message, Recipient};
use actor_remote::{RemoteActor, RemoteMessages};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::{Cluster, ClusterError};

/// The prefix of a consumer's cluster-wide name.
pub const NAME_PREFIX: &str = "footlight.delivery.";
/// The default window: messages in flight per producer.
pub const DEFAULT_WINDOW: u32 = 256;
/// The longest producer id.
pub const MAX_PRODUCER_ID_LEN: usize = 255;
/// How long a producer waits for progress before it sends again what is
/// unacknowledged (and looks the consumer up again).
const RESEND_AFTER: Duration = Duration::from_secs(1);
/// How long a consumer waits for its handler to handle one message: a day
/// (it must not ask again while the first ask may still be handled).
const HANDLER_PATIENCE: Duration = Duration::from_secs(24 * 3600);
/// The longest a producer waits before it sends again what is
/// unacknowledged, backing off from [`RESEND_AFTER`].
const RESEND_MAX: Duration = Duration::from_secs(30);

/// A message as the consumer's handler gets it: the message and its key.
#[derive(Debug)]
pub struct Delivered<M> {
    /// The producer's id.
    pub producer: Arc<str>,
    /// The message's sequence number from that producer (1, 2, ...).
    pub seq: u64,
    /// The message.
    pub msg: M,
}

impl<M> Delivered<M> {
    /// The message's stable key: the same every time it is delivered.
    pub fn key(&self) -> (&str, u64) {
        (&self.producer, self.seq)
    }
}

impl<M: Send + 'static> Message for Delivered<M> {
    type Reply = ();
}

/// Keeps a producer's unacknowledged messages (see the
/// [module docs](self) for what a store that outlives the process buys).
pub trait ProducerStore: Send + Sync + 'static {
    /// Keeps message `seq` (encoded).
    fn store(&self, seq: u64, bytes: &[u8]);
    /// The consumer acknowledged every message up to `seq`: forget them.
    fn confirm(&self, seq: u64);
    /// The messages kept, in order (at a start: to send again).
    fn unconfirmed(&self) -> Vec<(u64, Vec<u8>)>;
}

/// A [`ProducerStore`] in memory: what it keeps dies with the process.
#[derive(Default)]
pub struct MemoryStore {
    kept: Mutex<VecDeque<(u64, Vec<u8>)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.kept.lock().map_or(0, |k| k.len());
        f.debug_struct("MemoryStore").field("kept", &n).finish()
    }
}

impl ProducerStore for MemoryStore {
    fn store(&self, seq: u64, bytes: &[u8]) {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).push_back((seq, bytes.to_vec()));
    }

    fn confirm(&self, seq: u64) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        while kept.front().is_some_and(|(s, _)| *s <= seq) {
            kept.pop_front();
        }
    }

    fn unconfirmed(&self) -> Vec<(u64, Vec<u8>)> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

/// Why a message was not sent.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError<M> {
    /// Every message the window allows is in flight; the message is handed
    /// back ([`Producer::try_send`] and [`WorkProducer::try_send`] only).
    #[error("the consumer's window is used up; message not sent")]
    WindowFull(M),
    /// The producer has stopped (its node stopped); the message is handed
    /// back.
    #[error("the producer has stopped; message not sent")]
    Stopped(M),
    /// The message does not encode; it is handed back.
    #[error("the message does not encode: {1}")]
    Encode(M, String),
}

impl<M> fmt::Debug for DeliveryError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::WindowFull(_) => f.write_str("WindowFull(..)"),
            DeliveryError::Stopped(_) => f.write_str("Stopped(..)"),
            DeliveryError::Encode(_, e) => write!(f, "Encode(.., {e:?})"),
        }
    }
}

// ---- the wire ----

/// Producer → consumer: message `seq`, or (with no payload) a hello that
/// says which is the first one the producer still keeps.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Data {
    producer: String,
    /// This run of the producer: a consumer that sees a new one starts the
    /// producer's numbering over from `first`.
    epoch: u64,
    /// The first message the producer still keeps (every one before it was
    /// acknowledged).
    first: u64,
    /// Where acknowledgements go.
    reply_to: ActorRef<ProducerEndpoint>,
    seq: u64,
    payload: Vec<u8>,
}

impl Message for Data {
    type Reply = ();
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(actor_remote::codec::wire("footlight.delivery.Data"))
    }
}

/// Consumer → producer: every message up to `confirmed` was handled; send
/// up to `granted`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ack {
    epoch: u64,
    confirmed: u64,
    granted: u64,
    /// The consumer is going away (its shard moved): look it up again and
    /// send what is unacknowledged to the one that replaces it.
    #[serde(default)]
    closing: bool,
}

impl Message for Ack {
    type Reply = ();
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(actor_remote::codec::wire("footlight.delivery.Ack"))
    }
}

/// A consumer's face to producers.
pub(crate) struct ConsumerEndpoint {
    /// Bounded: what does not fit is dropped (its producer sends it again).
    tx: mpsc::Sender<Data>,
}

impl Actor for ConsumerEndpoint {}

impl Handler<Data> for ConsumerEndpoint {
    async fn handle(&mut self, msg: Data, _ctx: &mut Context<Self>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(msg) {
            tracing::debug!("reliable consumer busy; message dropped (its producer sends it again)");
        }
    }
}

impl RemoteActor for ConsumerEndpoint {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Data>();
    }
}

/// A producer's face to its consumer.
pub(crate) struct ProducerEndpoint {
    tx: mpsc::UnboundedSender<Ack>,
}

impl Actor for ProducerEndpoint {}

impl Handler<Ack> for ProducerEndpoint {
    async fn handle(&mut self, msg: Ack, _ctx: &mut Context<Self>) {
        let _ = self.tx.send(msg);
    }
}

impl RemoteActor for ProducerEndpoint {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Ack>();
    }
}

// ---- the consumer ----

impl Cluster {
    /// Starts a reliable consumer named `name` on this node: producers
    /// anywhere reach it by that name, and `handler` gets each message (see
    /// the [`delivery`](crate::delivery) module). Another node may start a
    /// consumer under the same name once this one is gone (its
    /// replacement). `window` is how many messages each producer may have
    /// in flight (at least 1).
    pub fn reliable_consumer<M>(
        &self,
        name: &str,
        handler: Recipient<Delivered<M>>,
        window: u32,
    ) -> Result<(), ClusterError>
    where
        M: DeserializeOwned + Send + 'static,
    {
        let reg = format!("{NAME_PREFIX}{name}");
        if name.is_empty() || reg.len() > crate::MAX_NAME_LEN {
            return Err(ClusterError::BadName(name.to_owned()));
        }
        self.start_consumer::<M>(reg, ask_handler(handler, |delivered| delivered), window, None).map(|_| ())
    }

    /// Registers a consumer endpoint under `reg` and starts its task, which
    /// runs until the endpoint stops or, if given, `stop` fires or is
    /// dropped.
    fn start_consumer<M>(
        &self,
        reg: String,
        deliver: Deliver<M>,
        window: u32,
        stop: Option<oneshot::Receiver<()>>,
    ) -> Result<(ActorRef<ConsumerEndpoint>, tokio::task::JoinHandle<()>), ClusterError>
    where
        M: DeserializeOwned + Send + 'static,
    {
        let window = window.max(1);
        let (tx, rx) = mpsc::channel(2 * window as usize);
        let endpoint = self.system().spawn(ConsumerEndpoint { tx });
        if let Err(e) = self.register(&reg, &endpoint) {
            endpoint.stop();
            return Err(e);
        }
        let task = tokio::spawn(consume::<M>(self.clone(), reg, endpoint.clone(), rx, deliver, window, stop));
        Ok((endpoint, task))
    }
}

/// What became of a message handed to the handler.
enum Handled {
    Done,
    /// The handler has stopped: the consumer stops.
    Gone,
    /// It failed while handling (a panic): the message comes again.
    Failed(String),
}

/// Hands a message to the handler and reports what became of it.
type Deliver<M> =
    Box<dyn Fn(Delivered<M>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Handled> + Send>> + Send + Sync>;

/// Delivery by ask to `handler`, with no timeout: a message asked again
/// while the first ask still sits in the handler's mailbox would be handled
/// twice. A stuck handler holds the consumer up (its channel is bounded;
/// producers resend later).
/// `unwrap` turns what the consumer decoded into what the handler takes.
fn ask_handler<T: 'static, M: Send + 'static>(
    handler: Recipient<Delivered<M>>,
    unwrap: fn(Delivered<T>) -> Delivered<M>,
) -> Deliver<T> {
    Box::new(move |delivered| {
        let (handler, delivered) = (handler.clone(), unwrap(delivered));
        Box::pin(async move {
            match handler.ask(delivered, HANDLER_PATIENCE).await {
                Ok(()) => Handled::Done,
                Err(actor_core::AskError::Closed(_)) => Handled::Gone,
                Err(e) => Handled::Failed(e.to_string()),
            }
        })
    })
}

/// What a consumer knows of one producer.
struct FromProducer {
    /// Its id, shared by every message handed to the handler.
    id: Arc<str>,
    epoch: u64,
    /// The last message handed to the handler and handled.
    handled: u64,
    /// Messages taken since the last acknowledgement.
    unacked: u32,
    last_seen: Instant,
    /// Where its acknowledgements go.
    reply_to: ActorRef<ProducerEndpoint>,
}

/// The most producers a consumer keeps track of; past this, the one heard
/// from least recently is forgotten (safe: its next message says where it
/// stands).
pub const MAX_PRODUCERS: usize = 10_000;

/// Takes producers' messages from `rx` and hands each to `deliver` once,
/// in order, until the endpoint stops or `stop` fires (or is dropped): then
/// it tells every producer where it stands, with `closing` set, after the
/// message being handled (what waits in `rx` is left to the consumer that
/// replaces this one).
async fn consume<M>(
    cluster: Cluster,
    reg: String,
    endpoint: ActorRef<ConsumerEndpoint>,
    mut rx: mpsc::Receiver<Data>,
    deliver: Deliver<M>,
    window: u32,
    mut stop: Option<oneshot::Receiver<()>>,
) where
    M: DeserializeOwned + Send + 'static,
{
    let me = cluster.id().to_owned();
    let mut producers: HashMap<String, FromProducer> = HashMap::default();
    loop {
        let data = tokio::select! {
            biased;
            _ = async { match stop.as_mut() { Some(stop) => { let _ = stop.await; } None => std::future::pending().await } } => {
                for from in producers.values() {
                    let ack = Ack { epoch: from.epoch, confirmed: from.handled, granted: from.handled, closing: true };
                    if let Err(e) = from.reply_to.try_tell(ack) {
                        tracing::debug!(node = %me, error = %e, "closing acknowledgement not sent (the producer resends)");
                    }
                }
                cluster.unregister(&reg);
                endpoint.stop();
                return;
            }
            data = rx.recv() => match data {
                Some(data) => data,
                None => return,
            },
        };
        if data.producer.is_empty() || data.producer.len() > MAX_PRODUCER_ID_LEN {
            tracing::warn!(node = %me, "reliable message with a bad producer id; dropped");
            continue;
        }
        // A producer seen before costs a lookup, not an allocation.
        if !producers.contains_key(&data.producer) {
            if producers.len() >= MAX_PRODUCERS
                && let Some(oldest) = producers.iter().min_by_key(|(_, p)| p.last_seen).map(|(k, _)| k.clone())
            {
                producers.remove(&oldest);
            }
            let from = FromProducer {
                id: Arc::from(data.producer.as_str()),
                epoch: data.epoch,
                handled: data.first.saturating_sub(1),
                unacked: 0,
                last_seen: Instant::now(),
                reply_to: data.reply_to.clone(),
            };
            producers.insert(data.producer.clone(), from);
        }
        let Some(from) = producers.get_mut(&data.producer) else { continue };
        from.last_seen = Instant::now();
        if from.epoch != data.epoch {
            // A new run of the producer: its numbering starts over where
            // its kept messages start.
            from.epoch = data.epoch;
            from.handled = data.first.saturating_sub(1);
            from.unacked = 0;
            from.reply_to = data.reply_to.clone();
        } else if data.first > from.handled.saturating_add(1) {
            // Everything before `first` was acknowledged, by this consumer
            // or one that stood in for it (a shard that moved away and
            // back): go on from there.
            from.handled = data.first - 1;
        }
        let next = from.handled.saturating_add(1);
        if data.seq == next && !data.payload.is_empty() {
            match actor_remote::codec::decode::<M>(&data.payload) {
                Ok(msg) => {
                    let delivered = Delivered { producer: from.id.clone(), seq: data.seq, msg };
                    match deliver(delivered).await {
                        Handled::Done => from.handled = data.seq,
                        Handled::Gone => {
                            tracing::error!(node = %me, consumer = %reg, "the reliable consumer's handler has stopped; the consumer stops (another may take its name)");
                            cluster.unregister(&reg);
                            endpoint.stop();
                            return;
                        }
                        Handled::Failed(e) => {
                            // It failed while handling (a panic): it comes
                            // again, with the same key.
                            tracing::warn!(node = %me, producer = %data.producer, seq = data.seq, error = %e, "reliable message not handled; it will come again");
                            continue;
                        }
                    }
                }
                Err(e) => {
                    // It can never be handled: skip it, or the producer would
                    // be stuck on it forever.
                    tracing::error!(node = %me, producer = %data.producer, seq = data.seq, error = %e, "reliable message does not decode; skipped");
                    from.handled = data.seq;
                }
            }
        }
        // A duplicate, a gap (an earlier message was lost: the producer
        // sends again from there), a hello, or just handled: say where we
        // are. Acknowledgements are cumulative: one for a burst of
        // messages, once no more wait (or every quarter window).
        from.unacked += 1;
        if rx.is_empty() || from.unacked >= (window / 4).max(1) {
            from.unacked = 0;
            let ack = Ack {
                epoch: from.epoch,
                confirmed: from.handled,
                granted: from.handled.saturating_add(u64::from(window)),
                closing: false,
            };
            if let Err(e) = data.reply_to.try_tell(ack) {
                tracing::debug!(node = %me, error = %e, "acknowledgement not sent (the producer resends)");
            }
        }
    }
}

// ---- the producer ----

/// Starts a reliable producer (see [`Cluster::reliable_producer`]).
pub struct ProducerBuilder<M> {
    cluster: Cluster,
    id: String,
    consumer: String,
    window: u32,
    store: Arc<dyn ProducerStore>,
    _msg: PhantomData<fn(M)>,
}

impl<M> fmt::Debug for ProducerBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder").field("id", &self.id).field("consumer", &self.consumer).finish()
    }
}

impl Cluster {
    /// A reliable producer with id `id` (unique among the consumer's
    /// producers, and the same after a restart if its store outlives the
    /// process) sending to the consumer named `consumer`.
    pub fn reliable_producer<M>(&self, id: &str, consumer: &str) -> ProducerBuilder<M>
    where
        M: Serialize + Send + 'static,
    {
        ProducerBuilder {
            cluster: self.clone(),
            id: id.to_owned(),
            consumer: consumer.to_owned(),
            window: DEFAULT_WINDOW,
            store: MemoryStore::new(),
            _msg: PhantomData,
        }
    }
}

impl ProducerBuilder<()> {
    /// A producer of encoded messages, kept in memory, for a work producer's
    /// worker or an entity producer's shard (its consumer found by
    /// [`start_with`](Self::start_with)).
    fn internal(cluster: &Cluster, id: &str, window: u32) -> Self {
        ProducerBuilder {
            cluster: cluster.clone(),
            id: id.to_owned(),
            consumer: String::new(),
            window,
            store: MemoryStore::new(),
            _msg: PhantomData,
        }
    }
}

impl<M: Serialize + Send + 'static> ProducerBuilder<M> {
    /// The most messages in flight before the consumer's first grant
    /// (default [`DEFAULT_WINDOW`]); after that, the consumer's grant rules.
    pub fn window(mut self, window: u32) -> Self {
        self.window = window.max(1);
        self
    }

    /// Where unacknowledged messages are kept (default: a [`MemoryStore`]).
    /// A store holding messages from an earlier run of this producer sends
    /// them again first.
    pub fn store(mut self, store: Arc<dyn ProducerStore>) -> Self {
        self.store = store;
        self
    }

    /// Starts the producer. Refuses an empty or too long id.
    pub fn start(self) -> Result<Producer<M>, ClusterError> {
        let find = Find::Name(format!("{NAME_PREFIX}{}", self.consumer));
        let inner = self.start_with(find, Arc::new(Notify::new()))?;
        Ok(Producer { inner, _msg: PhantomData })
    }

    /// Starts a producer sending to the consumer `find` names, whose window
    /// opening signals `room`.
    fn start_with(self, find: Find, room: Arc<Notify>) -> Result<Arc<ProducerInner>, ClusterError> {
        if self.id.is_empty() || self.id.len() > MAX_PRODUCER_ID_LEN {
            return Err(ClusterError::BadName(self.id));
        }
        // Its ref travels in every message, for the acknowledgements.
        self.cluster.expose::<ProducerEndpoint>()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let endpoint = self.cluster.system().spawn(ProducerEndpoint { tx });
        let kept = self.store.unconfirmed();
        let next = kept.last().map_or(1, |(s, _)| s + 1);
        let state = Arc::new(Mutex::new(State {
            next,
            confirmed: kept.first().map_or(0, |(s, _)| s.saturating_sub(1)),
            granted: kept.first().map_or(0, |(s, _)| s.saturating_sub(1)) + u64::from(self.window),
            unsent: kept.into_iter().collect(),
            stopped: false,
        }));
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(produce(
            self.cluster.clone(),
            self.id.clone(),
            find,
            endpoint,
            rx,
            state.clone(),
            self.store.clone(),
            room.clone(),
            wake.clone(),
            self.window,
            stopped,
        ));
        Ok(Arc::new(ProducerInner { id: self.id.into(), state, store: self.store, room, wake, _stop: stop }))
    }
}

/// How a producer finds its consumer.
enum Find {
    /// By its cluster-wide name, looked up again whenever sends fail.
    Name(String),
    /// That endpoint, for as long as it lives (a work producer's worker).
    Ref(ActorRef<ConsumerEndpoint>),
}

struct State {
    /// The next sequence number.
    next: u64,
    /// Every message up to this one was acknowledged.
    confirmed: u64,
    /// Messages up to this one may be in flight.
    granted: u64,
    /// Messages not yet acknowledged, in order.
    unsent: VecDeque<(u64, Vec<u8>)>,
    stopped: bool,
}

struct ProducerInner {
    id: Arc<str>,
    state: Arc<Mutex<State>>,
    store: Arc<dyn ProducerStore>,
    /// Signalled when the window opens.
    room: Arc<Notify>,
    /// Signalled when there is something new to send.
    wake: Arc<Notify>,
    _stop: oneshot::Sender<()>,
}

/// A reliable producer's handle (see the [module docs](self)). Cheap to
/// clone; the producer stops when the last clone is dropped.
pub struct Producer<M> {
    inner: Arc<ProducerInner>,
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for Producer<M> {
    fn clone(&self) -> Self {
        Producer { inner: self.inner.clone(), _msg: PhantomData }
    }
}

impl<M> fmt::Debug for Producer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").field("id", &self.inner.id).finish()
    }
}

impl<M: Serialize + Send + 'static> Producer<M> {
    /// The producer's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Messages sent and not yet acknowledged.
    pub fn unconfirmed(&self) -> usize {
        self.inner.unconfirmed()
    }

    /// Sends `msg` if the window allows now; returns its sequence number.
    pub fn try_send(&self, msg: M) -> Result<u64, DeliveryError<M>> {
        let bytes = match actor_remote::codec::encode(&msg) {
            Ok(bytes) => bytes,
            Err(e) => return Err(DeliveryError::Encode(msg, e.to_string())),
        };
        self.inner.try_send_bytes(bytes).map_err(|(refused, _)| refused.with(msg))
    }

    /// Sends `msg`, waiting while the window is used up; returns its
    /// sequence number.
    pub async fn send(&self, msg: M) -> Result<u64, DeliveryError<M>> {
        send_when_room(&self.inner.room, msg, |msg| self.try_send(msg)).await
    }

    /// Waits until every message sent so far was acknowledged (handled by
    /// the consumer's handler).
    pub async fn flush(&self) {
        when_room(&self.inner.room, || (self.unconfirmed() == 0).then_some(())).await;
    }
}

/// Runs `attempt` until it gives an answer, waiting for `room` to be
/// signalled between tries (the wait is registered before each try, so a
/// signal in between is not missed).
async fn when_room<T>(room: &Notify, mut attempt: impl FnMut() -> Option<T>) -> T {
    loop {
        let signalled = room.notified();
        tokio::pin!(signalled);
        signalled.as_mut().enable();
        if let Some(done) = attempt() {
            return done;
        }
        signalled.await;
    }
}

/// Tries `try_send` until the window has room for `msg`.
async fn send_when_room<M>(
    room: &Notify,
    msg: M,
    try_send: impl Fn(M) -> Result<u64, DeliveryError<M>>,
) -> Result<u64, DeliveryError<M>> {
    let mut msg = Some(msg);
    when_room(room, || match try_send(msg.take()?) {
        Err(DeliveryError::WindowFull(back)) => {
            msg = Some(back);
            None
        }
        other => Some(other),
    })
    .await
}

/// Why an encoded message was not taken.
enum Refused {
    WindowFull,
    Stopped,
}

impl Refused {
    /// The error that hands `msg` back.
    fn with<M>(self, msg: M) -> DeliveryError<M> {
        match self {
            Refused::WindowFull => DeliveryError::WindowFull(msg),
            Refused::Stopped => DeliveryError::Stopped(msg),
        }
    }
}

impl ProducerInner {
    fn unconfirmed(&self) -> usize {
        lock(&self.state).unsent.len()
    }

    /// Takes an encoded message if the window allows now; hands it back if
    /// not.
    fn try_send_bytes(&self, bytes: Vec<u8>) -> Result<u64, (Refused, Vec<u8>)> {
        let mut st = lock(&self.state);
        if st.stopped {
            return Err((Refused::Stopped, bytes));
        }
        if st.next > st.granted {
            return Err((Refused::WindowFull, bytes));
        }
        let seq = st.next;
        st.next += 1;
        self.store.store(seq, &bytes);
        st.unsent.push_back((seq, bytes));
        drop(st);
        self.wake.notify_one();
        Ok(seq)
    }

    /// Stops taking messages and hands back the unacknowledged ones, in
    /// order (their consumer is gone: they go to another).
    fn take_unconfirmed(&self) -> Vec<Vec<u8>> {
        let mut st = lock(&self.state);
        st.stopped = true;
        std::mem::take(&mut st.unsent).into_iter().map(|(_, bytes)| bytes).collect()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    cluster: Cluster,
    id: String,
    find: Find,
    endpoint: ActorRef<ProducerEndpoint>,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    state: Arc<Mutex<State>>,
    store: Arc<dyn ProducerStore>,
    room: Arc<Notify>,
    wake: Arc<Notify>,
    window: u32,
    mut stop: oneshot::Receiver<()>,
) {
    let me = cluster.id().to_owned();
    // This run of the producer (see `Data::epoch`): a random number, only
    // ever compared for equality.
    let epoch = actor_core::entropy::next_u64();
    let mut target: Option<ActorRef<ConsumerEndpoint>> = None;
    // Sent so far (the highest sequence number handed to the connection).
    let mut sent: u64 = 0;
    let mut progress = Instant::now();
    let mut resend_after = RESEND_AFTER;
    // The acknowledged position a resend already started from (after a
    // gap): repeated acknowledgements of it do not start another.
    let mut resent_from: Option<u64> = None;
    let data = |seq: u64, first: u64, payload: Vec<u8>| Data {
        producer: id.clone(),
        epoch,
        first,
        reply_to: endpoint.clone(),
        seq,
        payload,
    };
    loop {
        if target.is_none() {
            target = match &find {
                Find::Name(name) => cluster.lookup::<ConsumerEndpoint>(name).await.ok(),
                Find::Ref(endpoint) => endpoint.is_alive().then(|| endpoint.clone()),
            };
            if target.is_some() {
                // Start over from the first unacknowledged: a new consumer
                // (or a new connection) may have missed them.
                let (confirmed, next) = {
                    let st = lock(&state);
                    (st.confirmed, st.next)
                };
                sent = confirmed;
                if confirmed + 1 == next
                    && let Some(t) = &target
                {
                    // Nothing kept: say hello, so that the consumer grants.
                    let _ = t.try_tell(data(confirmed + 1, confirmed + 1, Vec::new()));
                }
            }
        }
        // Send what the window allows and was not sent, without waiting on
        // the connection (acknowledgements must keep flowing in). Blocked:
        // the connection is full; try again shortly.
        let mut blocked = false;
        if let Some(t) = &target {
            let (batch, first) = {
                let st = lock(&state);
                let batch: Vec<(u64, Vec<u8>)> =
                    st.unsent.iter().filter(|(s, _)| *s > sent && *s <= st.granted).cloned().collect();
                (batch, st.confirmed + 1)
            };
            for (seq, payload) in batch {
                match t.try_tell(data(seq, first, payload)) {
                    Ok(()) => sent = seq,
                    Err(actor_core::TrySendError::Full(_)) => {
                        blocked = true;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(node = %me, producer = %id, error = %e, "message to the consumer not sent; looking it up again");
                        target = None;
                        break;
                    }
                }
            }
        }
        let idle = lock(&state).unsent.is_empty();
        // Not found yet: look again soon; blocked: try again shortly;
        // else resend after a silence (backing off while nothing moves).
        let resend_at = if target.is_none() {
            Instant::now() + Duration::from_millis(100)
        } else if blocked {
            Instant::now() + Duration::from_millis(5)
        } else {
            progress + resend_after
        };
        tokio::select! {
            _ = &mut stop => break,
            ack = acks.recv() => {
                let Some(ack) = ack else { break };
                let mut st = lock(&state);
                // Only for this run, and never beyond what was numbered.
                if ack.epoch != epoch || ack.confirmed >= st.next {
                    tracing::debug!(node = %me, producer = %id, "acknowledgement from another run or beyond what was sent; ignored");
                    continue;
                }
                let progressed = ack.confirmed > st.confirmed;
                if progressed {
                    st.confirmed = ack.confirmed;
                    while st.unsent.front().is_some_and(|(s, _)| *s <= st.confirmed) {
                        st.unsent.pop_front();
                    }
                    store.confirm(st.confirmed);
                    progress = Instant::now();
                    resend_after = RESEND_AFTER;
                    resent_from = None;
                }
                if ack.closing {
                    // The consumer went away (its shard moved): find the
                    // one that replaces it and send it what is left.
                    tracing::debug!(node = %me, producer = %id, confirmed = st.confirmed, "the consumer is closing; looking it up again");
                    sent = st.confirmed;
                    target = None;
                    resent_from = Some(st.confirmed);
                    progress = Instant::now();
                    drop(st);
                    room.notify_waiters();
                    continue;
                }
                if !progressed && ack.confirmed == st.confirmed && sent > st.confirmed && resent_from != Some(st.confirmed) {
                    // The consumer did not move although more was sent: a
                    // message was lost. Send again from there, once per
                    // position.
                    sent = st.confirmed;
                    resent_from = Some(st.confirmed);
                }
                // The consumer's grant, never beyond this producer's window.
                st.granted = ack.granted.min(st.confirmed + u64::from(window));
                drop(st);
                room.notify_waiters();
            }
            () = wake.notified() => {}
            () = tokio::time::sleep_until(resend_at), if !idle || target.is_none() || blocked => {
                if !blocked && target.is_some() {
                    // No progress for a while: send everything again (the
                    // consumer drops what it has), after looking the
                    // consumer up again (it may have moved); wait longer
                    // next time if this does not help either.
                    sent = lock(&state).confirmed;
                    target = None;
                    resent_from = Some(sent);
                    progress = Instant::now();
                    resend_after = (resend_after * 2).min(RESEND_MAX);
                }
            }
        }
    }
    lock(&state).stopped = true;
    room.notify_waiters();
    // Nothing acknowledges to it any more: its actor goes (else every
    // stopped producer would leave one behind, and its export on peers).
    endpoint.stop();
}

// ---- work pulling ----

/// The prefix of the registry group a work producer's workers join.
pub const WORKERS_PREFIX: &str = "footlight.delivery.workers.";
/// How often a work producer looks for workers that joined or are gone.
const WORKERS_EVERY: Duration = Duration::from_millis(250);

/// A message as it travels to a worker: its stable key with it.
#[derive(Serialize)]
struct KeyedRef<'a, M> {
    producer: &'a str,
    key: u64,
    msg: &'a M,
}

/// A message as a worker's consumer decodes it.
#[derive(Deserialize)]
struct Keyed<M> {
    producer: String,
    key: u64,
    msg: M,
}

impl Cluster {
    /// Starts a worker for the work producers of `group` on this node: a
    /// reliable consumer (see the [`delivery`](crate::delivery) module) that
    /// any [`WorkProducer`] of that group may hand messages to, and that
    /// hands them to `handler`. `window` is how many messages each producer
    /// may have in flight to this worker (at least 1). Start several for
    /// more work at once; each stops when its handler stops.
    ///
    /// The handler sees the key the work producer gave the message
    /// ([`Delivered::key`]: the producer's id and a number), the same on
    /// every delivery: a message comes to another worker when this one's
    /// node is lost before it acknowledged it, and may then have been
    /// handled twice.
    pub fn reliable_worker<M>(
        &self,
        group: &str,
        handler: Recipient<Delivered<M>>,
        window: u32,
    ) -> Result<(), ClusterError>
    where
        M: DeserializeOwned + Send + 'static,
    {
        static WORKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let members = format!("{WORKERS_PREFIX}{group}");
        let n = actor_core::entropy::number(&WORKERS);
        let reg = format!("{NAME_PREFIX}{group}@{}#{n}", self.id());
        if group.is_empty() || members.len() > crate::MAX_NAME_LEN || reg.len() > crate::MAX_NAME_LEN {
            return Err(ClusterError::BadName(group.to_owned()));
        }
        // The handler sees the work producer's key, not the per-worker one.
        let deliver = ask_handler(handler, |delivered: Delivered<Keyed<M>>| {
            let Keyed { producer, key, msg } = delivered.msg;
            Delivered { producer: Arc::from(producer), seq: key, msg }
        });
        let (endpoint, _) = self.start_consumer::<Keyed<M>>(reg.clone(), deliver, window, None)?;
        if let Err(e) = self.join(&members, &endpoint) {
            self.unregister(&reg);
            endpoint.stop();
            return Err(e);
        }
        Ok(())
    }

    /// A work producer with id `id` (unique among the producers of
    /// `group`'s workers) handing messages to the workers of `group` (see
    /// [`WorkProducer`]).
    pub fn work_producer<M>(&self, id: &str, group: &str) -> WorkProducerBuilder<M>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        WorkProducerBuilder {
            cluster: self.clone(),
            id: id.to_owned(),
            group: group.to_owned(),
            window: DEFAULT_WORK_WINDOW,
            _msg: PhantomData,
        }
    }
}

/// The default window of a work producer: messages in flight per worker.
pub const DEFAULT_WORK_WINDOW: u32 = 16;

/// Starts a work producer (see [`Cluster::work_producer`]).
pub struct WorkProducerBuilder<M> {
    cluster: Cluster,
    id: String,
    group: String,
    window: u32,
    _msg: PhantomData<fn(M)>,
}

impl<M> fmt::Debug for WorkProducerBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkProducerBuilder").field("id", &self.id).field("group", &self.group).finish()
    }
}

impl<M: Serialize + DeserializeOwned + Send + 'static> WorkProducerBuilder<M> {
    /// Messages in flight to each worker (default [`DEFAULT_WORK_WINDOW`]):
    /// a worker gets more only as it acknowledges, so a slow one gets less.
    /// A worker's own window ([`Cluster::reliable_worker`]) caps it further.
    pub fn window(mut self, window: u32) -> Self {
        self.window = window.max(1);
        self
    }

    /// Starts the producer. Refuses an empty or too long id or group.
    pub fn start(self) -> Result<WorkProducer<M>, ClusterError> {
        if self.id.is_empty() || self.id.len() > MAX_PRODUCER_ID_LEN {
            return Err(ClusterError::BadName(self.id));
        }
        let members = format!("{WORKERS_PREFIX}{}", self.group);
        if self.group.is_empty() || members.len() > crate::MAX_NAME_LEN {
            return Err(ClusterError::BadName(self.group));
        }
        // Workers acknowledge to its endpoints: their refs travel.
        self.cluster.expose::<ProducerEndpoint>()?;
        let (stop, stopped) = oneshot::channel();
        let inner = Arc::new(WorkInner {
            id: self.id.into(),
            state: Mutex::new(WorkState::default()),
            room: Arc::new(Notify::new()),
            _stop: stop,
        });
        tokio::spawn(supervise_workers(self.cluster, members, self.window, Arc::downgrade(&inner), stopped));
        Ok(WorkProducer { inner, _msg: PhantomData })
    }
}

/// Hands messages to the workers of a group ([`Cluster::reliable_worker`]),
/// each to one worker with room in its window (Akka's work-pulling
/// producer): a slow worker gets less, a new worker gets its share once
/// found (the group is looked at every quarter of a second). Every worker
/// of a group must take the same message type: one that cannot decode a
/// message skips it (logged as an error) and it counts as delivered.
/// Cheap to clone; it stops when the last clone is dropped.
///
/// **What is promised.** Each message gets a key (this producer's id and
/// a number from 1) that its handler sees on every delivery.
/// - While the worker it went to lives, the message is handled once,
///   across lost connections and resends (as for [`Producer`]).
/// - When a worker's node is lost or leaves (its endpoint is known gone),
///   the messages it had not acknowledged go to the other workers: a
///   message handled just before the loss is then handled again, **with
///   the same key**; make handling idempotent by key where that matters.
/// - Nothing is kept beyond this process: messages not yet acknowledged
///   when the producer's node dies are lost (at most a window per worker,
///   plus those waiting for a worker).
/// - Order is not kept across workers.
/// - A message whose handler fails every time (it panics) comes again and
///   again: [`flush`](WorkProducer::flush) waits for it forever.
pub struct WorkProducer<M> {
    inner: Arc<WorkInner>,
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for WorkProducer<M> {
    fn clone(&self) -> Self {
        WorkProducer { inner: self.inner.clone(), _msg: PhantomData }
    }
}

impl<M> fmt::Debug for WorkProducer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkProducer").field("id", &self.inner.id).finish()
    }
}

struct WorkInner {
    id: Arc<str>,
    state: Mutex<WorkState>,
    /// Signalled when a worker's window opens, a worker joins, or messages
    /// come back from a lost worker.
    room: Arc<Notify>,
    _stop: oneshot::Sender<()>,
}

#[derive(Default)]
struct WorkState {
    workers: Vec<Worker>,
    /// The last key given.
    last_key: u64,
    /// Where the next message looks for room first.
    turn: usize,
    /// Messages back from lost workers (encoded), waiting for room.
    backlog: VecDeque<Vec<u8>>,
    /// Messages handed to another worker after theirs was lost.
    reassigned: u64,
}

struct Worker {
    endpoint: ActorRef<ConsumerEndpoint>,
    producer: Arc<ProducerInner>,
}

impl WorkState {
    /// Hands `bytes` to the first worker with room, from `turn` on; hands
    /// them back if none has.
    fn place(&mut self, mut bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        let n = self.workers.len();
        for i in 0..n {
            let at = (self.turn + i) % n;
            match self.workers[at].producer.try_send_bytes(bytes) {
                Ok(_) => {
                    self.turn = at + 1;
                    return Ok(());
                }
                Err((_, back)) => bytes = back,
            }
        }
        Err(bytes)
    }

    /// Places what came back from lost workers, in order, while there is
    /// room; true if all of it was placed.
    fn place_backlog(&mut self) -> bool {
        while let Some(bytes) = self.backlog.pop_front() {
            if let Err(back) = self.place(bytes) {
                self.backlog.push_front(back);
                return false;
            }
        }
        true
    }

    fn unconfirmed(&self) -> usize {
        self.backlog.len() + self.workers.iter().map(|w| w.producer.unconfirmed()).sum::<usize>()
    }
}

fn work_lock(state: &Mutex<WorkState>) -> std::sync::MutexGuard<'_, WorkState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl<M: Serialize + Send + 'static> WorkProducer<M> {
    /// The producer's id (the first half of every key it gives).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Messages taken and not yet acknowledged by a worker (those waiting
    /// for a worker included).
    pub fn unconfirmed(&self) -> usize {
        work_lock(&self.inner.state).unconfirmed()
    }

    /// How many messages went to another worker because theirs was lost.
    pub fn reassigned(&self) -> u64 {
        work_lock(&self.inner.state).reassigned
    }

    /// How many workers it hands messages to now.
    pub fn workers(&self) -> usize {
        work_lock(&self.inner.state).workers.len()
    }

    /// Hands `msg` to a worker if one has room now (and nothing that came
    /// back from a lost worker waits); returns its key's number.
    pub fn try_send(&self, msg: M) -> Result<u64, DeliveryError<M>> {
        let mut st = work_lock(&self.inner.state);
        if !st.place_backlog() {
            return Err(DeliveryError::WindowFull(msg));
        }
        let key = st.last_key + 1;
        let bytes = match actor_remote::codec::encode(&KeyedRef { producer: &self.inner.id, key, msg: &msg }) {
            Ok(bytes) => bytes,
            Err(e) => return Err(DeliveryError::Encode(msg, e.to_string())),
        };
        match st.place(bytes) {
            Ok(()) => {
                st.last_key = key;
                Ok(key)
            }
            Err(_) => Err(DeliveryError::WindowFull(msg)),
        }
    }

    /// Hands `msg` to a worker, waiting for one with room (or for a first
    /// worker); returns its key's number.
    pub async fn send(&self, msg: M) -> Result<u64, DeliveryError<M>> {
        send_when_room(&self.inner.room, msg, |msg| self.try_send(msg)).await
    }

    /// Waits until every message taken so far was acknowledged by a worker
    /// (handled).
    pub async fn flush(&self) {
        when_room(&self.inner.room, || {
            // What came back from a lost worker takes room as it opens.
            let mut st = work_lock(&self.inner.state);
            st.place_backlog();
            (st.unconfirmed() == 0).then_some(())
        })
        .await;
    }
}

/// Keeps a work producer's workers current: every [`WORKERS_EVERY`], the
/// group's endpoints that are new get a producer of their own; those
/// known gone (their node lost or left, or they stopped) give back what
/// they had not acknowledged, which goes to the others.
async fn supervise_workers(
    cluster: Cluster,
    members: String,
    window: u32,
    work: std::sync::Weak<WorkInner>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(WORKERS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let endpoints = cluster.group::<ConsumerEndpoint>(&members).await;
        // A peer's worker counts as gone only once its node's run is no
        // longer a member: a ref can end with a connection that a crossed
        // dial replaced, its node up.
        let runs: actor_core::entropy::HashSet<(String, u64)> =
            cluster.members().into_iter().map(|m| (m.id, m.run)).collect();
        let gone = |endpoint: &ActorRef<ConsumerEndpoint>| match endpoint.remote_addr() {
            Some(at) => !endpoint.is_alive() && !runs.contains(&(at.node.clone(), at.run)),
            None => !endpoint.is_alive(),
        };
        let Some(work) = work.upgrade() else { return };
        let mut st = work_lock(&work.state);
        let mut changed = false;
        // Gone: what they had not acknowledged goes back, first in line.
        let mut kept = Vec::with_capacity(st.workers.len());
        for worker in std::mem::take(&mut st.workers) {
            if !gone(&worker.endpoint) {
                kept.push(worker);
                continue;
            }
            let back = worker.producer.take_unconfirmed();
            tracing::info!(node = %cluster.id(), producer = %work.id, worker = %worker.endpoint, messages = back.len(), "a worker is gone; its messages go to the others");
            st.reassigned += back.len() as u64;
            for bytes in back.into_iter().rev() {
                st.backlog.push_front(bytes);
            }
            changed = true;
        }
        st.workers = kept;
        for endpoint in endpoints {
            if !endpoint.is_alive() || st.workers.iter().any(|w| same_actor(&w.endpoint, &endpoint)) {
                continue;
            }
            let builder = ProducerBuilder::internal(&cluster, &work.id, window);
            match builder.start_with(Find::Ref(endpoint.clone()), work.room.clone()) {
                Ok(producer) => {
                    st.workers.push(Worker { endpoint, producer });
                    changed = true;
                }
                Err(e) => tracing::warn!(node = %cluster.id(), error = %e, "a worker's producer did not start"),
            }
        }
        st.place_backlog();
        drop(st);
        if changed {
            work.room.notify_waiters();
        }
    }
}

/// Whether two refs are to the same actor (on this node or a peer).
fn same_actor(a: &ActorRef<ConsumerEndpoint>, b: &ActorRef<ConsumerEndpoint>) -> bool {
    match (a.remote_addr(), b.remote_addr()) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.id() == b.id(),
        _ => false,
    }
}

// ---- into sharded entities ----

/// The prefix of the name a shard's reliable consumer is registered under
/// (followed by the entity type's name, a dot and the shard's number).
pub const SHARD_CONSUMER_PREFIX: &str = "footlight.delivery.shard.";
/// How often a node tries again to take a shard consumer's name that the
/// shard's previous host has not withdrawn yet.
const SHARD_CONSUMER_RETRY: Duration = Duration::from_millis(50);
/// The longest a leave waits for this node's shard consumers to close.
const LEAVE_PATIENCE: Duration = Duration::from_secs(30);

/// The name of the reliable consumer of `shard` of `type_name`.
fn shard_consumer_name(type_name: &str, shard: u32) -> String {
    format!("{SHARD_CONSUMER_PREFIX}{type_name}.{shard}")
}

/// A message for an entity as it travels: the entity's id with it.
#[derive(Serialize)]
struct ForEntityRef<'a, M> {
    entity: &'a str,
    msg: &'a M,
}

/// A message for an entity as a shard's consumer decodes it.
#[derive(Deserialize)]
struct ForEntity<M> {
    entity: String,
    msg: M,
}

impl<A: Actor> crate::Sharding<A> {
    /// Delivers reliable messages of type `M` to the entities this node
    /// hosts ([`Delivered<M>`], with their keys); call it once on every
    /// node that runs this sharding. One message type per entity type (an
    /// enum carries several): a second call is refused
    /// ([`ClusterError::Refused`]), and producers must send that same type.
    /// `window` is how many messages each producer may have in flight to
    /// one shard (at least 1).
    ///
    /// Each shard this node hosts gets a reliable consumer, registered as
    /// `footlight.delivery.shard.<type>.<shard>` while the shard is here:
    /// it hands each message to its entity by ask (activating it), one
    /// message of a shard at a time, in order, and acknowledges once the
    /// entity has handled it. When the shard moves away, its consumer
    /// finishes the message in hand, tells the producers where it stands,
    /// and withdraws; the new host's consumer takes over from there.
    pub fn reliable_consumer<M>(&self, window: u32) -> Result<(), ClusterError>
    where
        A: Handler<Delivered<M>>,
        M: DeserializeOwned + Send + 'static,
    {
        let longest = shard_consumer_name(self.type_name(), crate::sharding::MAX_SHARDS);
        if longest.len() > crate::MAX_NAME_LEN {
            return Err(ClusterError::BadName(self.type_name().to_owned()));
        }
        if let Err(taken) = self.claim_reliable(std::any::type_name::<M>()) {
            return Err(ClusterError::Refused(format!(
                "reliable delivery into {} already carries {taken} on this node (one message type per entity type)",
                self.type_name()
            )));
        }
        // On a leave, the node's shards are handed over and their consumers
        // close (telling their producers) before the others hear of it.
        let (leaving, leave_rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
        self.cluster().shared.before_leave(Box::new(move || {
            let leaving = leaving.clone();
            Box::pin(async move {
                let (done, closed) = oneshot::channel();
                if leaving.send(done).is_ok() {
                    let _ = tokio::time::timeout(LEAVE_PATIENCE, closed).await;
                }
            })
        }));
        tokio::spawn(host_shard_consumers::<A, M>(self.clone(), window.max(1), leave_rx));
        Ok(())
    }

    /// A reliable producer with id `id` sending messages of type `M` to this
    /// type's entities by id (see [`EntityProducer`]). Every node hosting
    /// the type's shards must run [`reliable_consumer::<M>`](Self::reliable_consumer).
    pub fn reliable_producer<M>(&self, id: &str) -> EntityProducerBuilder<A, M>
    where
        A: Handler<Delivered<M>>,
        M: Serialize + Send + 'static,
    {
        EntityProducerBuilder { sharding: self.clone(), id: id.to_owned(), window: DEFAULT_WINDOW, _msg: PhantomData }
    }
}

/// A shard's consumer on this node.
struct ShardConsumer {
    /// Dropped or fired: the consumer closes.
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Keeps one reliable consumer running for each shard this node hosts,
/// until sharding stops here.
async fn host_shard_consumers<A, M>(
    sharding: crate::Sharding<A>,
    window: u32,
    mut leave: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) where
    A: Actor + Handler<Delivered<M>>,
    M: DeserializeOwned + Send + 'static,
{
    let cluster = sharding.cluster().clone();
    let type_name: Arc<str> = sharding.type_name().into();
    let mut hosted = sharding.hosted_shards();
    let mut running: HashMap<u32, ShardConsumer> = HashMap::default();
    // Waiting for this node's shards and their consumers to be gone (a
    // leave).
    let mut leaving: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let want: actor_core::entropy::HashSet<u32> = hosted.borrow_and_update().iter().copied().collect();
        // Gone from here: close (a consumer still closing keeps its slot,
        // so that the shard's name is never taken twice on this node).
        running.retain(|shard, c| {
            if !want.contains(shard) {
                c.stop.take();
            }
            !c.task.is_finished()
        });
        let mut waiting = false;
        for shard in want {
            if running.contains_key(&shard) {
                // Still running, or closing after the shard went away and
                // came back: try again once it has closed.
                waiting |= running.get(&shard).is_some_and(|c| c.stop.is_none());
                continue;
            }
            let reg = shard_consumer_name(&type_name, shard);
            let (stop, stopped) = oneshot::channel();
            let deliver = deliver_to_entity::<A, M>(sharding.clone());
            // A spawned consume task: the join handle tells when it ends.
            match cluster.start_consumer::<ForEntity<M>>(reg, deliver, window, Some(stopped)) {
                Ok((_, task)) => {
                    running.insert(shard, ShardConsumer { stop: Some(stop), task });
                }
                Err(e) => {
                    // The previous host has not withdrawn it yet.
                    tracing::debug!(node = %cluster.id(), entity_type = %type_name, shard, error = %e, "shard consumer not started yet");
                    waiting = true;
                }
            }
        }
        if !leaving.is_empty() && running.is_empty() && hosted.borrow().is_empty() {
            for done in leaving.drain(..) {
                let _ = done.send(());
            }
        }
        // Closing consumers are looked at again shortly (a leave waits for
        // them).
        waiting |= running.values().any(|c| c.stop.is_none());
        tokio::select! {
            () = sharding.stopped() => break,
            changed = hosted.changed() => if changed.is_err() { break },
            Some(done) = leave.recv() => leaving.push(done),
            () = tokio::time::sleep(SHARD_CONSUMER_RETRY), if waiting => {}
        }
    }
    // Sharding stopped here: every consumer closes.
    running.clear();
}

/// Hands a shard consumer's messages to their entities, by ask through
/// this node's region (which activates the entity, and forwards to the
/// shard's new host if it has just moved).
fn deliver_to_entity<A, M>(sharding: crate::Sharding<A>) -> Deliver<ForEntity<M>>
where
    A: Actor + Handler<Delivered<M>>,
    M: Send + 'static,
{
    Box::new(move |delivered: Delivered<ForEntity<M>>| {
        let sharding = sharding.clone();
        Box::pin(async move {
            let Delivered { producer, seq, msg: ForEntity { entity, msg } } = delivered;
            if entity.len() > crate::sharding::MAX_ENTITY_ID_LEN {
                tracing::error!(node = %sharding.cluster().id(), producer = %producer, seq, "reliable message for an entity id that is too long; skipped");
                return Handled::Done;
            }
            let to = sharding.entity_ref(entity);
            match to.ask_timeout(Delivered { producer, seq, msg }, HANDLER_PATIENCE).await {
                Ok(()) => Handled::Done,
                Err(crate::EntityAskError::Stopped) => Handled::Gone,
                Err(e) => Handled::Failed(e.to_string()),
            }
        })
    })
}

/// Starts a reliable producer into sharded entities (see
/// [`Sharding::reliable_producer`](crate::Sharding::reliable_producer)).
pub struct EntityProducerBuilder<A: Actor, M> {
    sharding: crate::Sharding<A>,
    id: String,
    window: u32,
    _msg: PhantomData<fn(M)>,
}

impl<A: Actor, M> fmt::Debug for EntityProducerBuilder<A, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityProducerBuilder").field("id", &self.id).field("window", &self.window).finish()
    }
}

impl<A, M> EntityProducerBuilder<A, M>
where
    A: Actor + Handler<Delivered<M>>,
    M: Serialize + Send + 'static,
{
    /// The most messages in flight to one shard before its consumer's
    /// first grant (default [`DEFAULT_WINDOW`]); after that, the consumer's
    /// grant rules.
    pub fn window(mut self, window: u32) -> Self {
        self.window = window.max(1);
        self
    }

    /// Starts the producer. Refuses an empty or too long id, and a message
    /// type other than the one this node's reliable consumer of the type
    /// takes.
    pub fn start(self) -> Result<EntityProducer<A, M>, ClusterError> {
        if self.id.is_empty() || self.id.len() > MAX_PRODUCER_ID_LEN {
            return Err(ClusterError::BadName(self.id));
        }
        if let Some(taken) = self.sharding.reliable_type()
            && taken != std::any::type_name::<M>()
        {
            return Err(ClusterError::Refused(format!(
                "reliable delivery into {} carries {taken}, not {}",
                self.sharding.type_name(),
                std::any::type_name::<M>()
            )));
        }
        self.sharding.cluster().expose::<ProducerEndpoint>()?;
        Ok(EntityProducer {
            inner: Arc::new(EntityInner {
                id: self.id.into(),
                sharding: self.sharding,
                window: self.window,
                shards: Mutex::new(HashMap::default()),
                room: Arc::new(Notify::new()),
            }),
            _msg: PhantomData,
        })
    }
}

/// Sends messages reliably to sharded entities by id, from any node
/// (Akka's sharding producer controller). Cheap to clone; it stops when
/// the last clone is dropped.
///
/// Messages go to the reliable consumer of the entity's shard, wherever the
/// shard is hosted ([`Sharding::reliable_consumer`](crate::Sharding::reliable_consumer)),
/// numbered per shard: an entity's handler sees a key (this producer's id
/// and that number) that is unique among the messages it gets from this
/// producer and the same on every delivery.
///
/// **What is promised.**
/// - Messages to one entity are handled in the order sent, each once
///   while the entity's shard stays on one node, across lost connections
///   and resends.
/// - When the shard moves (a join or a leave hands it over), its consumer
///   finishes the message in hand and tells this producer where it stands;
///   the rest goes to the new host. Nothing is lost; a message is handled
///   again only if that word is lost on the way (the old host died
///   first), and then with the same key.
/// - When the host's node is lost, what it had not acknowledged goes to
///   the shard's new host once it takes the shard (after the removal
///   margin): at least once, with the same key; make handling idempotent
///   by key where that matters.
/// - Nothing is kept beyond this process: messages not yet acknowledged
///   when the producer's node dies are lost (at most a window per shard).
/// - Flow control is per shard: [`send`](Self::send) waits while the
///   window of the entity's shard is used up, [`try_send`](Self::try_send)
///   refuses with the message handed back. At most `window` messages per
///   shard are kept, so at most `window` × the number of shards in all.
/// - A message whose handler fails every time (it panics) comes again and
///   again, holding up its shard's later messages.
pub struct EntityProducer<A: Actor, M> {
    inner: Arc<EntityInner<A>>,
    _msg: PhantomData<fn(M)>,
}

impl<A: Actor, M> Clone for EntityProducer<A, M> {
    fn clone(&self) -> Self {
        EntityProducer { inner: self.inner.clone(), _msg: PhantomData }
    }
}

impl<A: Actor, M> fmt::Debug for EntityProducer<A, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityProducer").field("id", &self.inner.id).finish()
    }
}

struct EntityInner<A: Actor> {
    id: Arc<str>,
    sharding: crate::Sharding<A>,
    window: u32,
    /// A producer per shard sent to so far.
    shards: Mutex<HashMap<u32, Arc<ProducerInner>>>,
    /// Signalled when any shard's window opens.
    room: Arc<Notify>,
}

impl<A: Actor> EntityInner<A> {
    /// The producer for `shard`, started on first use.
    fn shard(&self, shard: u32) -> Result<Arc<ProducerInner>, ClusterError> {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = shards.get(&shard) {
            return Ok(p.clone());
        }
        let builder = ProducerBuilder::internal(self.sharding.cluster(), &self.id, self.window);
        let find = Find::Name(shard_consumer_name(self.sharding.type_name(), shard));
        let producer = builder.start_with(find, self.room.clone())?;
        shards.insert(shard, producer.clone());
        Ok(producer)
    }

    fn unconfirmed(&self) -> usize {
        self.shards.lock().unwrap_or_else(|p| p.into_inner()).values().map(|p| p.unconfirmed()).sum()
    }
}

impl<A, M> EntityProducer<A, M>
where
    A: Actor + Handler<Delivered<M>>,
    M: Serialize + Send + 'static,
{
    /// The producer's id (the first half of every key it gives).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Messages sent and not yet acknowledged, over every shard.
    pub fn unconfirmed(&self) -> usize {
        self.inner.unconfirmed()
    }

    /// Sends `msg` to entity `entity` if its shard's window allows now;
    /// returns its number (the second half of its key). An id longer than
    /// [`MAX_ENTITY_ID_LEN`](crate::sharding::MAX_ENTITY_ID_LEN) is refused
    /// as [`DeliveryError::Encode`].
    pub fn try_send(&self, entity: &str, msg: M) -> Result<u64, DeliveryError<M>> {
        if entity.len() > crate::sharding::MAX_ENTITY_ID_LEN {
            let why = format!("entity id longer than {} bytes", crate::sharding::MAX_ENTITY_ID_LEN);
            return Err(DeliveryError::Encode(msg, why));
        }
        let bytes = match actor_remote::codec::encode(&ForEntityRef { entity, msg: &msg }) {
            Ok(bytes) => bytes,
            Err(e) => return Err(DeliveryError::Encode(msg, e.to_string())),
        };
        let shard = crate::sharding::shard_of(entity, self.inner.sharding.shards());
        let producer = match self.inner.shard(shard) {
            Ok(producer) => producer,
            Err(e) => return Err(DeliveryError::Encode(msg, e.to_string())),
        };
        producer.try_send_bytes(bytes).map_err(|(refused, _)| refused.with(msg))
    }

    /// Sends `msg` to entity `entity`, waiting while its shard's window is
    /// used up; returns its number.
    pub async fn send(&self, entity: &str, msg: M) -> Result<u64, DeliveryError<M>> {
        send_when_room(&self.inner.room, msg, |msg| self.try_send(entity, msg)).await
    }

    /// Waits until every message sent so far was acknowledged (handled by
    /// its entity).
    pub async fn flush(&self) {
        when_room(&self.inner.room, || (self.inner.unconfirmed() == 0).then_some(())).await;
    }
}
