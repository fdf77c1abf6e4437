//! Arbitrary bytes from a peer never panic the decoders, never make them
//! buffer more than the frame limit allows, and valid frames survive any
//! chunking.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use actor_remote::proto::frame::{self, ActorAddr, Frame, FrameReader, Target, Tell, TellRef};
use actor_remote::proto::{Event, Session, SessionConfig};
use proptest::prelude::*;

const MAX: u32 = 4096;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn reader_never_panics_and_stays_bounded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..20)) {
        let mut reader = FrameReader::new(MAX);
        'feed: for chunk in &chunks {
            reader.extend(chunk);
            loop {
                match reader.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            // Whatever is buffered is at most one incomplete frame (prefix
            // included) plus the chunk that just arrived.
            prop_assert!(reader.buffered() <= MAX as usize + frame::LENGTH_PREFIX + chunk.len());
        }
    }

    #[test]
    fn frame_decode_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Frame::decode(&body);
    }

    #[test]
    fn tell_read_in_place_never_panics_and_agrees_with_the_full_decoder(
        target in prop_oneof![any::<u64>().prop_map(Target::Id), "[a-z]{0,40}".prop_map(Target::Name)],
        wire_name in "[a-z.]{0,40}",
        payload in prop::collection::vec(any::<u8>(), 0..80),
        // Damage a valid body: overwrite some bytes, then cut it short.
        hits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        keep in any::<prop::sample::Index>(),
        cut in any::<bool>(),
    ) {
        let tell = Tell { target, sender: None, wire_name: wire_name.into(), payload, trace: None };
        let mut body = rmp_serde::to_vec(&tell).unwrap();
        for (at, byte) in hits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if cut {
            body.truncate(keep.index(body.len() + 1));
        }
        if let Some(read) = TellRef::decode(&body) {
            // Whatever the in-place reader accepts, the full decoder reads
            // the same way.
            let mut raw = vec![frame::kind::TELL];
            raw.extend_from_slice(&body);
            prop_assert_eq!(Frame::decode(&raw), Ok(Frame::Tell(Tell::from(read))));
        }
    }

    #[test]
    fn tell_read_in_place_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = TellRef::decode(&body);
        let mut with_header = vec![0x94, 0x92];
        with_header.extend_from_slice(&body);
        let _ = TellRef::decode(&with_header);
    }

    #[test]
    fn tells_without_sender_are_read_in_place(
        target in prop_oneof![any::<u64>().prop_map(Target::Id), "[a-z$.]{0,300}".prop_map(Target::Name)],
        wire_name in "[a-zA-Z.]{0,300}",
        // Around each length-prefix boundary of MessagePack bin (8, 16, 32 bits).
        len in prop_oneof![0usize..300, 65_530usize..65_540],
        byte in any::<u8>(),
    ) {
        let payload = vec![byte; len];
        let tell = Tell { target, sender: None, wire_name: wire_name.into(), payload, trace: None };
        let mut bytes = Vec::new();
        Frame::Tell(tell.clone()).encode(&mut bytes, frame::HARD_MAX_FRAME).unwrap();
        let body = &bytes[frame::LENGTH_PREFIX + 1..];
        // The hand-written encoding of a tell is byte for byte the serde one.
        prop_assert_eq!(body, &rmp_serde::to_vec(&tell).unwrap()[..]);
        let read = TellRef::decode(body);
        prop_assert!(read.is_some());
        prop_assert_eq!(Tell::from(read.unwrap()), tell);
    }

    /// A tell with the sender's trace context: the hand-written encoding is
    /// still the serde one (a fifth element), it is not read in place (the
    /// in-place reader takes four), and it decodes with its context.
    #[test]
    fn traced_tells_encode_as_serde_and_decode_with_their_context(
        wire_name in "[a-zA-Z.]{0,40}",
        payload in prop::collection::vec(any::<u8>(), 0..64),
        trace in "[0-9a-f-]{0,80}",
    ) {
        let tell = Tell { target: Target::Id(7), sender: None, wire_name: wire_name.into(), payload, trace: Some(trace) };
        let mut bytes = Vec::new();
        Frame::Tell(tell.clone()).encode(&mut bytes, frame::HARD_MAX_FRAME).unwrap();
        let body = &bytes[frame::LENGTH_PREFIX + 1..];
        prop_assert_eq!(body, &rmp_serde::to_vec(&tell).unwrap()[..]);
        prop_assert!(TellRef::decode(body).is_none());
        prop_assert_eq!(Frame::decode(&bytes[frame::LENGTH_PREFIX..]), Ok(Frame::Tell(tell)));
    }

    #[test]
    fn session_survives_garbage_after_a_valid_hello(garbage in prop::collection::vec(any::<u8>(), 0..2048)) {
        let now = Instant::now();
        let mut session = Session::new(SessionConfig::new("c", "a", 1), now);
        let mut bytes = Vec::new();
        Frame::Hello(frame::Hello { version: 1, cluster: "c".into(), node: "b".into(), run: 1, max_frame: MAX })
            .encode(&mut bytes, MAX)
            .unwrap();
        bytes.extend_from_slice(&garbage);
        session.handle_input(now, &bytes);
        while let Some(event) = session.poll_event() {
            // Whatever the garbage decodes to, only well-formed events come out.
            if let Event::Closed(_) = event {
                prop_assert!(session.is_closed());
            }
        }
        let _ = session.poll_transmit();
    }

    #[test]
    fn tells_round_trip_under_any_chunking(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..10),
        name in "[a-z.]{1,20}",
        cut in 1usize..64,
    ) {
        let frames: Vec<Frame> = payloads
            .into_iter()
            .map(|payload| Frame::Tell(Tell {
                target: Target::name(name.clone()),
                sender: Some(ActorAddr { node: "n".into(), run: 3, id: 9 }),
                wire_name: name.clone().into(),
                payload,
                trace: None,
            }))
            .collect();
        let mut stream = Vec::new();
        for f in &frames {
            f.encode(&mut stream, MAX).unwrap();
        }
        let mut reader = FrameReader::new(MAX);
        let mut out = Vec::new();
        for chunk in stream.chunks(cut) {
            reader.extend(chunk);
            while let Some(f) = reader.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }
}
