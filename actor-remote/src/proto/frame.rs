//! Frames: the unit of the wire protocol, and their byte encoding.
//!
//! ```text
//! frame = length:u32 (big-endian, counts kind + body) | kind:u8 | body
//! body  = one MessagePack array, fields in the order listed in PROTOCOL.md
//! ```
//!
//! Decoding never allocates more than the bytes actually received: the length
//! prefix is checked against the limit before any buffer grows for the body.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// The largest frame (kind + body) any node accepts, whatever it is
/// configured to: 16 MiB.
pub const HARD_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// The default frame limit: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The address of one actor anywhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorAddr {
    /// The node the actor lives on.
    pub node: String,
    /// That node's run when the address was taken.
    pub run: u64,
    /// The actor's id on that node.
    pub id: u64,
}

/// Which actor a message is for, on the receiving node. On the wire:
/// `[id, nil]` or `[nil, name]` (a target with both is read by its id; one
/// with neither does not decode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// By handle (an address taken from a ref or a lookup), checked against
    /// the receiving node's run by the sender.
    Id(u64),
    /// By exposed name.
    Name(String),
}

impl Target {
    /// A target by exposed name.
    pub fn name(name: impl Into<String>) -> Self {
        Self::Name(name.into())
    }

    /// A target by actor handle.
    pub fn id(id: u64) -> Self {
        Self::Id(id)
    }

    /// The handle, if the target is one.
    pub fn as_id(&self) -> Option<u64> {
        match self {
            Self::Id(id) => Some(*id),
            Self::Name(_) => None,
        }
    }

    /// The name, if the target is one.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Self::Id(_) => None,
            Self::Name(name) => Some(name),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.as_id(), self.as_name()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match <(Option<u64>, Option<String>)>::deserialize(deserializer)? {
            (Some(id), _) => Ok(Self::Id(id)),
            (None, Some(name)) => Ok(Self::Name(name)),
            (None, None) => Err(serde::de::Error::custom("a target with neither id nor name")),
        }
    }
}

/// A [`Target`] read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRef<'a> {
    /// By handle.
    Id(u64),
    /// By exposed name.
    Name(&'a str),
}

/// First frame each side sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The cluster name; peers of another cluster are refused.
    pub cluster: String,
    /// The sender's node id.
    pub node: String,
    /// The sender's run: different at every start of the node.
    pub run: u64,
    /// The largest frame the sender accepts.
    pub max_frame: u32,
}

/// A one-way message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tell {
    /// The receiving actor.
    pub target: Target,
    /// The sending actor, if the message came from one.
    pub sender: Option<ActorAddr>,
    /// The message type's stable wire name (borrowed when sending, so a
    /// frame costs no copy of it).
    pub wire_name: Cow<'static, str>,
    /// The message, MessagePack-encoded.
    #[serde(with = "serde_bytes_compat")]
    pub payload: Vec<u8>,
    /// The sender's trace context (a W3C `traceparent`), when a trace
    /// propagator is installed; an optional trailing element (absent from
    /// older peers' frames, ignored by them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A [`Tell`] read in place: its fields borrow the received bytes, so a
/// driver can hand the message over without allocating.
///
/// Only the common shape is read this way: a tell without a sender and
/// without fields from a newer protocol version. For anything else
/// [`TellRef::decode`] says `None` and [`Frame::decode`] reads the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TellRef<'a> {
    /// The receiving actor.
    pub target: TargetRef<'a>,
    /// The message type's stable wire name.
    pub wire_name: &'a str,
    /// The message, MessagePack-encoded.
    pub payload: &'a [u8],
    /// The whole body this was read from.
    body: &'a [u8],
}

