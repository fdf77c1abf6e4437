//! One connection's protocol state.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::frame::{
    self, Ask, Close, CloseCode, EncodeError, FailureCode, Frame, FrameReader, Hello, PROTOCOL_VERSION, Reply, Target,
    Tell, TellRef,
};

/// The slowest a frame may arrive (bytes per second) before its sender is
/// declared lost: while a frame arrives, each `MIN_FRAME_RATE` bytes of it
/// received extend the idle timeout by a second, so a frame arriving at
/// least this fast is never taken for silence, and a peer that trickles a
/// frame a byte at a time (whatever length it declares) holds a connection
/// for about the idle timeout, not for ever.
pub const MIN_FRAME_RATE: u64 = 64 * 1024;

/// What becomes of a tell offered in place by
/// [`Session::handle_input_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Done with: delivered, kept by the driver, or dropped.
    Taken,
    /// Not in place: it becomes an [`Event::Tell`], and so does every frame
    /// behind it while events wait.
    Event,
    /// Not now: it and every frame after it stay buffered, unread, until the
    /// next call.
    Pause,
}

/// Limits and timings of a session. Every limit is explicit; the defaults are
/// documented on each field and in PROTOCOL.md.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The cluster name; a peer with another one is refused.
    pub cluster: String,
    /// This node's id.
    pub node: String,
    /// This node's run (new at every start).
    pub run: u64,
    /// The largest frame accepted from the peer. Default 1 MiB, at most 16 MiB.
    pub max_frame: u32,
    /// Time allowed for the peer's `Hello`. Default 5 s.
    pub handshake_timeout: Duration,
    /// A `Ping` is sent when nothing was sent for this long. Default 1 s.
    pub heartbeat_interval: Duration,
    /// The peer is declared lost when no complete frame was received for
    /// this long (partial frames do not count: a peer that trickles bytes
    /// is not alive), extended while a frame is arriving by the time what
    /// arrived of it takes at [`MIN_FRAME_RATE`]. Default 5 s: the
    /// node-loss detection budget.
    pub idle_timeout: Duration,
    /// Asks awaiting a reply from the peer; one more is refused. Default 10 000.
    pub max_pending_asks: usize,
    /// Encoded bytes waiting for the transport (plus frames queued before the
    /// handshake, counted by their encoded size); once reached, data frames
    /// are refused with [`SendError::Full`] (the buffer can exceed it by at
    /// most one frame). Default 4 MiB.
    pub max_outbound_bytes: usize,
    /// The peer's node id as authenticated by the transport (its TLS
    /// certificate); a `Hello` claiming another id is refused.
    pub expected_peer: Option<String>,
}

impl SessionConfig {
    /// Defaults for a node `node` (run `run`) of `cluster`.
    pub fn new(cluster: impl Into<String>, node: impl Into<String>, run: u64) -> Self {
        Self {
            cluster: cluster.into(),
            node: node.into(),
            run,
            max_frame: frame::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            max_pending_asks: 10_000,
            max_outbound_bytes: 4 * 1024 * 1024,
            expected_peer: None,
        }
    }
}

/// The peer, as its `Hello` introduced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub node: String,
    /// Its run.
    pub run: u64,
    /// The largest frame it accepts.
    pub max_frame: u32,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake succeeded.
    Established(Peer),
    /// A one-way message for a local actor.
    Tell(Tell),
    /// A request for a local actor; answer with [`Session::send_reply`] or
    /// [`Session::send_failure`].
    Ask(Ask),
    /// The reply to one of our asks.
    Reply {
        /// The ask's id.
        id: u64,
        /// The encoded reply.
        payload: Vec<u8>,
    },
    /// One of our asks ended without a reply.
    AskFailed {
        /// The ask's id.
        id: u64,
        /// Why.
        failure: AskFailure,
    },
    /// The peer wants to know when one of our actors stops.
    Watch(frame::Watch),
    /// The peer cancels a watch.
    Unwatch(frame::Watch),
    /// One of the peer's actors that we watch stopped.
    Terminated(frame::Terminated),
    /// One of the peer's actors linked itself to one of ours.
    Link(frame::Link),
    /// The peer removes a link.
    Unlink(frame::Link),
    /// One of the peer's actors linked to one of ours exited.
    Exit(frame::Exit),
    /// The session is over; nothing more will come. Pending asks have been
    /// failed (as `AskFailed` events before this one).
    Closed(CloseCause),
}

