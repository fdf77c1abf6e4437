//! The [`Actor`] trait and the vocabulary of an actor's life and death.

use std::fmt;
use std::future::Future;

use crate::{ActorId, Context, Mailbox};

/// A unit of state that handles messages one at a time.
///
/// Every hook has a default, so `impl Actor for T {}` (or `#[derive(Actor)]`) is
/// enough. Hooks are `async` and run on the actor's own task, in this order:
///
/// 1. [`started`](Actor::started) before the first message;
/// 2. messages, one at a time, through [`Handler`](crate::Handler);
/// 3. [`stopping`](Actor::stopping) once the actor decided or was told to stop,
///    while its children are still running;
/// 4. the actor's children are stopped, youngest first, and awaited;
/// 5. [`stopped`](Actor::stopped), after which watchers and links are notified.
///
/// A panic in any hook or handler is caught and logged. In `started` it fails the
/// start; in a handler it goes to [`on_failure`](Actor::on_failure); in
/// `stopping`/`stopped` it is logged and the stop goes on.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Footlight actor",
    label = "not an actor",
    note = "derive it with `#[derive(Actor)]`, or write `impl Actor for {Self} {{}}` to override lifecycle hooks"
)]
pub trait Actor: Sized + Send + 'static {
    /// The mailbox this actor type gets unless
    /// [`SpawnOptions::mailbox`](crate::SpawnOptions::mailbox) says otherwise:
    /// bounded, [`Mailbox::DEFAULT_CAPACITY`] messages.
    fn default_mailbox() -> Mailbox {
        Mailbox::default()
    }

    /// How long this actor type may take to stop when its parent, its
    /// supervisor or the system stops it, unless
    /// [`SpawnOptions::shutdown`](crate::SpawnOptions::shutdown) (or a
    /// supervisor's child spec) says otherwise. Default: 5 s, then it is
    /// killed ([`Shutdown::DEFAULT`]); supervisors wait for their children
    /// ([`Shutdown::Infinity`]), whose own policies bound the wait.
    fn shutdown_policy() -> Shutdown {
        Shutdown::DEFAULT
    }

    /// Runs before the first message. Returning an error fails the actor with
    /// [`ExitReason::Failed`] (its supervisor, if any, decides what follows).
    fn started(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Runs when the actor is about to stop, before its children are stopped.
    fn stopping(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Runs last, after the actor's children have stopped.
    fn stopped(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Decides what happens after a handler panicked.
    ///
    /// The default, [`FailureDecision::Stop`], fails the actor with
    /// [`ExitReason::Panicked`]; its supervisor then applies its restart policy.
    /// [`FailureDecision::Resume`] keeps the current state and takes the next
    /// message (the message that panicked is lost).
    fn on_failure(
        &mut self,
        ctx: &mut Context<Self>,
        failure: &Failure,
    ) -> impl Future<Output = FailureDecision> + Send {
        let _ = (ctx, failure);
        async { FailureDecision::Stop }
    }

    /// Receives the [`Terminated`] notice of an actor watched with
    /// [`Context::watch`]. Called once per watch.
    fn on_terminated(&mut self, ctx: &mut Context<Self>, terminated: Terminated) -> impl Future<Output = ()> + Send {
        let _ = (ctx, terminated);
        async {}
    }

    /// Decides what a link's exit does to this actor (see [`Context::link`]).
    ///
    /// The default propagates exits as Erlang does: any exit of a linked actor
    /// other than [`ExitReason::Normal`] (shutdown included) stops this one with
    /// [`ExitReason::Linked`]; a normal exit is ignored.
    /// Override it to trap exits (Erlang's `trap_exit`): return
    /// [`LinkDecision::Ignore`] and react in the method body.
    fn on_link_exit(&mut self, ctx: &mut Context<Self>, exit: Terminated) -> impl Future<Output = LinkDecision> + Send {
        let _ = ctx;
        async move { if exit.reason != ExitReason::Normal { LinkDecision::Stop } else { LinkDecision::Ignore } }
    }
}

/// Why an actor stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// The actor stopped itself ([`Context::stop`]) or was stopped through
    /// [`ActorRef::stop`](crate::ActorRef::stop).
    Normal,
    /// Its parent, its supervisor or the system shut it down.
    Shutdown,
    /// A handler or hook panicked; the text says which message and why.
    Panicked(String),
    /// The actor failed without a panic: [`Context::fail`] or an error from
    /// [`Actor::started`].
    Failed(String),
    /// A linked actor exited abnormally and this actor did not trap it.
    Linked {
        /// The linked actor that exited.
        from: ActorId,
        /// Its exit reason.
        reason: Box<ExitReason>,
    },
    /// A supervisor exceeded its restart intensity and gave up.
    MaxRestartsExceeded,
    /// The actor is on another node, which was lost (or left).
    NodeDown,
    /// It was killed: [`ActorRef::kill`](crate::ActorRef::kill), or it did
    /// not stop within its [`Shutdown`] timeout (or its policy is
    /// [`Shutdown::BrutalKill`]). Its task was dropped at its next await:
    /// the handler running then, and the `stopping`/`stopped` hooks, did
    /// not finish.
    Killed,
    /// A link was made to an actor that had already stopped (OTP's
    /// `noproc`): abnormal whatever that actor's own reason was, so an actor
    /// that links to share a partner's fate does not run on alone.
    NoProc,
}

/// What stopping an actor may take (OTP's child `shutdown`), used when its
/// parent, its supervisor or the system stops it.
///
/// A kill drops the actor's task at its next `.await`: a handler that never
/// yields (a blocking loop, a long computation without an await) cannot be
/// interrupted; the kill is logged, and so is an actor still running a
/// second after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Asks it to stop (its hooks run), then kills it if it has not stopped
    /// after this long.
    Timeout(std::time::Duration),
    /// Kills it at once: no hooks, no waiting for the handler.
    BrutalKill,
    /// Waits as long as it takes (for supervisors: their children's own
    /// policies bound the wait).
    Infinity,
}