impl<'a> TellRef<'a> {
    /// Reads a tell's body (the bytes after the kind byte) in place; `None`
    /// when it has a sender, extra fields, or does not decode, in which case
    /// [`Frame::decode`] is the way to read it (and to report errors).
    pub fn decode(body: &'a [u8]) -> Option<Self> {
        use rmp::decode as d;
        const NIL: u8 = 0xc0;
        fn str_of<'b>(rd: &mut &'b [u8]) -> Option<&'b str> {
            let (s, rest) = d::read_str_from_slice(*rd).ok()?;
            *rd = rest;
            Some(s)
        }
        let mut rd: &[u8] = body;
        // [target, sender, wire_name, payload] with target = [id, name].
        let (&[0x94, 0x92], rest) = rd.split_first_chunk::<2>()? else { return None };
        rd = rest;
        let target_id = match rd.first()? {
            &NIL => {
                rd = &rd[1..];
                None
            }
            _ => Some(d::read_int::<u64, _>(&mut rd).ok()?),
        };
        let target_name = match rd.first()? {
            &NIL => {
                rd = &rd[1..];
                None
            }
            _ => Some(str_of(&mut rd)?),
        };
        let (&NIL, rest) = rd.split_first()? else { return None };
        rd = rest;
        let wire_name = str_of(&mut rd)?;
        let len = d::read_bin_len(&mut rd).ok()? as usize;
        if rd.len() != len {
            return None;
        }
        let target = match (target_id, target_name) {
            (Some(id), _) => TargetRef::Id(id),
            (None, Some(name)) => TargetRef::Name(name),
            (None, None) => return None,
        };
        Some(Self { target, wire_name, payload: rd, body })
    }

    /// The encoded body this tell was read from: [`TellRef::decode`] reads
    /// it again, so a driver can keep a tell as these bytes alone.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The target as an owned [`Target`].
    pub fn target(&self) -> Target {
        match self.target {
            TargetRef::Id(id) => Target::Id(id),
            TargetRef::Name(name) => Target::Name(name.to_owned()),
        }
    }
}

impl From<TellRef<'_>> for Tell {
    fn from(tell: TellRef<'_>) -> Self {
        Tell {
            target: tell.target(),
            sender: None,
            wire_name: Cow::Owned(tell.wire_name.to_owned()),
            payload: tell.payload.to_vec(),
            trace: None,
        }
    }
}

/// A request that expects one [`Reply`] or [`Failure`] with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    /// Correlation id, unique among the sender's pending asks on this connection.
    pub id: u64,
    /// The receiving actor.
    pub target: Target,
    /// The sending actor, if any.
    pub sender: Option<ActorAddr>,
    /// The message type's stable wire name.
    pub wire_name: Cow<'static, str>,
    /// The message, MessagePack-encoded.
    #[serde(with = "serde_bytes_compat")]
    pub payload: Vec<u8>,
    /// How long the asker waits; the receiver may drop the work after that.
    pub timeout_ms: u32,
    /// The asker's trace context, as in [`Tell::trace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The reply to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The ask's id.
    pub id: u64,
    /// The reply value, MessagePack-encoded.
    #[serde(with = "serde_bytes_compat")]
    pub payload: Vec<u8>,
}

/// An [`Ask`] that produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The ask's id.
    pub id: u64,
    /// Why, as a [`FailureCode`] number.
    pub code: u16,
    /// Human-readable detail.
    pub message: String,
}

/// Ask the peer to report when one of its actors stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// The peer's actor to watch.
    pub target: ActorAddr,
    /// The local actor to notify.
    pub watcher: ActorAddr,
}

/// An actor stopped (answer to [`Watch`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    /// The actor that stopped.
    pub actor: ActorAddr,
    /// The watcher to notify.
    pub watcher: ActorAddr,
    /// Its exit reason, as text.
    pub reason: String,
}

/// A link between an actor of the sender's and one of the receiver's: the
/// receiver's actor hears when the sender's exits ([`Exit`]), and when the
/// sender's node is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The receiver's actor, by id.
    pub target: u64,
    /// The sender's actor, by id (the id a ref to it would carry).
    pub linker: u64,
}

/// A linked actor of the sender's exited (answer to nothing: sent when it
/// happens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The receiver's actor, by id.
    pub target: u64,
    /// The sender's actor that exited, by id.
    pub linker: u64,
    /// Its exit reason, as text (as in [`Terminated`]).
    pub reason: String,
}

/// The last frame on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    /// A [`CloseCode`] number.
    pub code: u16,
    /// Human-readable detail.
    pub reason: String,
    /// The highest [`Ask::id`] the sender had read from the receiver when it
    /// closed (0: none). Asks with a higher id were never read, so never
    /// handled: the asker may send them again elsewhere. Absent (older
    /// peers): nothing is known of the asks in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ask: Option<u64>,
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// `0x01`
    Hello(Hello),
    /// `0x02`
    Close(Close),
    /// `0x03`, with a nonce echoed by `Pong`.
    Ping(u64),
    /// `0x04`
    Pong(u64),
    /// `0x10`
    Tell(Tell),
    /// `0x11`
    Ask(Ask),
    /// `0x12`
    Reply(Reply),
    /// `0x13`
    Failure(Failure),
    /// `0x20`
    Watch(Watch),
    /// `0x21`: cancel a [`Watch`] (same fields).
    Unwatch(Watch),
    /// `0x22`
    Terminated(Terminated),
    /// `0x23`
    Link(Link),
    /// `0x24`: remove a [`Link`] (same fields).
    Unlink(Link),
    /// `0x25`
    Exit(Exit),
}

