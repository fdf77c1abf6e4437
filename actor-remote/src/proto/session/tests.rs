//! Two sessions wired back to back, driven by a virtual clock.

use super::*;
use crate::proto::frame::TargetRef;

struct Pair {
    now: Instant,
    a: Session,
    b: Session,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    /// Bytes in flight are dropped while set (a partition).
    cut: bool,
}

impl Pair {
    fn new(a: SessionConfig, b: SessionConfig) -> Self {
        let now = Instant::now();
        let mut pair = Self {
            now,
            a: Session::new(a, now),
            b: Session::new(b, now),
            a_events: vec![],
            b_events: vec![],
            cut: false,
        };
        pair.drive();
        pair
    }

    fn default_pair() -> Self {
        Self::new(SessionConfig::new("c", "a", 1), SessionConfig::new("c", "b", 1))
    }

    /// Moves bytes until neither side has anything to send.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            if let Some(bytes) = self.a.poll_transmit() {
                moved = true;
                if !self.cut {
                    self.b.handle_input(self.now, &bytes);
                }
            }
            if let Some(bytes) = self.b.poll_transmit() {
                moved = true;
                if !self.cut {
                    self.a.handle_input(self.now, &bytes);
                }
            }
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the virtual clock to the next timeout of either side.
    fn step_time(&mut self) {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
        let Some(next) = next else { return };
        self.now = self.now.max(next);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.drive();
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => self.step_time(),
                _ => break,
            }
        }
        self.now = end;
        self.a.handle_timeout(end);
        self.b.handle_timeout(end);
        self.drive();
    }
}

fn tell(name: &str, payload: &[u8]) -> Tell {
    Tell { target: Target::name(name), sender: None, wire_name: "t.M".into(), payload: payload.to_vec(), trace: None }
}

#[test]
fn handshake_establishes_both_sides() {
    let p = Pair::default_pair();
    assert_eq!(
        p.a_events,
        [Event::Established(Peer { node: "b".into(), run: 1, max_frame: frame::DEFAULT_MAX_FRAME })]
    );
    assert!(matches!(&p.b_events[..], [Event::Established(peer)] if peer.node == "a"));
}

