//! What the fuzz targets run, one function per target. Each takes the
//! fuzzer's bytes, reads them as a structured input (frames, frame sequences,
//! time steps, byte-level mutations of valid frames) with
//! [`arbitrary::Unstructured`], drives the code under test, and panics when a
//! property it checks does not hold — which libFuzzer reports as a crash.
//!
//! - [`frames`]: `FrameReader` and `Frame::decode`/`encode` on any byte
//!   stream cut at any points.
//! - [`session`]: one `Session` (the protocol's state machine) fed frames,
//!   bytes, time and local sends.
//! - [`payload`]: the message codec on any bytes.
//! - [`node`]: a whole node (cluster services included) over the in-memory
//!   transport, with a hostile peer and an honest one, on a paused clock.
//!
//! The project's test suite runs the same functions on every input kept in
//! `fuzz/regressions/` and on a batch of generated inputs
//! (`tests/fuzz_regressions.rs`), so a crash found once stays fixed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unreachable_pub)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use footlight::remote::proto::frame::{
    self, ActorAddr, Close, Exit, Failure, Hello, Link, PROTOCOL_VERSION, Reply, Target, Tell, Terminated, Watch,
};
use footlight::remote::proto::{Event, Frame, FrameReader, Session, SessionConfig, TellRef};

/// The length prefix of every frame.
const PREFIX: usize = 4;

/// What structured inputs pick from, so that ids, names and payloads hit
/// what the other side knows often enough to go past its first checks.
#[derive(Default)]
pub struct Pools {
    pub ids: Vec<u64>,
    pub names: Vec<String>,
    pub wire_names: Vec<String>,
    pub payloads: Vec<Vec<u8>>,
    pub nodes: Vec<String>,
    pub runs: Vec<u64>,
}

impl Pools {
    fn id(&self, u: &mut Unstructured<'_>) -> Result<u64> {
        if !self.ids.is_empty() && u.ratio(3, 4)? { Ok(*u.choose(&self.ids)?) } else { u.arbitrary() }
    }

    fn run(&self, u: &mut Unstructured<'_>) -> Result<u64> {
        if !self.runs.is_empty() && u.ratio(3, 4)? { Ok(*u.choose(&self.runs)?) } else { u.arbitrary() }
    }

    fn pick(u: &mut Unstructured<'_>, pool: &[String]) -> Result<String> {
        if !pool.is_empty() && u.ratio(3, 4)? { Ok(u.choose(pool)?.clone()) } else { short_string(u) }
    }

    fn addr(&self, u: &mut Unstructured<'_>) -> Result<ActorAddr> {
        Ok(ActorAddr { node: Self::pick(u, &self.nodes)?, run: self.run(u)?, id: self.id(u)? })
    }

    fn target(&self, u: &mut Unstructured<'_>) -> Result<Target> {
        Ok(if u.arbitrary()? { Target::Id(self.id(u)?) } else { Target::Name(Self::pick(u, &self.names)?) })
    }

    fn payload(&self, u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
        let mut payload = if !self.payloads.is_empty() && u.ratio(2, 3)? {
            u.choose(&self.payloads)?.clone()
        } else {
            let len = u.int_in_range(0..=64)?;
            u.bytes(len)?.to_vec()
        };
        mutate(u, &mut payload)?;
        Ok(payload)
    }

