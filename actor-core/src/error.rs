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
}

impl<M> SendError<M> {
    /// Takes back the message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Closed(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
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
}

impl<M> TrySendError<M> {
    /// Takes back the message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full(m) | TrySendError::Closed(m) => m,
        }
    }
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// An `ask` did not produce a reply. Resolves exactly once per ask.
#[derive(thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskError<M> {
    /// The actor had stopped before the message was enqueued; it is returned.
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
}

impl<M> fmt::Debug for AskError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::Closed(_) => f.write_str("Closed(..)"),
            AskError::Timeout => f.write_str("Timeout"),
            AskError::NoReply => f.write_str("NoReply"),
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
    /// Registering a name failed.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// Looking a name up failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Spawning failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

impl<M> From<SendError<M>> for Error {
    fn from(err: SendError<M>) -> Self {
        match err {
            SendError::Closed(_) => Error::Closed,
        }
    }
}

impl<M> From<TrySendError<M>> for Error {
    fn from(err: TrySendError<M>) -> Self {
        match err {
            TrySendError::Full(_) => Error::Full,
            TrySendError::Closed(_) => Error::Closed,
        }
    }
}

impl<M> From<AskError<M>> for Error {
    fn from(err: AskError<M>) -> Self {
        match err {
            AskError::Closed(_) => Error::Closed,
            AskError::Timeout => Error::Timeout,
            AskError::NoReply => Error::NoReply,
        }
    }
}