#[test]
fn tells_arrive_in_order_including_those_queued_before_the_handshake() {
    let now = Instant::now();
    let mut a = Session::new(SessionConfig::new("c", "a", 1), now);
    let mut b = Session::new(SessionConfig::new("c", "b", 1), now);
    for i in 0..3u8 {
        a.send_tell(now, tell("x", &[i])).unwrap();
    }
    let mut p = Pair {
        now,
        a,
        b: Session::new(SessionConfig::new("c", "b", 1), now),
        a_events: vec![],
        b_events: vec![],
        cut: false,
    };
    std::mem::swap(&mut p.b, &mut b);
    p.drive();
    for i in 3..6u8 {
        p.a.send_tell(p.now, tell("x", &[i])).unwrap();
    }
    p.drive();
    let got: Vec<u8> = p
        .b_events
        .iter()
        .filter_map(|e| match e {
            Event::Tell(t) => Some(t.payload[0]),
            _ => None,
        })
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn ask_reply_correlates_by_id() {
    let mut p = Pair::default_pair();
    let id = p.a.send_ask(p.now, Target::name("x"), None, "t.Q".into(), vec![1], Duration::from_secs(5), None).unwrap();
    p.drive();
    let Some(Event::Ask(ask)) = p.b_events.last().cloned() else { panic!("no ask: {:?}", p.b_events) };
    assert_eq!(ask.id, id);
    assert_eq!(ask.timeout_ms, 5000);
    p.b.send_reply(p.now, ask.id, vec![42]).unwrap();
    p.drive();
    assert_eq!(p.a_events.last(), Some(&Event::Reply { id, payload: vec![42] }));
    assert_eq!(p.a.pending_asks(), 0);
}

#[test]
fn remote_failure_resolves_the_ask() {
    let mut p = Pair::default_pair();
    let id =
        p.a.send_ask(p.now, Target::name("nobody"), None, "t.Q".into(), vec![], Duration::from_secs(5), None).unwrap();
    p.drive();
    p.b.send_failure(p.now, id, FailureCode::ActorNotFound, "no such actor".into()).unwrap();
    p.drive();
    let failure = AskFailure::Remote { code: FailureCode::ActorNotFound, message: "no such actor".into() };
    assert_eq!(p.a_events.last(), Some(&Event::AskFailed { id, failure }));
}

#[test]
fn ask_times_out_once_and_a_late_reply_is_ignored() {
    let mut p = Pair::default_pair();
    let id =
        p.a.send_ask(p.now, Target::name("x"), None, "t.Q".into(), vec![], Duration::from_millis(300), None).unwrap();
    p.drive();
    p.advance(Duration::from_millis(300));
    let timeouts =
        p.a_events.iter().filter(|e| matches!(e, Event::AskFailed { failure: AskFailure::Timeout, .. })).count();
    assert_eq!(timeouts, 1);
    p.b.send_reply(p.now, id, vec![1]).unwrap();
    p.drive();
    assert!(!p.a_events.iter().any(|e| matches!(e, Event::Reply { .. })), "late reply must not resolve the ask again");
}

/// Ask ids are the asker's to keep unique among its pending asks. A
/// receiver does not police them: two asks with one id are both delivered
/// (and both answered); the asker's session takes the first reply for an id
/// and ignores a second.
#[test]
fn a_reused_ask_id_is_delivered_twice_and_the_second_reply_ignored() {
    let mut p = Pair::default_pair();
    p.b_events.clear();
    let ask = |payload: u8| {
        let mut bytes = Vec::new();
        Frame::Ask(frame::Ask {
            id: 9,
            target: Target::name("x"),
            sender: None,
            wire_name: "t.Q".into(),
            payload: vec![payload],
            timeout_ms: 1000,
            trace: None,
        })
        .encode(&mut bytes, frame::DEFAULT_MAX_FRAME)
        .unwrap();
        bytes
    };
    p.b.handle_input(p.now, &ask(1));
    p.b.handle_input(p.now, &ask(2));
    p.drive();
    let asks: Vec<u8> =
        p.b_events.iter().filter_map(|e| if let Event::Ask(a) = e { Some(a.payload[0]) } else { None }).collect();
    assert_eq!(asks, [1, 2]);
    // On the asking side: one pending ask, two replies with its id.
    let id = p.a.send_ask(p.now, Target::name("x"), None, "t.Q".into(), vec![], Duration::from_secs(1), None).unwrap();
    p.drive();
    p.b.send_reply(p.now, id, vec![1]).unwrap();
    p.b.send_reply(p.now, id, vec![2]).unwrap();
    p.drive();
    let replies: Vec<&Event> = p.a_events.iter().filter(|e| matches!(e, Event::Reply { .. })).collect();
    assert!(matches!(replies[..], [Event::Reply { payload, .. }] if payload == &[1]), "{replies:?}");
}

#[test]
fn heartbeats_keep_an_idle_connection_alive() {
    let mut p = Pair::default_pair();
    p.advance(Duration::from_secs(60));
    assert!(!p.a.is_closed() && !p.b.is_closed());
}

#[test]
fn silent_peer_is_lost_within_the_idle_timeout_and_pending_asks_fail() {
    let mut p = Pair::default_pair();
    let id = p.a.send_ask(p.now, Target::name("x"), None, "t.Q".into(), vec![], Duration::from_secs(30), None).unwrap();
    p.drive();
    p.cut = true;
    let cut_at = p.now;
    while !p.a.is_closed() {
        p.step_time();
    }
    assert!(p.now - cut_at <= Duration::from_secs(5), "detected after {:?}", p.now - cut_at);
    let tail = &p.a_events[p.a_events.len() - 2..];
    assert_eq!(tail[0], Event::AskFailed { id, failure: AskFailure::ConnectionLost });
    assert!(matches!(&tail[1], Event::Closed(CloseCause::Local { code: CloseCode::IdleTimeout, .. })));
}

/// A peer that sends a frame one byte a second (and never answers pings)
/// is declared lost once the idle timeout has passed since its last
/// complete frame: partial frames do not count as life, whatever length
/// they declare (here the largest frame the node accepts).
#[test]
fn a_peer_trickling_a_frame_is_lost_after_the_idle_timeout() {
    let mut p = Pair::default_pair();
    let start = p.now;
    let declared = frame::DEFAULT_MAX_FRAME;
    let mut frame = declared.to_be_bytes().to_vec();
    frame.extend(std::iter::repeat_n(0x10u8, 200));
    p.cut = true;
    let mut sent = 0;
    while !p.b.is_closed() && sent < frame.len() {
        p.now += Duration::from_secs(1);
        p.b.handle_input(p.now, &frame[sent..sent + 1]);
        sent += 1;
        p.b.handle_timeout(p.now);
    }
    assert!(p.b.is_closed(), "still open after {sent} bytes");
    let lost_after = p.now - start;
    let idle = SessionConfig::new("c", "b", 1).idle_timeout;
    assert!(lost_after <= idle + Duration::from_secs(1), "lost after {lost_after:?}");
    while let Some(e) = p.b.poll_event() {
        p.b_events.push(e);
    }
    assert!(
        p.b_events.iter().any(|e| matches!(e, Event::Closed(CloseCause::Local { code: CloseCode::IdleTimeout, .. })))
    );
}

/// A large frame arriving at the minimum rate or faster is not mistaken
/// for silence, though it takes longer than the idle timeout.
#[test]
fn a_large_frame_arriving_steadily_is_not_idle() {
    let mut config = SessionConfig::new("c", "b", 1);
    config.max_frame = 4 * 1024 * 1024;
    let mut p = Pair::new(SessionConfig::new("c", "a", 1), config);
    let payload = vec![7u8; 2 * 1024 * 1024];
    let mut frame = Vec::new();
    Frame::Tell(tell("big", &payload)).encode(&mut frame, 4 * 1024 * 1024).unwrap();
    p.cut = true;
    // At twice the minimum rate: 2 MiB over 16 s, well past the 5 s timeout.
    let chunk = (2 * MIN_FRAME_RATE) as usize;
    for part in frame.chunks(chunk) {
        p.now += Duration::from_secs(1);
        p.b.handle_input(p.now, part);
        p.b.handle_timeout(p.now);
        assert!(!p.b.is_closed(), "closed while the frame kept arriving");
    }
    while let Some(e) = p.b.poll_event() {
        p.b_events.push(e);
    }
    assert!(p.b_events.iter().any(|e| matches!(e, Event::Tell(t) if t.target == Target::name("big"))));
}

#[test]
fn handshake_times_out() {
    let now = Instant::now();
    let mut a = Session::new(SessionConfig::new("c", "a", 1), now);
    let _ = a.poll_transmit();
    a.handle_timeout(now + Duration::from_secs(5));
    assert!(a.is_closed());
    assert!(matches!(a.poll_event(), Some(Event::Closed(CloseCause::Local { code: CloseCode::HandshakeTimeout, .. }))));
}

#[test]
fn wrong_cluster_version_or_identity_is_refused() {
    let refused = |a: SessionConfig, b: SessionConfig, code: CloseCode| {
        let p = Pair::new(a, b);
        assert!(p.a.is_closed() && p.b.is_closed());
        // The side that checks (a) never establishes; the other may, briefly,
        // until a's Close arrives.
        assert!(!p.a_events.iter().any(|e| matches!(e, Event::Established(_))), "a never established");
        let codes: Vec<CloseCode> = p
            .a_events
            .iter()
            .chain(&p.b_events)
            .filter_map(|e| match e {
                Event::Closed(CloseCause::Local { code, .. } | CloseCause::Peer { code, .. }) => Some(*code),
                _ => None,
            })
            .collect();
        assert!(codes.contains(&code), "{codes:?}");
    };
    refused(SessionConfig::new("c1", "a", 1), SessionConfig::new("c2", "b", 1), CloseCode::ClusterMismatch);
    let mut liar = SessionConfig::new("c", "a", 1);
    liar.expected_peer = Some("b".into());
    refused(liar, SessionConfig::new("c", "mallory", 1), CloseCode::IdentityMismatch);
    refused(SessionConfig::new("c", "a", 1), SessionConfig::new("c", "a", 2), CloseCode::ProtocolError);

    // A peer speaking another version.
    let now = Instant::now();
    let mut a = Session::new(SessionConfig::new("c", "a", 1), now);
    let mut bytes = Vec::new();
    Frame::Hello(Hello { version: 99, cluster: "c".into(), node: "z".into(), run: 1, max_frame: 1024 })
        .encode(&mut bytes, 1024)
        .unwrap();
    a.handle_input(now, &bytes);
    assert!(a.is_closed());
    let events: Vec<Event> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(matches!(&events[..], [Event::Closed(CloseCause::Local { code: CloseCode::VersionMismatch, .. })]));
}

#[test]
fn oversized_frame_closes_with_frame_too_large_and_is_never_buffered() {
    let now = Instant::now();
    let mut config = SessionConfig::new("c", "a", 1);
    config.max_frame = 1024;
    let mut a = Session::new(config, now);
    let mut hello = Vec::new();
    Frame::Hello(Hello { version: 1, cluster: "c".into(), node: "b".into(), run: 1, max_frame: 1 << 20 })
        .encode(&mut hello, 1 << 20)
        .unwrap();
    a.handle_input(now, &hello);
    // Announce 10 MiB; send only the prefix.
    a.handle_input(now, &(10u32 << 20).to_be_bytes());
    assert!(a.is_closed());
    let events: Vec<Event> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(matches!(events.last(), Some(Event::Closed(CloseCause::Local { code: CloseCode::FrameTooLarge, .. }))));
}

#[test]
fn frames_before_hello_are_a_protocol_error() {
    let now = Instant::now();
    let mut a = Session::new(SessionConfig::new("c", "a", 1), now);
    let mut bytes = Vec::new();
    Frame::Ping(1).encode(&mut bytes, 1024).unwrap();
    a.handle_input(now, &bytes);
    assert!(matches!(a.poll_event(), Some(Event::Closed(CloseCause::Local { code: CloseCode::ProtocolError, .. }))));
}

#[test]
fn pending_ask_limit_rejects_the_next_one() {
    let mut config = SessionConfig::new("c", "a", 1);
    config.max_pending_asks = 2;
    let mut p = Pair::new(config, SessionConfig::new("c", "b", 1));
    for _ in 0..2 {
        p.a.send_ask(p.now, Target::name("x"), None, "q".into(), vec![], Duration::from_secs(5), None).unwrap();
    }
    let err =
        p.a.send_ask(p.now, Target::name("x"), None, "q".into(), vec![], Duration::from_secs(5), None).unwrap_err();
    assert_eq!(err, SendError::TooManyPendingAsks(2));
}

#[test]
fn outbound_limit_pushes_back_until_drained() {
    let mut config = SessionConfig::new("c", "a", 1);
    config.max_outbound_bytes = 1000;
    let mut p = Pair::new(config, SessionConfig::new("c", "b", 1));
    let mut sent = 0;
    while p.a.has_room() {
        p.a.send_tell(p.now, tell("x", &[0; 100])).unwrap();
        sent += 1;
    }
    assert!((1..=10).contains(&sent), "sent {sent}");
    assert_eq!(p.a.send_tell(p.now, tell("x", &[0; 100])), Err(SendError::Full));
    p.drive();
    p.a.send_tell(p.now, tell("x", &[0; 100])).unwrap();
    p.drive();
    let delivered = p.b_events.iter().filter(|e| matches!(e, Event::Tell(_))).count();
    assert_eq!(delivered, sent + 1, "nothing accepted was lost");
}

#[test]
fn orderly_close_is_seen_by_the_peer_and_fails_its_asks() {
    let mut p = Pair::default_pair();
    // a reads the first ask; the second is still on its way when a closes.
    let read = p.b.send_ask(p.now, Target::name("x"), None, "q".into(), vec![], Duration::from_secs(5), None).unwrap();
    p.drive();
    let unread =
        p.b.send_ask(p.now, Target::name("x"), None, "q".into(), vec![], Duration::from_secs(5), None).unwrap();
    p.a.close(p.now, CloseCode::Normal, "bye");
    p.drive();
    assert!(p.b.is_closed());
    // Read, unanswered: it may have been handled. Never read: not handled.
    assert!(p.b_events.contains(&Event::AskFailed { id: read, failure: AskFailure::ConnectionLost }));
    assert!(p.b_events.contains(&Event::AskFailed { id: unread, failure: AskFailure::NotReceived }));
    assert!(matches!(p.b_events.last(), Some(Event::Closed(CloseCause::Peer { code: CloseCode::Normal, .. }))));
    assert_eq!(p.a.send_tell(p.now, tell("x", &[])), Err(SendError::Closed));
}

#[test]
fn an_orderly_close_still_reads_replies_and_the_peers_word_on_unread_asks() {
    let mut p = Pair::default_pair();
    // b asks; a reads it. a asks too; b has not read that one yet.
    let answered =
        p.b.send_ask(p.now, Target::name("x"), None, "q".into(), vec![], Duration::from_secs(5), None).unwrap();
    p.drive();
    let Some(Event::Ask(ask)) = p.a_events.last().cloned() else { panic!("no ask: {:?}", p.a_events) };
    let mine = p.a.send_ask(p.now, Target::name("y"), None, "q".into(), vec![], Duration::from_secs(5), None).unwrap();
    // b closes first (its Close says it read none of a's asks), then a
    // answers b's ask: a is not closed, so the reply goes out.
    p.b.close(p.now, CloseCode::Normal, "bye");
    assert!(p.b.is_closing() && !p.b.is_closed(), "b waits for the peer's word");
    assert_eq!(p.b.send_tell(p.now, tell("x", &[])), Err(SendError::Closed));
    p.a.send_reply(p.now, ask.id, vec![9]).unwrap();
    p.drive();
    // The reply that crossed b's Close reached b; a's ask was never read.
    assert!(p.b_events.contains(&Event::Reply { id: answered, payload: vec![9] }), "{:?}", p.b_events);
    assert!(p.a_events.contains(&Event::AskFailed { id: mine, failure: AskFailure::NotReceived }), "{:?}", p.a_events);
    // a is over; b is once the transport ends (a closes it).
    assert!(p.a.is_closed());
    p.b.handle_lost();
    assert!(p.b.is_closed());
    while let Some(e) = p.b.poll_event() {
        p.b_events.push(e);
    }
    assert!(
        matches!(p.b_events.last(), Some(Event::Closed(CloseCause::Local { code: CloseCode::Normal, .. }))),
        "{:?}",
        p.b_events
    );
}

#[test]
fn an_orderly_close_gives_up_on_a_silent_peer_after_the_grace() {
    let mut p = Pair::default_pair();
    let id = p.a.send_ask(p.now, Target::name("x"), None, "q".into(), vec![], Duration::from_secs(60), None).unwrap();
    p.drive();
    p.cut = true;
    p.a.close(p.now, CloseCode::Normal, "bye");
    p.drive();
    assert!(!p.a.is_closed());
    p.advance(CLOSING_GRACE);
    assert!(p.a.is_closed());
    assert!(p.a_events.contains(&Event::AskFailed { id, failure: AskFailure::ConnectionLost }));
}

#[test]
fn reply_too_large_for_the_peer_becomes_a_rejected_failure() {
    let mut small = SessionConfig::new("c", "a", 1);
    small.max_frame = 256;
    let mut p = Pair::new(small, SessionConfig::new("c", "b", 1));
    let id = p.a.send_ask(p.now, Target::name("x"), None, "q".into(), vec![], Duration::from_secs(5), None).unwrap();
    p.drive();
    assert!(matches!(p.b.send_reply(p.now, id, vec![0; 1000]), Err(SendError::Encode(_))));
    p.drive();
    assert!(matches!(
        p.a_events.last(),
        Some(Event::AskFailed { failure: AskFailure::Remote { code: FailureCode::Rejected, .. }, .. })
    ));
    assert!(!p.a.is_closed(), "the connection survives");
}

/// Tells offered in place come in order; once one is declined, it and every
/// frame behind it become events, so nothing overtakes anything.
#[test]
fn tells_taken_in_place_keep_their_order_with_events() {
    let mut p = Pair::default_pair();
    p.b_events.clear();
    let by_id =
        |i: u8| Tell { target: Target::id(7), sender: None, wire_name: "x".into(), payload: vec![i], trace: None };
    for i in 0..3u8 {
        p.a.send_tell(p.now, by_id(i)).unwrap();
    }
    let id = p.a.send_ask(p.now, Target::id(7), None, "t.Q".into(), vec![3], Duration::from_secs(5), None).unwrap();
    p.a.send_tell(p.now, by_id(4)).unwrap();
    for i in 5..8u8 {
        p.a.send_tell(p.now, by_id(i)).unwrap();
    }
    let bytes = p.a.poll_transmit().unwrap();
    let mut taken = Vec::new();
    // Take the first two; decline the third (a full mailbox).
    p.b.handle_input_with(p.now, &bytes, |tell| {
        assert_eq!((tell.target, tell.wire_name), (TargetRef::Id(7), "x"));
        if taken.len() < 2 {
            taken.push(tell.payload[0]);
            Offer::Taken
        } else {
            Offer::Event
        }
    });
    assert_eq!(taken, [0, 1]);
    let mut rest = Vec::new();
    while let Some(event) = p.b.poll_event() {
        match event {
            Event::Tell(t) => rest.push(t.payload[0]),
            Event::Ask(ask) => {
                assert_eq!(ask.id, id);
                rest.push(ask.payload[0]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rest, [2, 3, 4, 5, 6, 7], "declined tell first, then everything behind it, in order");

    // With the queue drained, tells are offered in place again.
    p.a.send_tell(p.now, by_id(8)).unwrap();
    let bytes = p.a.poll_transmit().unwrap();
    p.b.handle_input_with(p.now, &bytes, |tell| {
        taken.push(tell.payload[0]);
        Offer::Taken
    });
    assert_eq!(taken, [0, 1, 8]);
    assert!(p.b.poll_event().is_none());
}

/// A pause leaves the paused tell and everything after it unread; the next
/// call, even with no new bytes, reads on from there.
#[test]
fn a_paused_input_resumes_where_it_stopped() {
    let mut p = Pair::default_pair();
    p.b_events.clear();
    let by_id =
        |i: u8| Tell { target: Target::id(7), sender: None, wire_name: "x".into(), payload: vec![i], trace: None };
    for i in 0..4u8 {
        p.a.send_tell(p.now, by_id(i)).unwrap();
    }
    let id = p.a.send_ask(p.now, Target::id(7), None, "t.Q".into(), vec![], Duration::from_secs(5), None).unwrap();
    let bytes = p.a.poll_transmit().unwrap();
    let mut taken = Vec::new();
    p.b.handle_input_with(p.now, &bytes, |tell| {
        if tell.payload[0] == 2 {
            return Offer::Pause;
        }
        taken.push(tell.payload[0]);
        Offer::Taken
    });
    assert!(p.b.is_input_paused());
    assert_eq!(taken, [0, 1]);
    assert!(p.b.poll_event().is_none(), "nothing after the pause was read");
    p.b.handle_input_with(p.now, &[], |tell| {
        taken.push(tell.payload[0]);
        Offer::Taken
    });
    assert!(!p.b.is_input_paused());
    assert_eq!(taken, [0, 1, 2, 3]);
    assert!(matches!(p.b.poll_event(), Some(Event::Ask(ask)) if ask.id == id), "then the ask behind them");
}

/// A tell the in-place reader leaves alone (one with a sender) still arrives,
/// as an event.
#[test]
fn tells_with_a_sender_are_events() {
    let mut p = Pair::default_pair();
    p.b_events.clear();
    let sender = Some(frame::ActorAddr { node: "a".into(), run: 1, id: 2 });
    let t = Tell { target: Target::id(7), sender, wire_name: "x".into(), payload: vec![1], trace: None };
    p.a.send_tell(p.now, t.clone()).unwrap();
    let bytes = p.a.poll_transmit().unwrap();
    p.b.handle_input_with(p.now, &bytes, |_| -> Offer { panic!("not readable in place") });
    assert_eq!(p.b.poll_event(), Some(Event::Tell(t)));
}