    /// A frame of any kind, its fields drawn from the pools.
    pub fn frame(&self, u: &mut Unstructured<'_>) -> Result<Frame> {
        stats::frame();
        Ok(match u.int_in_range(0..=13u8)? {
            0 => Frame::Hello(Hello {
                version: if u.ratio(7, 8)? { PROTOCOL_VERSION } else { u.arbitrary()? },
                cluster: if u.ratio(7, 8)? { "footlight".into() } else { short_string(u)? },
                node: Self::pick(u, &self.nodes)?,
                run: self.run(u)?,
                max_frame: u.arbitrary()?,
            }),
            1 => Frame::Close(Close { code: u.arbitrary()?, reason: short_string(u)?, last_ask: u.arbitrary()? }),
            2 => Frame::Ping(u.arbitrary()?),
            3 => Frame::Pong(u.arbitrary()?),
            4 => Frame::Tell(Tell {
                target: self.target(u)?,
                sender: if u.ratio(1, 4)? { Some(self.addr(u)?) } else { None },
                wire_name: Cow::Owned(Self::pick(u, &self.wire_names)?),
                payload: self.payload(u)?,
                trace: None,
            }),
            5 => Frame::Ask(frame::Ask {
                id: if u.ratio(1, 2)? { self.id(u)? } else { u.int_in_range(0..=8)? },
                target: self.target(u)?,
                sender: if u.ratio(1, 4)? { Some(self.addr(u)?) } else { None },
                wire_name: Cow::Owned(Self::pick(u, &self.wire_names)?),
                payload: self.payload(u)?,
                timeout_ms: u.int_in_range(0..=10_000)?,
                trace: None,
            }),
            6 => Frame::Reply(Reply { id: self.id(u)?, payload: self.payload(u)? }),
            7 => Frame::Failure(Failure { id: self.id(u)?, code: u.int_in_range(0..=8)?, message: short_string(u)? }),
            8 => Frame::Watch(Watch { target: self.addr(u)?, watcher: self.addr(u)? }),
            9 => Frame::Unwatch(Watch { target: self.addr(u)?, watcher: self.addr(u)? }),
            10 => {
                Frame::Terminated(Terminated { actor: self.addr(u)?, watcher: self.addr(u)?, reason: short_string(u)? })
            }
            11 => Frame::Link(Link { target: self.id(u)?, linker: self.id(u)? }),
            12 => Frame::Unlink(Link { target: self.id(u)?, linker: self.id(u)? }),
            _ => Frame::Exit(Exit { target: self.id(u)?, linker: self.id(u)?, reason: short_string(u)? }),
        })
    }

    /// Bytes a peer might send: whole frames (some mutated at the byte
    /// level), a length prefix over any limit, or raw bytes.
    pub fn bytes(&self, u: &mut Unstructured<'_>, out: &mut Vec<u8>) -> Result<()> {
        match u.int_in_range(0..=9u8)? {
            0..=5 => {
                encode(&self.frame(u)?, out);
            }
            6 | 7 => {
                let mut one = Vec::new();
                encode(&self.frame(u)?, &mut one);
                mutate(u, &mut one)?;
                out.extend_from_slice(&one);
            }
            8 => {
                out.extend_from_slice(&u.arbitrary::<u32>()?.to_be_bytes());
            }
            _ => {
                let len = u.int_in_range(0..=32)?;
                out.extend_from_slice(u.bytes(len)?);
            }
        }
        Ok(())
    }
}

/// A string of up to 24 bytes: mostly ASCII, sometimes anything valid.
fn short_string(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(0..=24)?;
    let bytes = u.bytes(len)?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// A frame's bytes, prefix included (a frame that cannot be encoded even at
/// the hard limit adds nothing).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let _ = frame.encode(out, frame::HARD_MAX_FRAME);
}

