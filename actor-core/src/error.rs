//! Error types. Each operation has its own enum; send errors give the
//! undelivered message back.

use std::fmt;

/// `tell` failed: the actor is no longer running. The message is returned.
#[derive(thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError<M> {
    /// The actor has stopped; the message was not delivered.
    #[error("the actor has stopped; message not delivered")]
    Closed(M),
    /// The actor is on another node and this message type cannot cross nodes
    /// (no `remote = "..."` wire name).
    #[error("this message type cannot be sent to a remote actor")]
    NotRemote(M),
    /// The actor's node is unreachable or gone.
    #[error("the actor's node is down; message not delivered")]
    NodeDown(M),
    /// The remoting layer refused the message (it did not encode, or a limit).
    #[error("the message was rejected: {1}")]
    Rejected(M, String),
}

impl<M> SendError<M> {
    /// Takes back the message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Closed(m) | SendError::NotRemote(m) | SendError::NodeDown(m) | SendError::Rejected(m, _) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::NotRemote(_) => f.write_str("NotRemote(..)"),
            SendError::NodeDown(_) => f.write_str("NodeDown(..)"),
            SendError::Rejected(_, why) => write!(f, "Rejected(.., {why:?})"),
        }
    }
}

/// `try_tell` failed. The message is returned.
#[derive(thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrySendError<M> {
    /// The mailbox is at capacity; the message was not enqueued.
    #[error("the mailbox is full; message not delivered")]
    Full(M),
    /// The actor has stopped; the message was not delivered.
    #[error("the actor has stopped; message not delivered")]
    Closed(M),
    /// The actor is on another node and this message type cannot cross nodes.
    #[error("this message type cannot be sent to a remote actor")]
    NotRemote(M),
    /// The actor's node is unreachable or gone.
    #[error("the actor's node is down; message not delivered")]
    NodeDown(M),
    /// The remoting layer refused the message (it did not encode, or a limit).
    #[error("the message was rejected: {1}")]
    Rejected(M, String),
}

impl<M> TrySendError<M> {
    /// Takes back the message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full(m)
            | TrySendError::Closed(m)
            | TrySendError::NotRemote(m)
            | TrySendError::NodeDown(m)
            | TrySendError::Rejected(m, _) => m,
        }
    }
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
            TrySendError::NotRemote(_) => f.write_str("NotRemote(..)"),
            TrySendError::NodeDown(_) => f.write_str("NodeDown(..)"),
            TrySendError::Rejected(_, why) => write!(f, "Rejected(.., {why:?})"),
        }
    }
}

/// Why an ask never left this node ([`AskError::NotSent`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotSent {
    /// The actor's node was known to be down (or no connection to it could
    /// take the request, or the node closed the connection before reading
    /// it).
    #[error("the actor's node is down")]
    NodeDown,
    /// The message did not encode.
    #[error("the message did not encode: {0}")]
    Encode(String),
}

impl<M> AskError<M> {
    /// The message, if the request was not handled (`Closed`, `NotRemote`,
    /// `NotSent`); `None` once it may have been handled.
    pub fn into_message(self) -> Option<M> {
        match self {
            AskError::Closed(m) | AskError::NotRemote(m) | AskError::NotSent(m, _) => Some(m),
            _ => None,
        }
    }

    /// The message, if it was not delivered for a reason that another
    /// actor, or a later attempt, may not meet: the actor had stopped
    /// (`Closed`), or its node was down or closed the connection without
    /// reading it (`NotSent` with [`NotSent::NodeDown`]). The error itself
    /// otherwise (a message that cannot cross nodes or did not encode would
    /// fail the same way again). What proxies that resend to the next
    /// instance of an actor use.
    pub fn into_undelivered(self) -> Result<M, Self> {
        match self {
            AskError::Closed(m) | AskError::NotSent(m, NotSent::NodeDown) => Ok(m),
            other => Err(other),
        }
    }
}

/// An `ask` did not produce a reply. Resolves exactly once per ask.
#[derive(thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskError<M> {
    /// The actor had stopped before the message was enqueued; it is returned.
    /// For an actor on another node: its node answered that it has no such
    /// actor (it stopped, or the ref is to an earlier run of the node).
    #[error("the actor has stopped; message not delivered")]
    Closed(M),
    /// No reply within the ask's timeout. The message may or may not have been
    /// handled.
    #[error("no reply within the timeout")]
    Timeout,
    /// The message was enqueued but the actor stopped, failed or restarted before
    /// replying.
    #[error("the actor stopped or failed before replying")]
    NoReply,
    /// The actor is on another node and this message type cannot cross nodes;
    /// the message is returned.
    #[error("this message type cannot be sent to a remote actor")]
    NotRemote(M),
    /// The actor's node was lost while the request was queued for it, on
    /// its way, or being handled: it may or may not have been handled.
    #[error("the actor's node is down")]
    NodeDown,
    /// The request was not handled, and the message is returned: it never
    /// left this node (its actor's node was known to be down, or the message
    /// did not encode), or the actor's node closed the connection without
    /// reading it (it was shutting down).
    #[error("the request was not sent: {1}")]
    NotSent(M, NotSent),
    /// The remote side or a limit refused the request.
    #[error("the request was rejected: {0}")]
    Rejected(String),
}