/// Frame kind bytes.
pub mod kind {
    /// [`Frame::Hello`](super::Frame::Hello)
    pub const HELLO: u8 = 0x01;
    /// [`Frame::Close`](super::Frame::Close)
    pub const CLOSE: u8 = 0x02;
    /// [`Frame::Ping`](super::Frame::Ping)
    pub const PING: u8 = 0x03;
    /// [`Frame::Pong`](super::Frame::Pong)
    pub const PONG: u8 = 0x04;
    /// [`Frame::Tell`](super::Frame::Tell)
    pub const TELL: u8 = 0x10;
    /// [`Frame::Ask`](super::Frame::Ask)
    pub const ASK: u8 = 0x11;
    /// [`Frame::Reply`](super::Frame::Reply)
    pub const REPLY: u8 = 0x12;
    /// [`Frame::Failure`](super::Frame::Failure)
    pub const FAILURE: u8 = 0x13;
    /// [`Frame::Watch`](super::Frame::Watch)
    pub const WATCH: u8 = 0x20;
    /// [`Frame::Unwatch`](super::Frame::Unwatch)
    pub const UNWATCH: u8 = 0x21;
    /// [`Frame::Terminated`](super::Frame::Terminated)
    pub const TERMINATED: u8 = 0x22;
    /// [`Frame::Link`](super::Frame::Link)
    pub const LINK: u8 = 0x23;
    /// [`Frame::Unlink`](super::Frame::Unlink)
    pub const UNLINK: u8 = 0x24;
    /// [`Frame::Exit`](super::Frame::Exit)
    pub const EXIT: u8 = 0x25;
}

/// Why a connection was closed. Sent in [`Close`]; unknown codes from newer
/// peers read as [`CloseCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// Orderly shutdown.
    Normal,
    /// A frame broke the protocol (wrong order, unknown kind).
    ProtocolError,
    /// A frame was over the receiver's limit.
    FrameTooLarge,
    /// A frame body did not decode.
    DecodeError,
    /// No common protocol version.
    VersionMismatch,
    /// The peer belongs to another cluster.
    ClusterMismatch,
    /// The node id in `Hello` does not match the authenticated identity.
    IdentityMismatch,
    /// `Hello` did not arrive in time.
    HandshakeTimeout,
    /// Nothing heard from the peer for too long.
    IdleTimeout,
    /// A second connection between the same two nodes lost the tie-break.
    Duplicate,
    /// A code this version does not know.
    Other(u16),
}

impl CloseCode {
    /// The number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::ProtocolError => 1,
            CloseCode::FrameTooLarge => 2,
            CloseCode::DecodeError => 3,
            CloseCode::VersionMismatch => 4,
            CloseCode::ClusterMismatch => 5,
            CloseCode::IdentityMismatch => 6,
            CloseCode::HandshakeTimeout => 7,
            CloseCode::IdleTimeout => 8,
            CloseCode::Duplicate => 9,
            CloseCode::Other(n) => n,
        }
    }

    /// The code for a number from the wire.
    pub fn from_u16(n: u16) -> Self {
        match n {
            0 => CloseCode::Normal,
            1 => CloseCode::ProtocolError,
            2 => CloseCode::FrameTooLarge,
            3 => CloseCode::DecodeError,
            4 => CloseCode::VersionMismatch,
            5 => CloseCode::ClusterMismatch,
            6 => CloseCode::IdentityMismatch,
            7 => CloseCode::HandshakeTimeout,
            8 => CloseCode::IdleTimeout,
            9 => CloseCode::Duplicate,
            other => CloseCode::Other(other),
        }
    }
}

/// Why an ask failed on the receiving node. Sent in [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureCode {
    /// No exposed actor matches the target.
    ActorNotFound,
    /// The actor does not accept this wire name.
    UnknownMessage,
    /// The payload did not decode as the named message.
    DecodeError,
    /// The actor stopped or failed before replying.
    NoReply,
    /// The actor's mailbox or the node's limits refused the message.
    Rejected,
    /// The actor did not reply within the ask's timeout.
    Timeout,
    /// A code this version does not know.
    Other(u16),
}