/// Byte-level changes: flip, set, insert or cut a few bytes.
fn mutate(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>) -> Result<()> {
    let edits = if u.ratio(1, 2)? { 0 } else { u.int_in_range(1..=3)? };
    for _ in 0..edits {
        if bytes.is_empty() {
            bytes.push(u.arbitrary()?);
            continue;
        }
        let at = u.choose_index(bytes.len())?;
        match u.int_in_range(0..=3u8)? {
            0 => bytes[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => bytes[at] = u.arbitrary()?,
            2 => bytes.insert(at, u.arbitrary()?),
            _ => {
                bytes.remove(at);
            }
        }
    }
    Ok(())
}

/// With `FOOTLIGHT_FUZZ_STATS` set, the frames generated (and fed to the
/// code under test) per second, printed every 10 s.
mod stats {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    static FRAMES: AtomicU64 = AtomicU64::new(0);
    static PRINTED: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<Option<Instant>> = OnceLock::new();

    pub(crate) fn frame() {
        let Some(start) = START.get_or_init(|| std::env::var_os("FOOTLIGHT_FUZZ_STATS").map(|_| Instant::now())) else {
            return;
        };
        let frames = FRAMES.fetch_add(1, Ordering::Relaxed) + 1;
        let secs = start.elapsed().as_secs();
        let printed = PRINTED.load(Ordering::Relaxed);
        if secs >= printed + 10 && PRINTED.compare_exchange(printed, secs, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            eprintln!("fuzz stats: {frames} frames in {secs} s: {} frames/s", frames / secs.max(1));
        }
    }
}

// ------------------------------------------------------------------ frames

/// `FrameReader` and the frame codec on any stream cut at any points:
/// - no panic, and the reader never holds more than one frame under the
///   limit beyond what it returned;
/// - every frame that decodes encodes again within the same limit and
///   decodes to the same value;
/// - a tell read in place (`TellRef`) says what `Frame::decode` says.
pub fn frames(data: &[u8]) {
    let _ = frames_inner(&mut Unstructured::new(data));
}

fn frames_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let max = *u.choose(&[16u32, 200, 4096, frame::DEFAULT_MAX_FRAME])?;
    // Where the stream is cut comes from its own seed, drawn first, so the
    // cuts vary even once the input is used up by the stream.
    let mut cuts = XorShift(u.arbitrary::<u64>()? | 1);
    let pools = Pools {
        ids: vec![0, 1, u64::MAX],
        names: vec!["echo".into()],
        wire_names: vec!["fz.Add".into()],
        payloads: vec![vec![0x01], vec![0x91, 0x01]],
        nodes: vec!["a".into()],
        runs: vec![7],
    };
    let mut stream = Vec::new();
    // Until the input runs out: what was generated so far is checked.
    while !u.is_empty() && stream.len() < 16 * 1024 {
        if pools.bytes(u, &mut stream).is_err() {
            break;
        }
    }
    let mut reader = FrameReader::new(max);
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let cut = 1 + (cuts.next() as usize) % rest.len().min(512);
        let (chunk, after) = rest.split_at(cut);
        rest = after;
        reader.extend(chunk);
        loop {
            match reader.next_raw() {
                Ok(Some(raw)) => check_frame(raw, max),
                Ok(None) => break,
                // After an error the stream is over (the session closes).
                Err(_) => return Ok(()),
            }
        }
        let buffered = reader.buffered();
        assert!(buffered < PREFIX + max as usize, "{buffered} bytes buffered under a limit of {max}");
        assert_eq!(reader.partial(), (buffered > 0).then_some(buffered), "partial() disagrees with buffered()");
    }
    Ok(())
}

/// A small deterministic generator for cut points.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_frame(raw: &[u8], max: u32) {
    let decoded = Frame::decode(raw);
    if let (Some((&frame::kind::TELL, body)), Some(tell)) =
        (raw.split_first(), raw.split_first().and_then(|(_, body)| TellRef::decode(body)))
    {
        let _ = body;
        match &decoded {
            Ok(Frame::Tell(full)) => {
                assert_eq!(full.sender, None, "a tell read in place had a sender");
                assert_eq!(full.target, tell.target(), "in-place target differs");
                assert_eq!(&*full.wire_name, tell.wire_name, "in-place wire name differs");
                assert_eq!(full.payload, tell.payload, "in-place payload differs");
            }
            other => panic!("TellRef read a tell that Frame::decode reads as {other:?}"),
        }
    }
    let Ok(frame) = decoded else { return };
    let mut again = Vec::new();
    frame.encode(&mut again, max).unwrap_or_else(|e| panic!("{frame:?} decoded under {max} but does not encode: {e}"));
    let round = Frame::decode(&again[PREFIX..]).unwrap_or_else(|e| panic!("{frame:?} re-encoded does not decode: {e}"));
    assert_eq!(round, frame, "a frame changed across encode and decode");
}