/// Why an ask of ours produced no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskFailure {
    /// The peer answered with a failure.
    Remote {
        /// Its code.
        code: FailureCode,
        /// Its detail.
        message: String,
    },
    /// No answer before the ask's deadline.
    Timeout,
    /// The connection ended first: the peer is gone, or unreachable. The
    /// ask may have been handled.
    ConnectionLost,
    /// The peer closed the connection before it read the ask (its `Close`
    /// said so): it was not handled.
    NotReceived,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// This side closed it.
    Local {
        /// The code sent.
        code: CloseCode,
        /// The reason sent.
        reason: String,
    },
    /// The peer closed it.
    Peer {
        /// The code received.
        code: CloseCode,
        /// The reason received.
        reason: String,
    },
    /// The transport went away without a `Close`.
    Lost,
}

/// A frame the session would not send.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The session is closed.
    #[error("the session is closed")]
    Closed,
    /// The outbound buffer is at its limit: wait for the transport to drain it.
    #[error("the outbound buffer is full")]
    Full,
    /// Too many asks await a reply from this peer.
    #[error("too many pending asks ({0})")]
    TooManyPendingAsks(usize),
    /// The frame cannot be encoded within the peer's limit.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Frames encoded by the driver need an established session.
    #[error("the handshake is not done")]
    NotEstablished,
}

enum State {
    Handshaking {
        deadline: Instant,
    },
    Established(Peer),
    /// This side sent an orderly `Close`: replies to its asks, and the
    /// peer's `Close` (which names the asks it read), are still read until
    /// `until`; nothing else is.
    Closing {
        peer: Peer,
        until: Instant,
        cause: CloseCause,
    },
    Closed,
}

/// How long an orderly close waits for the peer's replies and its `Close`
/// (which says which pending asks it never read) before the asks still
/// pending fail as lost.
pub const CLOSING_GRACE: Duration = Duration::from_secs(1);

/// The protocol state of one connection, fed bytes and time by a driver.
///
/// Calling order: construct, then after every `handle_*` or `send_*` call,
/// drain [`poll_transmit`](Self::poll_transmit) and
/// [`poll_event`](Self::poll_event), and re-arm the timer from
/// [`poll_timeout`](Self::poll_timeout).
pub struct Session {
    config: SessionConfig,
    state: State,
    reader: FrameReader,
    /// Input parsing stopped at [`Offer::Pause`].
    paused: bool,
    /// Encoded bytes for the transport.
    tx: Vec<u8>,
    /// Frames queued before the handshake, with their encoded size.
    early: VecDeque<(Frame, usize)>,
    early_bytes: usize,
    events: VecDeque<Event>,
    pending: HashMap<u64, Instant>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_ask: u64,
    /// The highest ask id read from the peer (0: none), sent in `Close`.
    last_ask_in: u64,
    next_ping: u64,
    /// The last `Ping` sent and when, until its `Pong` comes.
    ping_out: Option<(u64, Instant)>,
    /// When the last `Ping` went out.
    last_ping: Instant,
    /// The round trip of the last `Ping` answered.
    rtt: Option<Duration>,
    /// Complete frames read from the peer, and frames queued for it.
    frames_in: u64,
    frames_out: u64,
    last_rx: Instant,
    /// When bytes last arrived, a whole frame or not.
    last_bytes: Instant,
    last_tx: Instant,
}