impl FailureCode {
    /// The number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            FailureCode::ActorNotFound => 1,
            FailureCode::UnknownMessage => 2,
            FailureCode::DecodeError => 3,
            FailureCode::NoReply => 4,
            FailureCode::Rejected => 5,
            FailureCode::Timeout => 6,
            FailureCode::Other(n) => n,
        }
    }

    /// The code for a number from the wire.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => FailureCode::ActorNotFound,
            2 => FailureCode::UnknownMessage,
            3 => FailureCode::DecodeError,
            4 => FailureCode::NoReply,
            5 => FailureCode::Rejected,
            6 => FailureCode::Timeout,
            other => FailureCode::Other(other),
        }
    }
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// A frame with no kind byte.
    #[error("empty frame")]
    Empty,
    /// An unknown kind byte.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The body is not the MessagePack the kind requires.
    #[error("frame body of kind {kind:#04x} does not decode: {reason}")]
    Decode {
        /// The kind byte.
        kind: u8,
        /// The decoder's message.
        reason: String,
    },
}

impl FrameError {
    /// The close code this error calls for.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::TooLarge { .. } => CloseCode::FrameTooLarge,
            FrameError::Empty | FrameError::UnknownKind(_) => CloseCode::ProtocolError,
            FrameError::Decode { .. } => CloseCode::DecodeError,
        }
    }
}

/// A frame that could not be written.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the peer's limit.
    #[error("frame of {len} bytes exceeds the peer's limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The peer's limit.
        max: u32,
    },
    /// Serialization failed.
    #[error("encoding failed: {0}")]
    Encode(String),
}

impl Frame {
    /// The frame's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Close(_) => kind::CLOSE,
            Frame::Ping(_) => kind::PING,
            Frame::Pong(_) => kind::PONG,
            Frame::Tell(_) => kind::TELL,
            Frame::Ask(_) => kind::ASK,
            Frame::Reply(_) => kind::REPLY,
            Frame::Failure(_) => kind::FAILURE,
            Frame::Watch(_) => kind::WATCH,
            Frame::Unwatch(_) => kind::UNWATCH,
            Frame::Terminated(_) => kind::TERMINATED,
            Frame::Link(_) => kind::LINK,
            Frame::Unlink(_) => kind::UNLINK,
            Frame::Exit(_) => kind::EXIT,
        }
    }

    /// Appends the encoded frame (prefix, kind, body) to `out`. Fails, leaving
    /// `out` as it was, if the frame would exceed `max_frame`.
    pub fn encode(&self, out: &mut Vec<u8>, max_frame: u32) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0; LENGTH_PREFIX]);
        out.push(self.kind());
        let body = match self {
            Frame::Hello(f) => rmp_serde::encode::write(out, f),
            Frame::Close(f) => rmp_serde::encode::write(out, f),
            Frame::Ping(n) | Frame::Pong(n) => rmp_serde::encode::write(out, &(n,)),
            Frame::Tell(f) if f.sender.is_none() => {
                encode_tell(out, &f.target, &f.wire_name, &f.payload, f.trace.as_deref());
                Ok(())
            }
            Frame::Tell(f) => rmp_serde::encode::write(out, f),
            Frame::Ask(f) => rmp_serde::encode::write(out, f),
            Frame::Reply(f) => rmp_serde::encode::write(out, f),
            Frame::Failure(f) => rmp_serde::encode::write(out, f),
            Frame::Watch(f) | Frame::Unwatch(f) => rmp_serde::encode::write(out, f),
            Frame::Terminated(f) => rmp_serde::encode::write(out, f),
            Frame::Link(f) | Frame::Unlink(f) => rmp_serde::encode::write(out, f),
            Frame::Exit(f) => rmp_serde::encode::write(out, f),
        };
        if let Err(e) = body {
            out.truncate(start);
            return Err(EncodeError::Encode(e.to_string()));
        }
        let len = out.len() - start - LENGTH_PREFIX;
        if len > max_frame.min(HARD_MAX_FRAME) as usize {
            out.truncate(start);
            return Err(EncodeError::TooLarge { len, max: max_frame.min(HARD_MAX_FRAME) });
        }
        // `len` fits: it is at most HARD_MAX_FRAME.
        out[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Decodes one frame from its kind byte and body (without the prefix).
    pub fn decode(frame: &[u8]) -> Result<Frame, FrameError> {
        let (&kind, body) = frame.split_first().ok_or(FrameError::Empty)?;
        fn body_of<T: serde::de::DeserializeOwned>(kind: u8, body: &[u8], fields: u32) -> Result<T, FrameError> {
            // A body is an array (serde would read a struct from a map too,
            // which the protocol does not allow).
            if !matches!(body.first(), Some(0x90..=0x9f | 0xdc | 0xdd)) {
                return Err(FrameError::Decode { kind, reason: "a frame body must be an array".into() });
            }
            let trimmed = without_trailing_fields(body, fields);
            // Read in place: strings and byte strings are copied once, into
            // the value, with no staging buffer.
            let mut de = rmp_serde::Deserializer::from_read_ref(trimmed.as_deref().unwrap_or(body));
            T::deserialize(&mut de).map_err(|e| FrameError::Decode { kind, reason: e.to_string() })
        }
        Ok(match kind {
            kind::HELLO => Frame::Hello(body_of(kind, body, 5)?),
            kind::CLOSE => Frame::Close(body_of(kind, body, 3)?),
            kind::PING => Frame::Ping(body_of::<(u64,)>(kind, body, 1)?.0),
            kind::PONG => Frame::Pong(body_of::<(u64,)>(kind, body, 1)?.0),
            kind::TELL => Frame::Tell(body_of(kind, body, 5)?),
            kind::ASK => Frame::Ask(body_of(kind, body, 7)?),
            kind::REPLY => Frame::Reply(body_of(kind, body, 2)?),
            kind::FAILURE => Frame::Failure(body_of(kind, body, 3)?),
            kind::WATCH => Frame::Watch(body_of(kind, body, 2)?),
            kind::UNWATCH => Frame::Unwatch(body_of(kind, body, 2)?),
            kind::TERMINATED => Frame::Terminated(body_of(kind, body, 3)?),
            kind::LINK => Frame::Link(body_of(kind, body, 2)?),
            kind::UNLINK => Frame::Unlink(body_of(kind, body, 2)?),
            kind::EXIT => Frame::Exit(body_of(kind, body, 3)?),
            other => return Err(FrameError::UnknownKind(other)),
        })
    }
}