// ----------------------------------------------------------------- session

/// One `Session`, driven as a node drives it (input is read only while
/// what waits for the transport is under the outbound limit), fed frames,
/// bytes, time, local sends and closes. Checks:
/// - every ask sent resolves exactly once (a reply, a failure, a timeout or
///   the connection's end), and no event answers an ask never sent;
/// - `Established` at most once and before any peer event, `Closed` at most
///   once and last;
/// - input cannot make the session queue much more than it received (no
///   amplification).
pub fn session(data: &[u8]) {
    let _ = session_inner(&mut Unstructured::new(data));
}

pub(crate) struct SessionCheck {
    asks: HashMap<u64, u32>,
    established: bool,
    closed: bool,
}

impl SessionCheck {
    fn drain(&mut self, s: &mut Session) {
        self.drain_from(std::iter::from_fn(|| s.poll_event()));
    }

    fn drain_from(&mut self, events: impl Iterator<Item = Event>) {
        for event in events {
            assert!(!self.closed, "an event after Closed: {event:?}");
            match event {
                Event::Established(_) => {
                    assert!(!self.established, "Established twice");
                    self.established = true;
                }
                Event::Reply { id, .. } | Event::AskFailed { id, .. } => {
                    let seen = self.asks.get_mut(&id).unwrap_or_else(|| panic!("an answer to ask {id}, never sent"));
                    *seen += 1;
                    assert_eq!(*seen, 1, "ask {id} answered twice");
                }
                Event::Closed(_) => self.closed = true,
                other => assert!(self.established, "a peer event before the handshake: {other:?}"),
            }
        }
    }
}