impl<M> fmt::Debug for AskError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::Closed(_) => f.write_str("Closed(..)"),
            AskError::Timeout => f.write_str("Timeout"),
            AskError::NoReply => f.write_str("NoReply"),
            AskError::NotRemote(_) => f.write_str("NotRemote(..)"),
            AskError::NodeDown => f.write_str("NodeDown"),
            AskError::NotSent(_, why) => write!(f, "NotSent(.., {why:?})"),
            AskError::Rejected(why) => write!(f, "Rejected({why:?})"),
        }
    }
}

/// Registering a name failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another live actor holds the name.
    #[error("the name {0:?} is already registered")]
    NameTaken(String),
    /// The actor had already stopped.
    #[error("the actor has stopped")]
    ActorStopped,
    /// The ref points at an actor on another node; only local actors can be
    /// registered in a system.
    #[error("only local actors can be registered")]
    NotLocal,
}

/// Looking a name up failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// No live actor holds the name.
    #[error("no actor is registered as {0:?}")]
    NotFound(String),
    /// The actor registered under the name is of another type.
    #[error("the actor registered as {name:?} is a {actual}, not a {expected}")]
    WrongType {
        /// The name looked up.
        name: String,
        /// The type asked for.
        expected: &'static str,
        /// The registered actor's type.
        actual: &'static str,
    },
}

/// Spawning failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// The requested name is held by another live actor; nothing was spawned.
    #[error("the name {0:?} is already registered")]
    NameTaken(String),
}

/// Every Footlight error in one type, for applications that bubble errors up
/// with `?`. Messages carried by send errors are dropped in the conversion.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The actor has stopped; a message was not delivered.
    #[error("the actor has stopped; message not delivered")]
    Closed,
    /// The mailbox was full; a message was not delivered.
    #[error("the mailbox is full; message not delivered")]
    Full,
    /// An ask timed out.
    #[error("no reply within the timeout")]
    Timeout,
    /// An asked actor stopped before replying.
    #[error("the actor stopped or failed before replying")]
    NoReply,
    /// A message type that cannot cross nodes was sent to a remote actor.
    #[error("this message type cannot be sent to a remote actor")]
    NotRemote,
    /// The actor's node is unreachable or gone.
    #[error("the actor's node is down")]
    NodeDown,
    /// A remote request or message was refused.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Registering a name failed.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// Looking a name up failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Spawning failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A supervisor refused a request about its children.
    #[error(transparent)]
    Child(#[from] crate::supervisor::ChildError),
}

impl<M> From<SendError<M>> for Error {
    fn from(err: SendError<M>) -> Self {
        match err {
            SendError::Closed(_) => Error::Closed,
            SendError::NotRemote(_) => Error::NotRemote,
            SendError::NodeDown(_) => Error::NodeDown,
            SendError::Rejected(_, why) => Error::Rejected(why),
        }
    }
}

impl<M> From<TrySendError<M>> for Error {
    fn from(err: TrySendError<M>) -> Self {
        match err {
            TrySendError::Full(_) => Error::Full,
            TrySendError::Closed(_) => Error::Closed,
            TrySendError::NotRemote(_) => Error::NotRemote,
            TrySendError::NodeDown(_) => Error::NodeDown,
            TrySendError::Rejected(_, why) => Error::Rejected(why),
        }
    }
}

impl<M> From<AskError<M>> for Error {
    fn from(err: AskError<M>) -> Self {
        match err {
            AskError::Closed(_) => Error::Closed,
            AskError::Timeout => Error::Timeout,
            AskError::NoReply => Error::NoReply,
            AskError::NotRemote(_) => Error::NotRemote,
            AskError::NodeDown | AskError::NotSent(_, NotSent::NodeDown) => Error::NodeDown,
            AskError::NotSent(_, NotSent::Encode(why)) => Error::Rejected(why),
            AskError::Rejected(why) => Error::Rejected(why),
        }
    }
}