/// Appends a whole tell frame without a sender (prefix, kind, body), as
/// [`Frame::encode`] would write it, from borrowed parts. Fails, leaving `out`
/// as it was, if the frame would exceed `max_frame`.
pub fn encode_tell_frame(
    out: &mut Vec<u8>,
    target: &Target,
    wire_name: &str,
    payload: &[u8],
    max_frame: u32,
) -> Result<(), EncodeError> {
    encode_traced_tell_frame(out, target, wire_name, payload, None, max_frame)
}

/// [`encode_tell_frame`] with the sender's trace context, if any (the
/// optional fifth element, [`Tell::trace`]).
pub fn encode_traced_tell_frame(
    out: &mut Vec<u8>,
    target: &Target,
    wire_name: &str,
    payload: &[u8],
    trace: Option<&str>,
    max_frame: u32,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    out.push(kind::TELL);
    encode_tell(out, target, wire_name, payload, trace);
    let len = out.len() - start - LENGTH_PREFIX;
    let max = max_frame.min(HARD_MAX_FRAME);
    if len > max as usize {
        out.truncate(start);
        return Err(EncodeError::TooLarge { len, max });
    }
    // `len` fits: it is at most HARD_MAX_FRAME.
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Writes the body of a tell without a sender: the bytes the serde encoding
/// gives, without its per-field dispatch (a tell is most of the traffic).
fn encode_tell(out: &mut Vec<u8>, target: &Target, wire_name: &str, payload: &[u8], trace: Option<&str>) {
    use rmp::encode as e;
    // Writing to a Vec cannot fail; lengths over u32 are impossible under the
    // frame limit, which the caller checks on the result.
    let _ = e::write_array_len(out, if trace.is_some() { 5 } else { 4 });
    let _ = e::write_array_len(out, 2);
    match target {
        Target::Id(id) => {
            let _ = e::write_uint(out, *id);
            e::write_nil(out).unwrap_or(());
        }
        Target::Name(name) => {
            e::write_nil(out).unwrap_or(());
            let _ = e::write_str(out, name);
        }
    }
    e::write_nil(out).unwrap_or(());
    let _ = e::write_str(out, wire_name);
    let _ = e::write_bin(out, payload);
    if let Some(trace) = trace {
        let _ = e::write_str(out, trace);
    }
}

/// Cuts a byte stream into frames.
///
/// Feed it whatever arrived ([`extend`](Self::extend)), then take frames with
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. The buffer
/// never holds more than one frame's worth beyond what the limit allows: a
/// prefix over the limit is an error before the body is waited for.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    read: usize,
    /// The length of the frame `next_raw` returned last (prefix included).
    last: usize,
    max_frame: u32,
}