fn session_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let mut now = Instant::now();
    let mut config = SessionConfig::new("footlight", "me", 1);
    config.max_frame = *u.choose(&[64u32, 1024, frame::DEFAULT_MAX_FRAME])?;
    config.max_pending_asks = u.int_in_range(1..=16)?;
    config.max_outbound_bytes = *u.choose(&[256usize, 8192])?;
    if u.arbitrary()? {
        config.expected_peer = Some("peer".into());
    }
    let cap = config.max_outbound_bytes;
    let mut s = Session::new(config, now);
    let mut check = SessionCheck { asks: HashMap::new(), established: false, closed: false };
    let mut pools = Pools {
        ids: vec![0, 1],
        names: vec!["echo".into()],
        wire_names: vec!["fz.Add".into()],
        payloads: vec![vec![0x01]],
        nodes: vec!["peer".into(), "me".into()],
        runs: vec![1, 2],
    };
    let hello = |run| {
        let mut out = Vec::new();
        let frame = Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            cluster: "footlight".into(),
            node: "peer".into(),
            run,
            max_frame: frame::DEFAULT_MAX_FRAME,
        });
        encode(&frame, &mut out);
        out
    };
    if u.ratio(3, 4)? {
        s.handle_input(now, &hello(2));
    }
    let mut steps = 0;
    while !u.is_empty() && steps < 256 {
        steps += 1;
        // A step that runs out of input ends the run; the end checks below
        // still run.
        let mut step = || -> Result<()> {
            match u.int_in_range(0..=11u8)? {
                0..=4 => {
                    // The driver reads only while the transport keeps up.
                    if s.outbound_len() >= cap {
                        let _ = s.poll_transmit();
                    }
                    let mut input = Vec::new();
                    for _ in 0..u.int_in_range(1..=4)? {
                        pools.bytes(u, &mut input)?;
                    }
                    let before = s.outbound_len();
                    let was_established = check.established;
                    let mut rest = &input[..];
                    while !rest.is_empty() {
                        let cut = u.int_in_range(1..=rest.len())?;
                        s.handle_input(now, &rest[..cut]);
                        rest = &rest[cut..];
                    }
                    // Once established (the handshake releases frames queued
                    // before it, which is not the peer's doing), what the peer
                    // sends can queue only pongs and a close.
                    let grown = s.outbound_len().saturating_sub(before);
                    assert!(
                        !was_established || grown <= 3 * input.len() + 1024,
                        "{} input bytes queued {grown} output bytes",
                        input.len()
                    );
                }
                5 => s.handle_input(now, &hello(u.arbitrary()?)),
                6 => {
                    now += Duration::from_millis(u.int_in_range(0..=6_000)?);
                    s.handle_timeout(now);
                }
                7 => {
                    let target = pools.target(u)?;
                    let timeout = Duration::from_millis(u.int_in_range(0..=10_000)?);
                    if let Ok(id) = s.send_ask(now, target, None, "fz.Add".into(), vec![0x01], timeout, None) {
                        assert!(check.asks.insert(id, 0).is_none(), "ask id {id} reused");
                        pools.ids.push(id);
                    }
                }
                8 => {
                    let _ = match u.int_in_range(0..=5u8)? {
                        0 => s.send_tell(
                            now,
                            Tell {
                                target: pools.target(u)?,
                                sender: None,
                                wire_name: "fz.Add".into(),
                                payload: pools.payload(u)?,
                                trace: None,
                            },
                        ),
                        1 => s.send_reply(now, pools.id(u)?, pools.payload(u)?),
                        2 => s.send_failure(now, pools.id(u)?, frame::FailureCode::Timeout, "late".into()),
                        3 => s.send_watch(now, Watch { target: pools.addr(u)?, watcher: pools.addr(u)? }),
                        4 => s.send_link(now, Link { target: pools.id(u)?, linker: pools.id(u)? }),
                        _ => s.send_exit(now, Exit { target: pools.id(u)?, linker: pools.id(u)?, reason: "x".into() }),
                    };
                }
                9 => while s.poll_transmit().is_some() {},
                10 => s.close(now, frame::CloseCode::Normal, "bye"),
                _ => s.handle_lost(),
            }
            Ok(())
        };
        if step().is_err() {
            break;
        }
        check.drain(&mut s);
        if let Some(at) = s.poll_timeout()
            && at <= now
        {
            s.handle_timeout(now);
            check.drain(&mut s);
        }
    }
    s.handle_lost();
    check.drain(&mut s);
    assert!(check.closed, "the session did not report its end");
    for (id, seen) in &check.asks {
        assert_eq!(*seen, 1, "ask {id} was never answered");
    }
    Ok(())
}

// ----------------------------------------------------------------- payload

/// The message codec on any bytes: no panic; what decodes encodes again and
/// decodes to the same value.
pub fn payload(data: &[u8]) {
    use footlight::remote::codec::{decode, encode};
    fn round<T>(data: &[u8])
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        if let Ok(value) = decode::<T>(data) {
            let bytes = encode(&value).unwrap_or_else(|e| panic!("{value:?} decoded but does not encode: {e}"));
            let again = decode::<T>(&bytes).unwrap_or_else(|e| panic!("{value:?} re-encoded does not decode: {e}"));
            assert_eq!(again, value, "a value changed across encode and decode");
        }
    }
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Newtype(u64);
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Fields {
        a: u32,
        b: Option<String>,
        c: Vec<u8>,
        d: Vec<Vec<i64>>,
    }
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    enum Choice {
        Unit,
        One(String),
        Two(u8, bool),
        Named { x: i16 },
    }
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 8 {
        0 => round::<Newtype>(rest),
        1 => round::<Fields>(rest),
        2 => round::<Choice>(rest),
        3 => round::<Vec<Choice>>(rest),
        4 => round::<HashMap<String, Vec<u64>>>(rest),
        5 => round::<(u64, String, Option<Newtype>)>(rest),
        6 => round::<Option<Box<Option<Vec<Fields>>>>>(rest),
        _ => round::<String>(rest),
    }
}

// -------------------------------------------------------------------- node

mod node;
pub use node::node;