impl Shutdown {
    /// The default for workers: 5 s, then a kill (as OTP).
    pub const DEFAULT: Shutdown = Shutdown::Timeout(std::time::Duration::from_secs(5));
}

impl ExitReason {
    /// Whether this reason counts as a failure in the OTP sense: everything but
    /// [`Normal`](ExitReason::Normal) and [`Shutdown`](ExitReason::Shutdown).
    /// Transient children are restarted only on abnormal exits.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }

    /// The reason at the end of a chain of link exits: for
    /// [`Linked`](ExitReason::Linked), the reason of the actor whose exit
    /// started the chain; for any other reason, itself.
    pub fn root_cause(&self) -> &ExitReason {
        let mut reason = self;
        while let ExitReason::Linked { reason: inner, .. } = reason {
            reason = inner;
        }
        reason
    }

    /// Whether the actor panicked (directly, not through a link).
    pub fn is_panic(&self) -> bool {
        matches!(self, ExitReason::Panicked(_))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Panicked(why) => write!(f, "panicked: {why}"),
            ExitReason::Failed(why) => write!(f, "failed: {why}"),
            ExitReason::Linked { from, reason } => write!(f, "linked actor {from} exited: {reason}"),
            ExitReason::MaxRestartsExceeded => f.write_str("restart intensity exceeded"),
            ExitReason::NodeDown => f.write_str("node down"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::NoProc => f.write_str("no such actor (already stopped)"),
        }
    }
}

/// The notice that an actor stopped, delivered once per watch and to links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// The actor that stopped.
    pub id: ActorId,
    /// Why it stopped.
    pub reason: ExitReason,
}

/// What [`Actor::on_failure`] decides after a handler panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureDecision {
    /// Keep the current state and go on with the next message.
    Resume,
    /// Fail the actor; its supervisor, links and watchers are told.
    Stop,
}

/// What [`Actor::on_link_exit`] decides when a linked actor exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkDecision {
    /// Trap the exit: the actor goes on.
    Ignore,
    /// Stop with [`ExitReason::Linked`].
    Stop,
}

/// A handler failure, as handed to [`Actor::on_failure`].
#[derive(Debug, Clone)]
pub struct Failure {
    /// The type name of the message whose handler failed.
    pub message_type: &'static str,
    /// The panic's message.
    pub panic: String,
}

/// An error returned from [`Actor::started`].
///
/// Any `std::error::Error` converts into it with `?`; [`ActorError::msg`] builds
/// one from text. It keeps the error's text, which becomes the
/// [`ExitReason::Failed`] the actor exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorError(String);

impl ActorError {
    /// An error with this message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for ActorError {
    fn from(err: E) -> Self {
        Self(err.to_string())
    }
}

impl From<ActorError> for ExitReason {
    fn from(err: ActorError) -> Self {
        ExitReason::Failed(err.0)
    }
}