impl FrameReader {
    /// A reader accepting frames up to `max_frame` bytes (capped at
    /// [`HARD_MAX_FRAME`]).
    pub fn new(max_frame: u32) -> Self {
        Self { buf: Vec::new(), read: 0, last: 0, max_frame: max_frame.min(HARD_MAX_FRAME) }
    }

    /// The limit in force.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.last = 0;
        if self.read > 0 && self.read == self.buf.len() {
            self.buf.clear();
            self.read = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.read
    }

    /// How many bytes of a frame not complete yet have arrived (its prefix
    /// included), when the bytes buffered end in one; `None` when nothing
    /// is buffered or a whole frame is.
    pub fn partial(&self) -> Option<usize> {
        let pending = &self.buf[self.read..];
        if pending.is_empty() {
            return None;
        }
        let Some(prefix) = pending.get(..LENGTH_PREFIX) else { return Some(pending.len()) };
        let mut len_bytes = [0u8; LENGTH_PREFIX];
        len_bytes.copy_from_slice(prefix);
        let total = LENGTH_PREFIX + u32::from_be_bytes(len_bytes) as usize;
        (pending.len() < total).then_some(pending.len())
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is unusable: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.next_raw()? {
            Some(raw) => Frame::decode(raw).map(Some),
            None => Ok(None),
        }
    }

    /// The next complete frame's kind byte and body, not decoded (see
    /// [`Frame::decode`] and [`TellRef::decode`]); `Ok(None)` if more bytes
    /// are needed.
    pub fn next_raw(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let pending = &self.buf[self.read..];
        let Some(prefix) = pending.get(..LENGTH_PREFIX) else {
            self.compact();
            return Ok(None);
        };
        let mut len_bytes = [0u8; LENGTH_PREFIX];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len_bytes);
        if len > self.max_frame {
            return Err(FrameError::TooLarge { len, max: self.max_frame });
        }
        let total = LENGTH_PREFIX + len as usize;
        if pending.len() < total {
            self.compact();
            return Ok(None);
        }
        let start = self.read + LENGTH_PREFIX;
        self.read += total;
        self.last = total;
        Ok(Some(&self.buf[start..self.read]))
    }

    /// Puts back the frame the last [`next_raw`](Self::next_raw) returned,
    /// so the next call returns it again. Does nothing the second time.
    pub fn unread(&mut self) {
        self.read -= std::mem::take(&mut self.last);
    }

    /// Drops consumed bytes once they dominate the buffer.
    fn compact(&mut self) {
        if self.read > 0 && self.read >= self.buf.len() / 2 {
            self.buf.drain(..self.read);
            self.read = 0;
        }
    }
}