impl Session {
    /// A new session; its `Hello` is queued for transmission at once.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let mut session = Self {
            state: State::Handshaking { deadline: later(now, config.handshake_timeout) },
            reader: FrameReader::new(config.max_frame),
            paused: false,
            tx: Vec::new(),
            early: VecDeque::new(),
            early_bytes: 0,
            events: VecDeque::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_ask: 1,
            last_ask_in: 0,
            next_ping: 1,
            ping_out: None,
            last_ping: now,
            rtt: None,
            frames_in: 0,
            frames_out: 0,
            last_rx: now,
            last_bytes: now,
            last_tx: now,
            config,
        };
        let hello = Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            cluster: session.config.cluster.clone(),
            node: session.config.node.clone(),
            run: session.config.run,
            max_frame: session.reader.max_frame(),
        });
        // A Hello is tiny; it only fails to encode if the names are absurd.
        if let Err(e) = hello.encode(&mut session.tx, frame::HARD_MAX_FRAME) {
            session.close_with(now, CloseCode::ProtocolError, format!("cannot encode hello: {e}"));
        }
        session
    }

    /// The peer, once the handshake is done.
    pub fn peer(&self) -> Option<&Peer> {
        match &self.state {
            State::Established(peer) | State::Closing { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// This side's node id and run.
    pub fn local(&self) -> (&str, u64) {
        (&self.config.node, self.config.run)
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether this side has closed (the session may still read replies to
    /// its asks and the peer's `Close`), or the session is over: nothing
    /// more can be sent.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing { .. } | State::Closed)
    }

    /// Whether a data frame would be accepted now (the outbound buffer is
    /// under its limit); frames are refused with [`SendError::Full`] otherwise.
    pub fn has_room(&self) -> bool {
        !self.is_closing() && self.tx.len() + self.early_bytes < self.config.max_outbound_bytes
    }

    /// Encoded bytes waiting for the transport.
    pub fn outbound_len(&self) -> usize {
        self.tx.len()
    }

    /// Restarts the idle clock: the driver stopped reading on purpose
    /// (backpressure from local actors), so the silence is not the peer's.
    pub fn defer_idle(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    /// The interval of heartbeats: a live peer sends at least one frame this
    /// often.
    pub fn heartbeat_interval(&self) -> Duration {
        self.config.heartbeat_interval
    }

    /// When the peer was last heard from: the later of its last complete
    /// frame, its last bytes (a large frame arriving), and the last time
    /// the driver stopped reading on purpose ([`defer_idle`](Self::defer_idle)).
    pub fn last_heard(&self) -> Instant {
        self.last_rx.max(self.last_bytes)
    }

    /// The round trip of the last heartbeat the peer answered (`Ping` to
    /// `Pong`; heartbeats go out when nothing else was sent for the
    /// heartbeat interval, and at least every five intervals), if one was.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Complete frames read from the peer, and frames queued for it, so
    /// far.
    pub fn frames(&self) -> (u64, u64) {
        (self.frames_in, self.frames_out)
    }

    /// How often a busy connection sends a `Ping` anyway (for the round
    /// trip): five heartbeat intervals.
    fn rtt_probe_every(&self) -> Duration {
        self.config.heartbeat_interval.saturating_mul(5)
    }

    /// Asks awaiting a reply.
    pub fn pending_asks(&self) -> usize {
        self.pending.len()
    }

    // ------------------------------------------------------------ inputs

    /// Bytes received from the transport.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.handle_input_with(now, bytes, |_| Offer::Event);
    }

    /// [`handle_input`](Self::handle_input), offering each tell to `take` in
    /// place, borrowed from the input, while no event waits ahead of it;
    /// `take` says what becomes of it ([`Offer`]). Once a tell becomes an
    /// event, every frame behind it does too while events wait, so events
    /// keep their order. After [`Offer::Pause`], the paused tell and what
    /// follows stay buffered ([`is_input_paused`](Self::is_input_paused))
    /// until the next call, which may pass no bytes to resume.
    pub fn handle_input_with(&mut self, now: Instant, bytes: &[u8], mut take: impl FnMut(TellRef<'_>) -> Offer) {
        self.paused = false;
        if self.is_closed() {
            return;
        }
        if !bytes.is_empty() {
            self.last_bytes = now;
            self.reader.extend(bytes);
        }
        loop {
            let in_place = self.events.is_empty() && matches!(self.state, State::Established(_));
            let frame = match self.reader.next_raw() {
                Ok(Some(raw)) => {
                    // Only a complete frame shows the peer is alive.
                    self.last_rx = now;
                    self.frames_in += 1;
                    if let (true, Some((&frame::kind::TELL, body))) = (in_place, raw.split_first())
                        && let Some(tell) = TellRef::decode(body)
                    {
                        match take(tell) {
                            Offer::Taken => continue,
                            Offer::Pause => {
                                // Read again later: counted then.
                                self.frames_in -= 1;
                                self.reader.unread();
                                self.paused = true;
                                return;
                            }
                            Offer::Event => {}
                        }
                    }
                    Frame::decode(raw)
                }
                Ok(None) => return,
                Err(e) => Err(e),
            };
            match frame {
                Ok(frame) => {
                    self.on_frame(now, frame);
                    if self.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(peer = ?self.peer_name(), error = %e, "bad frame; closing the connection");
                    self.close_with(now, e.close_code(), e.to_string());
                    return;
                }
            }
        }
    }

    /// Whether the last [`handle_input_with`](Self::handle_input_with)
    /// stopped at [`Offer::Pause`] with frames left unread. A driver stops
    /// reading the transport meanwhile, which keeps the buffer bounded.
    pub fn is_input_paused(&self) -> bool {
        self.paused
    }

    /// Time has passed: heartbeats, handshake and ask deadlines, idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Closed => return,
            State::Closing { until, .. } => {
                if now >= *until {
                    self.end_closing(None);
                } else {
                    self.expire_asks(now);
                }
                return;
            }
            State::Handshaking { deadline } if now >= *deadline => {
                self.close_with(now, CloseCode::HandshakeTimeout, "no hello in time".into());
                return;
            }
            _ => {}
        }
        if now >= self.idle_deadline() {
            self.close_with(
                now,
                CloseCode::IdleTimeout,
                format!("nothing received for {:?}", self.config.idle_timeout),
            );
            return;
        }
        self.expire_asks(now);
        // A heartbeat when nothing else went out for a while, and on a busy
        // connection now and then, to keep the round trip current.
        if matches!(self.state, State::Established(_))
            && (now.saturating_duration_since(self.last_tx) >= self.config.heartbeat_interval
                || now.saturating_duration_since(self.last_ping) >= self.rtt_probe_every())
        {
            let nonce = self.next_ping;
            self.next_ping += 1;
            self.push_now(now, &Frame::Ping(nonce));
            // The oldest unanswered one is timed (a round trip longer than
            // the interval is still measured), unless its Pong was lost.
            if self.ping_out.is_none_or(|(_, at)| now.saturating_duration_since(at) > PING_LOST) {
                self.ping_out = Some((nonce, now));
            }
            self.last_ping = now;
        }
    }

    /// The transport went away without a `Close` frame.
    pub fn handle_lost(&mut self) {
        match &self.state {
            State::Closed => {}
            // The peer ended the transport after this side's `Close`.
            State::Closing { .. } => self.end_closing(None),
            _ => self.finish(CloseCause::Lost),
        }
    }

    // ------------------------------------------------------------ sends

    /// Sends a one-way message. Queued if the handshake is not done yet.
    pub fn send_tell(&mut self, now: Instant, tell: Tell) -> Result<(), SendError> {
        self.send(now, Frame::Tell(tell))
    }

    /// Queues frames the driver encoded itself (whole frames within the
    /// peer's limit, e.g. from [`frame::encode_tell_frame`] with
    /// [`Peer::max_frame`]), as they are. Only once established; like
    /// replies, not held back by the outbound limit, so check
    /// [`has_room`](Self::has_room) first.
    pub fn send_encoded(&mut self, now: Instant, frames: &[u8]) -> Result<(), SendError> {
        match &self.state {
            State::Established(_) => {
                self.tx.extend_from_slice(frames);
                self.frames_out += count_frames(frames);
                self.last_tx = now;
                Ok(())
            }
            State::Handshaking { .. } => Err(SendError::NotEstablished),
            State::Closing { .. } | State::Closed => Err(SendError::Closed),
        }
    }

    /// Sends a request; its reply or failure comes back as an event with the
    /// returned id. `deadline` bounds the wait.
    // One argument per field of the frame, as `send_tell` takes a frame's
    // worth.
    #[allow(clippy::too_many_arguments)]
    pub fn send_ask(
        &mut self,
        now: Instant,
        target: Target,
        sender: Option<frame::ActorAddr>,
        wire_name: Cow<'static, str>,
        payload: Vec<u8>,
        timeout: Duration,
        trace: Option<String>,
    ) -> Result<u64, SendError> {
        if self.pending.len() >= self.config.max_pending_asks {
            return Err(SendError::TooManyPendingAsks(self.pending.len()));
        }
        let id = self.next_ask;
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        self.send(now, Frame::Ask(Ask { id, target, sender, wire_name, payload, timeout_ms, trace }))?;
        self.next_ask += 1;
        let deadline = later(now, timeout);
        self.pending.insert(id, deadline);
        self.deadlines.insert((deadline, id));
        Ok(id)
    }

    /// Answers an ask of the peer's. Replies are not held back by the
    /// outbound limit: they answer work already accepted, and the asker's
    /// pending-ask limit bounds them.
    pub fn send_reply(&mut self, now: Instant, id: u64, payload: Vec<u8>) -> Result<(), SendError> {
        match self.send_unlimited(now, Frame::Reply(Reply { id, payload })) {
            // A reply too large for the peer still owes the asker an answer.
            Err(SendError::Encode(e)) => {
                self.send_failure(now, id, FailureCode::Rejected, e.to_string())?;
                Err(SendError::Encode(e))
            }
            other => other,
        }
    }

    /// Tells the peer its ask failed (not held back by the outbound limit).
    pub fn send_failure(&mut self, now: Instant, id: u64, code: FailureCode, message: String) -> Result<(), SendError> {
        self.send_unlimited(now, Frame::Failure(frame::Failure { id, code: code.to_u16(), message }))
    }

    /// Asks the peer to report when its actor `target` stops.
    pub fn send_watch(&mut self, now: Instant, watch: frame::Watch) -> Result<(), SendError> {
        self.send_unlimited(now, Frame::Watch(watch))
    }

    /// Cancels a watch.
    pub fn send_unwatch(&mut self, now: Instant, watch: frame::Watch) -> Result<(), SendError> {
        self.send_unlimited(now, Frame::Unwatch(watch))
    }

    /// Reports that a watched actor stopped.
    pub fn send_terminated(&mut self, now: Instant, terminated: frame::Terminated) -> Result<(), SendError> {
        self.send_unlimited(now, Frame::Terminated(terminated))
    }

    /// Links one of our actors to one of the peer's.
    pub fn send_link(&mut self, now: Instant, link: frame::Link) -> Result<(), SendError> {
        self.send_unlimited(now, Frame::Link(link))
    }

    /// Removes a link.
    pub fn send_unlink(&mut self, now: Instant, link: frame::Link) -> Result<(), SendError> {
        self.send_unlimited(now, Frame::Unlink(link))
    }

    /// Reports that one of our actors, linked to one of the peer's, exited.
    pub fn send_exit(&mut self, now: Instant, exit: frame::Exit) -> Result<(), SendError> {
        self.send_unlimited(now, Frame::Exit(exit))
    }

    /// Closes the session with `code`; the `Close` frame is the last thing
    /// [`poll_transmit`](Self::poll_transmit) returns. An orderly close
    /// ([`CloseCode::Normal`]) of an established session, with a peer heard
    /// from within two heartbeat intervals, then waits up to
    /// [`CLOSING_GRACE`] for replies to pending asks and the peer's `Close`
    /// (or the transport's end): asks the peer says it never read fail as
    /// [`AskFailure::NotReceived`]. Nothing else is read meanwhile, and
    /// nothing more can be sent ([`is_closing`](Self::is_closing)).
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: impl Into<String>) {
        if !self.is_closing() {
            self.close_with(now, code, reason.into());
        }
    }

    // ------------------------------------------------------------ outputs

    /// Bytes to write to the transport, all frames since the last call
    /// coalesced into one buffer.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.tx.is_empty() { None } else { Some(std::mem::take(&mut self.tx)) }
    }

    /// Moves the bytes to write to the end of `out`; returns whether there
    /// were any. When `out` is empty the two buffers are swapped, so a driver
    /// that keeps one buffer for writing reuses both allocations and copies
    /// nothing.
    pub fn transmit_into(&mut self, out: &mut Vec<u8>) -> bool {
        if self.tx.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.extend_from_slice(&self.tx);
            self.tx.clear();
        }
        true
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle_deadline();
        match &self.state {
            State::Closed => None,
            State::Closing { until, .. } => Some(self.deadlines.first().map_or(*until, |&(d, _)| d.min(*until))),
            State::Handshaking { deadline } => Some((*deadline).min(idle)),
            State::Established(_) => {
                let mut next = idle
                    .min(later(self.last_tx, self.config.heartbeat_interval))
                    .min(later(self.last_ping, self.rtt_probe_every()));
                if let Some(&(deadline, _)) = self.deadlines.first() {
                    next = next.min(deadline);
                }
                Some(next)
            }
        }
    }

    // ------------------------------------------------------------ internals

    /// Fails the asks whose deadline has passed.
    fn expire_asks(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if self.pending.remove(&id).is_some() {
                self.events.push_back(Event::AskFailed { id, failure: AskFailure::Timeout });
            }
        }
    }

    /// When the peer is declared lost unless a frame completes: the idle
    /// timeout after the last complete frame, plus, while a frame is
    /// arriving, the time what arrived of it takes at [`MIN_FRAME_RATE`].
    fn idle_deadline(&self) -> Instant {
        let arriving = self
            .reader
            .partial()
            .map_or(Duration::ZERO, |len| Duration::from_secs_f64(len as f64 / MIN_FRAME_RATE as f64));
        later(self.last_rx, self.config.idle_timeout.saturating_add(arriving))
    }

    fn peer_name(&self) -> Option<&str> {
        self.peer().map(|p| p.node.as_str())
    }

    fn send(&mut self, now: Instant, frame: Frame) -> Result<(), SendError> {
        match &self.state {
            State::Closing { .. } | State::Closed => Err(SendError::Closed),
            State::Handshaking { .. } => {
                if self.tx.len() + self.early_bytes >= self.config.max_outbound_bytes {
                    return Err(SendError::Full);
                }
                let mut probe = Vec::new();
                frame.encode(&mut probe, frame::HARD_MAX_FRAME)?;
                self.early_bytes += probe.len();
                self.early.push_back((frame, probe.len()));
                Ok(())
            }
            State::Established(peer) => {
                // Checked before the frame is added, exactly as `has_room`
                // reports: the buffer may end up one frame over the limit.
                if self.tx.len() >= self.config.max_outbound_bytes {
                    return Err(SendError::Full);
                }
                let max = peer.max_frame;
                frame.encode(&mut self.tx, max)?;
                self.frames_out += 1;
                self.last_tx = now;
                Ok(())
            }
        }
    }

    /// Sends a frame that the outbound limit must not refuse.
    fn send_unlimited(&mut self, now: Instant, frame: Frame) -> Result<(), SendError> {
        match &self.state {
            State::Established(peer) => {
                frame.encode(&mut self.tx, peer.max_frame)?;
                self.frames_out += 1;
                self.last_tx = now;
                Ok(())
            }
            _ => self.send(now, frame),
        }
    }

    /// Queues a control frame, ignoring the outbound limit (they are tiny and
    /// must not be starved by data).
    fn push_now(&mut self, now: Instant, frame: &Frame) {
        if let Err(e) = frame.encode(&mut self.tx, frame::HARD_MAX_FRAME) {
            tracing::error!(error = %e, "control frame failed to encode");
        } else {
            self.frames_out += 1;
        }
        self.last_tx = now;
    }

    fn on_frame(&mut self, now: Instant, frame: Frame) {
        match (&self.state, frame) {
            (State::Closing { .. }, Frame::Close(close)) => self.end_closing(close.last_ask),
            (_, Frame::Close(close)) => {
                let cause = CloseCause::Peer { code: CloseCode::from_u16(close.code), reason: close.reason };
                self.finish_after(cause, close.last_ask);
            }
            // Also after this side's `Close`: replies to its asks, and the
            // ends of the peer's actors it holds refs to or is linked with.
            (State::Established(_) | State::Closing { .. }, Frame::Reply(reply)) => {
                if self.pending.remove(&reply.id).is_some() {
                    self.events.push_back(Event::Reply { id: reply.id, payload: reply.payload });
                } else {
                    tracing::debug!(id = reply.id, "reply to an ask no longer pending (late or unknown)");
                }
            }
            (State::Established(_) | State::Closing { .. }, Frame::Failure(f)) => {
                if self.pending.remove(&f.id).is_some() {
                    let failure = AskFailure::Remote { code: FailureCode::from_u16(f.code), message: f.message };
                    self.events.push_back(Event::AskFailed { id: f.id, failure });
                }
            }
            (State::Established(_) | State::Closing { .. }, Frame::Terminated(t)) => {
                self.events.push_back(Event::Terminated(t));
            }
            (State::Established(_) | State::Closing { .. }, Frame::Exit(e)) => self.events.push_back(Event::Exit(e)),
            // Closed by this side: nothing else is read (the `Close` sent
            // named the last ask read).
            (State::Closing { .. }, _) => {}
            (State::Handshaking { .. }, Frame::Hello(hello)) => self.on_hello(now, hello),
            (State::Handshaking { .. }, other) => {
                self.close_with(now, CloseCode::ProtocolError, format!("frame {:#04x} before hello", other.kind()));
            }
            (State::Established(_), Frame::Hello(_)) => {
                self.close_with(now, CloseCode::ProtocolError, "second hello".into());
            }
            (State::Established(_), Frame::Ping(nonce)) => self.push_now(now, &Frame::Pong(nonce)),
            (State::Established(_), Frame::Pong(nonce)) => {
                // A round trip through the peer's session (heartbeats go
                // out when nothing else did for a while).
                if let Some((sent, at)) = self.ping_out
                    && sent == nonce
                {
                    self.rtt = Some(now.saturating_duration_since(at));
                    self.ping_out = None;
                }
            }
            (State::Established(_), Frame::Tell(tell)) => self.events.push_back(Event::Tell(tell)),
            (State::Established(_), Frame::Ask(ask)) => {
                self.last_ask_in = self.last_ask_in.max(ask.id);
                self.events.push_back(Event::Ask(ask));
            }
            (State::Established(_), Frame::Watch(w)) => self.events.push_back(Event::Watch(w)),
            (State::Established(_), Frame::Unwatch(w)) => self.events.push_back(Event::Unwatch(w)),
            (State::Established(_), Frame::Link(l)) => self.events.push_back(Event::Link(l)),
            (State::Established(_), Frame::Unlink(l)) => self.events.push_back(Event::Unlink(l)),
            (State::Closed, _) => {}
        }
    }

    fn on_hello(&mut self, now: Instant, hello: Hello) {
        let refusal = if hello.version != PROTOCOL_VERSION {
            Some((CloseCode::VersionMismatch, format!("version {} is not {PROTOCOL_VERSION}", hello.version)))
        } else if hello.cluster != self.config.cluster {
            Some((CloseCode::ClusterMismatch, format!("cluster {:?} is not {:?}", hello.cluster, self.config.cluster)))
        } else if self.config.expected_peer.as_ref().is_some_and(|id| *id != hello.node) {
            Some((CloseCode::IdentityMismatch, format!("hello claims {:?}, certificate says otherwise", hello.node)))
        } else if hello.node == self.config.node {
            Some((CloseCode::ProtocolError, "connected to itself".into()))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            if code == CloseCode::ProtocolError {
                // Dialed itself (a seed name that resolves to this node too):
                // nothing for an operator to act on.
                tracing::debug!(peer = %hello.node, %reason, "handshake refused");
            } else {
                tracing::warn!(peer = %hello.node, %reason, "handshake refused");
            }
            self.close_with(now, code, reason);
            return;
        }
        let peer =
            Peer { node: hello.node, run: hello.run, max_frame: hello.max_frame.clamp(64, frame::HARD_MAX_FRAME) };
        self.state = State::Established(peer.clone());
        self.events.push_back(Event::Established(peer));
        self.early_bytes = 0;
        while let Some((frame, _)) = self.early.pop_front() {
            // Queued frames were checked against the hard limit only; one over
            // the peer's limit is refused, and an ask among them fails now.
            let ask_id = match &frame {
                Frame::Ask(ask) => Some(ask.id),
                _ => None,
            };
            if let Err(e) = self.send_unlimited(now, frame) {
                tracing::warn!(error = %e, "frame queued before the handshake could not be sent");
                if let Some(id) = ask_id.filter(|id| self.pending.remove(id).is_some()) {
                    let failure = AskFailure::Remote { code: FailureCode::Rejected, message: e.to_string() };
                    self.events.push_back(Event::AskFailed { id, failure });
                }
            }
        }
    }

    fn close_with(&mut self, now: Instant, code: CloseCode, reason: String) {
        if matches!(self.state, State::Closing { .. }) {
            // Already closed by this side; only the grace is cut short.
            self.finish(CloseCause::Local { code, reason });
            return;
        }
        if !matches!(self.state, State::Closed) {
            // Asks read so far are named: the rest never will be.
            let close = Close { code: code.to_u16(), reason: reason.clone(), last_ask: Some(self.last_ask_in) };
            self.push_now(now, &Frame::Close(close));
        }
        // An orderly close waits a little for replies and the peer's word
        // on which asks it read, from a peer heard from lately (one silent
        // for two heartbeats is not waited for: it is likely gone).
        if code == CloseCode::Normal
            && now.saturating_duration_since(self.last_rx) < 2 * self.config.heartbeat_interval
            && let State::Established(peer) = &self.state
        {
            let peer = peer.clone();
            let cause = CloseCause::Local { code, reason };
            self.state = State::Closing { peer, until: later(now, CLOSING_GRACE), cause };
            return;
        }
        self.finish(CloseCause::Local { code, reason });
    }

    /// Ends a session this side closed (its cause is that close); see
    /// [`finish_after`](Self::finish_after) for `peer_read`.
    fn end_closing(&mut self, peer_read: Option<u64>) {
        if let State::Closing { cause, .. } = std::mem::replace(&mut self.state, State::Closed) {
            self.finish_after(cause, peer_read);
        }
    }

    fn finish(&mut self, cause: CloseCause) {
        self.finish_after(cause, None);
    }

    /// Ends the session; `peer_read` is the highest ask id the peer said it
    /// read, if it said: pending asks past it were not handled.
    fn finish_after(&mut self, cause: CloseCause, peer_read: Option<u64>) {
        self.state = State::Closed;
        self.early.clear();
        self.early_bytes = 0;
        let mut ids: Vec<u64> = self.pending.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        self.deadlines.clear();
        for id in ids {
            let failure = match peer_read {
                Some(read) if id > read => AskFailure::NotReceived,
                _ => AskFailure::ConnectionLost,
            };
            self.events.push_back(Event::AskFailed { id, failure });
        }
        self.events.push_back(Event::Closed(cause));
    }
}

/// A `Ping` unanswered for this long is taken as lost (another is timed).
const PING_LOST: Duration = Duration::from_secs(30);

/// How many whole frames `bytes` holds (length prefixes walked).
fn count_frames(bytes: &[u8]) -> u64 {
    let (mut at, mut n) = (0, 0);
    while let Some(prefix) = bytes.get(at..at + frame::LENGTH_PREFIX) {
        let mut len = [0u8; 4];
        len.copy_from_slice(prefix);
        at += frame::LENGTH_PREFIX + u32::from_be_bytes(len) as usize;
        n += 1;
    }
    n
}

/// `at + by`, saturating about a century ahead instead of overflowing (a
/// caller may pass `Duration::MAX` as a timeout).
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by).or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 86_400))).unwrap_or(at)
}

#[cfg(test)]
mod tests;