/// If `body` is an array of more than `fields` elements (a newer peer
/// appended fields), a copy whose array header says `fields`: the decoder then
/// reads the known fields and ignores the rest. `None` when no rewrite is
/// needed (or the body is not an array, which the decoder will report).
fn without_trailing_fields(body: &[u8], fields: u32) -> Option<Vec<u8>> {
    let (&marker, rest) = body.split_first()?;
    let (len, rest) = match marker {
        0x90..=0x9f => (u32::from(marker & 0x0f), rest),
        0xdc => {
            let (b, rest) = rest.split_first_chunk::<2>()?;
            (u32::from(u16::from_be_bytes(*b)), rest)
        }
        0xdd => {
            let (b, rest) = rest.split_first_chunk::<4>()?;
            (u32::from_be_bytes(*b), rest)
        }
        _ => return None,
    };
    if len <= fields {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    // Frames have at most 15 fields: a fixarray header always fits.
    out.push(0x90 | (fields.min(15) as u8));
    out.extend_from_slice(rest);
    Some(out)
}

/// Payloads as MessagePack `bin`, not as arrays of integers.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out, DEFAULT_MAX_FRAME).unwrap();
        out
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Golden bytes: these pin the wire format documented in PROTOCOL.md. A
    /// change here is a protocol change.
    #[test]
    fn golden_hello() {
        let frame =
            Frame::Hello(Hello { version: 1, cluster: "c".into(), node: "a".into(), run: 7, max_frame: 1 << 20 });
        // len=13 | 0x01 | [1, "c", "a", 7, 1048576]
        assert_eq!(hex(&encoded(&frame)), "0000000d019501a163a16107ce00100000");
    }

    #[test]
    fn golden_tell() {
        let frame = Frame::Tell(Tell {
            target: Target::name("counter"),
            sender: None,
            wire_name: "demo.Add".into(),
            payload: vec![0x91, 0x01],
            trace: None,
        });
        // | 0x10 | [[nil, "counter"], nil, "demo.Add", bin8(2)=0x9101]
        assert_eq!(
            hex(&encoded(&frame)),
            "0000001a1094 92c0a7636f756e746572 c0 a864656d6f2e416464 c4029101".replace(' ', "")
        );
    }

    #[test]
    fn golden_link_unlink_exit() {
        let link = Frame::Link(Link { target: 5, linker: 300 });
        // | 0x23 | [5, 300]
        assert_eq!(hex(&encoded(&link)), "0000000623 92 05 cd012c".replace(' ', ""));
        let unlink = Frame::Unlink(Link { target: 5, linker: 300 });
        assert_eq!(hex(&encoded(&unlink)), "0000000624 92 05 cd012c".replace(' ', ""));
        let exit = Frame::Exit(Exit { target: 5, linker: 300, reason: "x".into() });
        // | 0x25 | [5, 300, "x"]
        assert_eq!(hex(&encoded(&exit)), "0000000825 93 05 cd012c a178".replace(' ', ""));
        for frame in [link, unlink, exit] {
            let bytes = encoded(&frame);
            assert_eq!(Frame::decode(&bytes[LENGTH_PREFIX..]), Ok(frame));
        }
    }

    #[test]
    fn golden_ask_reply_failure_ping_close() {
        let ask = Frame::Ask(Ask {
            id: 1,
            target: Target::id(5),
            sender: Some(ActorAddr { node: "b".into(), run: 2, id: 3 }),
            wire_name: "x".into(),
            payload: vec![],
            timeout_ms: 5000,
            trace: None,
        });
        // | 0x11 | [1, [5, nil], ["b", 2, 3], "x", bin8(0), 5000]
        assert_eq!(hex(&encoded(&ask)), "000000121196 01 9205c0 93a1620203 a178 c400 cd1388".replace(' ', ""));
        let reply = Frame::Reply(Reply { id: 1, payload: vec![0x2a] });
        assert_eq!(hex(&encoded(&reply)), "00000006129201c4012a");
        let failure =
            Frame::Failure(Failure { id: 1, code: FailureCode::ActorNotFound.to_u16(), message: "no".into() });
        assert_eq!(hex(&encoded(&failure)), "000000071393 01 01 a26e6f".replace(' ', ""));
        assert_eq!(hex(&encoded(&Frame::Ping(9))), "00000003039109");
        let close =
            Frame::Close(Close { code: CloseCode::IdleTimeout.to_u16(), reason: String::new(), last_ask: None });
        assert_eq!(hex(&encoded(&close)), "0000000402920 8a0".replace(' ', ""));
    }

    #[test]
    fn every_frame_round_trips() {
        let addr = ActorAddr { node: "n".into(), run: 1, id: 2 };
        let frames = vec![
            Frame::Hello(Hello { version: 1, cluster: "c".into(), node: "a".into(), run: 1, max_frame: 10 }),
            Frame::Close(Close { code: 3, reason: "bad".into(), last_ask: None }),
            Frame::Close(Close { code: 0, reason: String::new(), last_ask: Some(17) }),
            Frame::Ping(u64::MAX),
            Frame::Pong(0),
            Frame::Tell(Tell {
                target: Target::name("x"),
                sender: Some(addr.clone()),
                wire_name: "w".into(),
                payload: vec![1, 2],
                trace: None,
            }),
            Frame::Ask(Ask {
                id: 9,
                target: Target::id(1),
                sender: None,
                wire_name: "w".into(),
                payload: vec![],
                timeout_ms: 1,
                trace: None,
            }),
            Frame::Reply(Reply { id: 9, payload: vec![0; 300] }),
            Frame::Failure(Failure { id: 9, code: 5, message: "full".into() }),
            Frame::Watch(Watch { target: addr.clone(), watcher: addr.clone() }),
            Frame::Unwatch(Watch { target: addr.clone(), watcher: addr.clone() }),
            Frame::Terminated(Terminated { actor: addr.clone(), watcher: addr, reason: "normal".into() }),
        ];
        let mut stream = Vec::new();
        for f in &frames {
            f.encode(&mut stream, DEFAULT_MAX_FRAME).unwrap();
        }
        // Deliver the stream one byte at a time: framing must not depend on chunking.
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        for b in stream {
            reader.extend(&[b]);
            while let Some(f) = reader.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let mut reader = FrameReader::new(1024);
        reader.extend(&(1025u32).to_be_bytes());
        assert_eq!(reader.next_frame(), Err(FrameError::TooLarge { len: 1025, max: 1024 }));
        assert_eq!(FrameReader::new(u32::MAX).max_frame(), HARD_MAX_FRAME);
    }

    #[test]
    fn frame_at_the_limit_is_accepted_one_over_is_refused() {
        let payload_room = |max: u32| {
            // Find the largest Reply payload that encodes to exactly `max`.
            let mut n = max as usize;
            loop {
                let mut out = Vec::new();
                if Frame::Reply(Reply { id: 0, payload: vec![0; n] }).encode(&mut out, u32::MAX).is_ok()
                    && out.len() - LENGTH_PREFIX <= max as usize
                {
                    return (n, out);
                }
                n -= 1;
            }
        };
        let max = 4096;
        let (n, out) = payload_room(max);
        let mut reader = FrameReader::new(out.len() as u32 - LENGTH_PREFIX as u32);
        reader.extend(&out);
        assert!(reader.next_frame().unwrap().is_some());
        let mut bigger = Vec::new();
        let err = Frame::Reply(Reply { id: 0, payload: vec![0; n + 1] })
            .encode(&mut bigger, out.len() as u32 - LENGTH_PREFIX as u32)
            .unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { .. }));
        assert!(bigger.is_empty(), "a refused frame leaves nothing behind");
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[0x7f]), Err(FrameError::UnknownKind(0x7f)));
        assert!(matches!(Frame::decode(&[kind::HELLO, 0xc1]), Err(FrameError::Decode { .. })));
        assert_eq!(FrameError::UnknownKind(1).close_code(), CloseCode::ProtocolError);
    }

    /// The cases PROTOCOL.md pins down for a second implementation: a frame
    /// of length 0 has no kind (`ProtocolError`); a body must be an array (a
    /// map of the same fields is refused: `DecodeError`); a target names an
    /// id or a name (both: the id; neither: refused).
    #[test]
    fn malformed_shapes_are_refused_as_specified() {
        // Length 0: a prefix of zeros, then nothing.
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
        reader.extend(&[0, 0, 0, 0]);
        let raw = reader.next_raw().unwrap().unwrap().to_vec();
        assert_eq!(Frame::decode(&raw), Err(FrameError::Empty));
        assert_eq!(FrameError::Empty.close_code(), CloseCode::ProtocolError);
        // Close as a map {"code": 1, "reason": ""} instead of [1, ""].
        let map =
            [kind::CLOSE, 0x82, 0xa4, b'c', b'o', b'd', b'e', 0x01, 0xa6, b'r', b'e', b'a', b's', b'o', b'n', 0xa0];
        assert!(Frame::decode(&[kind::CLOSE, 0x92, 0x01, 0xa0]).is_ok(), "the array form reads");
        let err = Frame::decode(&map).unwrap_err();
        assert!(matches!(err, FrameError::Decode { kind: kind::CLOSE, .. }), "{err:?}");
        assert_eq!(err.close_code(), CloseCode::DecodeError);
        // Tell to [id 5, name "x"]: by id. To [nil, nil]: refused.
        let tell = |target: &[u8]| {
            let mut f = vec![kind::TELL, 0x94];
            f.extend_from_slice(target);
            f.extend_from_slice(&[0xc0, 0xa1, b'm', 0xc4, 0x00]);
            f
        };
        match Frame::decode(&tell(&[0x92, 0x05, 0xa1, b'x'])) {
            Ok(Frame::Tell(t)) => assert_eq!(t.target, Target::Id(5)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(Frame::decode(&tell(&[0x92, 0xc0, 0xc0])), Err(FrameError::Decode { .. })));
        assert_eq!(TellRef::decode(&tell(&[0x92, 0xc0, 0xc0])[1..]), None);
    }

    /// The evolution rule of PROTOCOL.md: a newer sender may append fields;
    /// this version ignores them.
    #[test]
    fn trailing_fields_from_a_newer_peer_are_ignored() {
        // Hello with a sixth element (a field this version does not know).
        let body = [kind::HELLO, 0x96, 0x01, 0xa1, b'c', 0xa1, b'a', 0x07, 0xcd, 0x04, 0x00, 0xa3, b'n', b'e', b'w'];
        let frame = Frame::decode(&body).unwrap();
        assert_eq!(
            frame,
            Frame::Hello(Hello { version: 1, cluster: "c".into(), node: "a".into(), run: 7, max_frame: 1024 })
        );
    }

    #[test]
    fn codes_round_trip() {
        for n in 0..20 {
            assert_eq!(CloseCode::from_u16(n).to_u16(), n);
            assert_eq!(FailureCode::from_u16(n).to_u16(), n);
        }
    }
}
