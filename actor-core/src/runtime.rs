//! The actor task: spawning, the message loop, failure handling, restarts in
//! place for supervised children, and the bookkeeping when an actor dies.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio::sync::oneshot;
use tracing::Instrument;

use crate::cell::{ActorCell, Signal};
use crate::mailbox::{BoxEnvelope, MailboxRx};
use crate::{
    Actor, ActorId, ActorRef, ActorSystem, Context, ExitReason, Failure, FailureDecision, LinkDecision, SpawnError,
    SpawnOptions, Terminated,
};

pub(crate) struct SpawnArgs<A: Actor> {
    pub(crate) options: SpawnOptions,
    /// `None` for a top-level actor.
    pub(crate) parent: Option<Arc<ActorCell>>,
    pub(crate) supervision: Option<Supervision<A>>,
}

/// How a supervised child is rebuilt and how it reports to its supervisor.
pub(crate) struct Supervision<A> {
    pub(crate) factory: Arc<dyn Fn() -> A + Send + Sync>,
    pub(crate) report: Box<dyn Fn(ChildReport) + Send + Sync>,
    /// Fired once the first instance's `started` returned.
    pub(crate) started: Option<oneshot::Sender<()>>,
}

/// A supervised child's exit, as told to its supervisor.
pub(crate) struct ChildReport {
    pub(crate) id: ActorId,
    pub(crate) reason: ExitReason,
    /// The child is gone for good (it was stopped); otherwise it waits for a
    /// `Restart` or a `Stop` signal.
    pub(crate) terminal: bool,
}

/// Spawns an actor, registering its name first if it has one.
pub(crate) fn spawn<A: Actor>(
    system: &ActorSystem,
    initial: Option<A>,
    args: SpawnArgs<A>,
) -> Result<ActorRef<A>, SpawnError> {
    let (myself, rx) = create::<A>(&args.options);
    if let Some(name) = &args.options.name {
        system.register(name, &myself).map_err(|_| SpawnError::NameTaken(name.clone()))?;
    }
    launch(system, myself.clone(), rx, initial, args);
    Ok(myself)
}

/// Spawns an actor whose options carry no name (so nothing can conflict).
pub(crate) fn spawn_unnamed<A: Actor>(system: &ActorSystem, initial: Option<A>, args: SpawnArgs<A>) -> ActorRef<A> {
    let (myself, rx) = create::<A>(&args.options);
    launch(system, myself.clone(), rx, initial, args);
    myself
}

fn create<A: Actor>(options: &SpawnOptions) -> (ActorRef<A>, MailboxRx<A>) {
    let display = options.name.as_deref().or(options.label.as_deref()).map(Arc::from);
    let mailbox = options.mailbox.unwrap_or_else(A::default_mailbox);
    let cell = Arc::new(ActorCell::new(std::any::type_name::<A>(), display, mailbox));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (ActorRef::from_parts(cell, tx), rx)
}

fn launch<A: Actor>(
    system: &ActorSystem,
    myself: ActorRef<A>,
    rx: MailboxRx<A>,
    initial: Option<A>,
    args: SpawnArgs<A>,
) {
    let cell = myself.cell().clone();
    let parent = args.parent.as_ref().map(Arc::downgrade);
    if args.parent.is_none() {
        system.add_top_level(&cell);
    }
    let span = tracing::info_span!("actor", id = cell.id().as_u64(), actor = %cell);
    let ctx = Context::new(myself, system.clone(), parent);
    tokio::spawn(run(initial, ctx, rx, args.supervision).instrument(span));
    if args.parent.is_none() && system.is_shutting_down() {
        cell.signal(Signal::Stop(ExitReason::Shutdown));
    }
}

/// How one instance of an actor ended.
enum InstanceEnd {
    /// The actor stopped or failed by itself: a supervisor may restart it.
    Exited(ExitReason),
    /// It was told to stop for good.
    Stopped(ExitReason),
    /// Its supervisor ended the instance to restart it with its siblings.
    Suspended(oneshot::Sender<()>),
}

/// What a supervised child waiting between instances is told.
enum Decision {
    Restart(Option<oneshot::Sender<()>>),
    Stop(ExitReason),
}

async fn run<A: Actor>(
    initial: Option<A>,
    mut ctx: Context<A>,
    mut rx: MailboxRx<A>,
    mut supervision: Option<Supervision<A>>,
) {
    let cell = ctx.myself().cell().clone();
    let mut started_ack = supervision.as_mut().and_then(|s| s.started.take());
    let mut next = initial;
    let reason = loop {
        let end = match next.take().map(Ok).unwrap_or_else(|| build(&cell, supervision.as_ref())) {
            Ok(actor) => run_instance(actor, &mut ctx, &mut rx, started_ack.take()).await,
            Err(reason) => InstanceEnd::Exited(reason),
        };
        let Some(sup) = supervision.as_ref() else {
            break match end {
                InstanceEnd::Exited(reason) | InstanceEnd::Stopped(reason) => reason,
                // Only a supervisor suspends, and only its own children.
                InstanceEnd::Suspended(_) => ExitReason::Shutdown,
            };
        };
        match end {
            InstanceEnd::Stopped(reason) => break reason,
            InstanceEnd::Exited(reason) => (sup.report)(ChildReport { id: cell.id(), reason, terminal: false }),
            InstanceEnd::Suspended(ack) => {
                let _ = ack.send(());
            }
        }
        match wait_for_decision(&cell, &mut ctx).await {
            Decision::Restart(ack) => started_ack = ack,
            Decision::Stop(reason) => break reason,
        }
    };
    cell.gate.close();
    rx.close();
    finish(&cell, &ctx, reason.clone());
    if let Some(sup) = supervision {
        (sup.report)(ChildReport { id: cell.id(), reason, terminal: true });
    }
}

/// Builds a fresh instance of a supervised actor, catching a panicking factory.
fn build<A: Actor>(cell: &ActorCell, supervision: Option<&Supervision<A>>) -> Result<A, ExitReason> {
    let Some(sup) = supervision else {
        return Err(ExitReason::Failed("no actor instance to run".into()));
    };
    std::panic::catch_unwind(AssertUnwindSafe(|| (sup.factory)())).map_err(|payload| {
        let text = panic_text(payload.as_ref());
        tracing::error!(actor = %cell, panic = %text, "actor factory panicked");
        ExitReason::Panicked(format!("{text} (in the actor factory)"))
    })
}

/// Waits, between two instances, for the supervisor's word. User messages stay
/// queued in the mailbox meanwhile.
async fn wait_for_decision<A: Actor>(cell: &Arc<ActorCell>, ctx: &mut Context<A>) -> Decision {
    loop {
        while let Some(sig) = cell.next_signal() {
            match sig {
                Signal::Restart(ack) => return Decision::Restart(ack),
                Signal::Stop(reason) => return Decision::Stop(reason),
                Signal::Suspend(ack) => {
                    let _ = ack.send(());
                }
                Signal::ChildTerminated(id) => {
                    ctx.children.remove(&id);
                }
                Signal::Terminated(t) | Signal::LinkExit(t) => {
                    tracing::debug!(actor = %cell, from = %t.id, "notice dropped while restarting");
                }
            }
        }
        cell.signalled().await;
    }
}

async fn run_instance<A: Actor>(
    mut actor: A,
    ctx: &mut Context<A>,
    rx: &mut MailboxRx<A>,
    started_ack: Option<oneshot::Sender<()>>,
) -> InstanceEnd {
    ctx.stop = None;
    let cell = ctx.myself().cell().clone();
    let started = CatchUnwind(pin!(actor.started(ctx))).await;
    let end = match started {
        Ok(Ok(())) => {
            if let Some(ack) = started_ack {
                let _ = ack.send(());
            }
            let end = message_loop(&mut actor, ctx, rx, &cell).await;
            ctx.cancel_timers();
            if let Err(payload) = CatchUnwind(pin!(actor.stopping(ctx))).await {
                tracing::error!(actor = %cell, panic = %panic_text(payload.as_ref()), "stopping hook panicked");
            }
            ctx.stop_children().await;
            if let Err(payload) = CatchUnwind(pin!(actor.stopped(ctx))).await {
                tracing::error!(actor = %cell, panic = %panic_text(payload.as_ref()), "stopped hook panicked");
            }
            end
        }
        Ok(Err(err)) => {
            tracing::error!(actor = %cell, error = %err, "actor failed to start");
            ctx.cancel_timers();
            ctx.stop_children().await;
            InstanceEnd::Exited(err.into())
        }
        Err(payload) => {
            let text = panic_text(payload.as_ref());
            tracing::error!(actor = %cell, panic = %text, "started hook panicked");
            ctx.cancel_timers();
            ctx.stop_children().await;
            InstanceEnd::Exited(ExitReason::Panicked(format!("{text} (in started)")))
        }
    };
    // Dropping user state can panic too; it must not take the task down.
    if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(actor))) {
        tracing::error!(actor = %cell, panic = %panic_text(payload.as_ref()), "actor drop panicked");
    }
    end
}

async fn message_loop<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    rx: &mut MailboxRx<A>,
    cell: &Arc<ActorCell>,
) -> InstanceEnd {
    let batch = cell.gate.release_batch();
    let mut taken = 0;
    let end = message_loop_inner(actor, ctx, rx, cell, batch, &mut taken).await;
    // Slots of messages taken but not yet released go back before anything
    // else (a restarted instance keeps the mailbox).
    cell.gate.release(taken);
    end
}

async fn message_loop_inner<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    rx: &mut MailboxRx<A>,
    cell: &Arc<ActorCell>,
    batch: usize,
    taken: &mut usize,
) -> InstanceEnd {
    loop {
        if cell.has_signals() {
            while let Some(sig) = cell.next_signal() {
                if let Some(end) = handle_signal(actor, ctx, cell, sig).await {
                    return end;
                }
            }
        }
        // One poll for both queues: a queued signal wins; otherwise the next
        // message. Tokio's `poll_recv` spends the task's cooperative budget, so
        // a never-empty mailbox still lets other tasks on this worker run.
        let next = std::future::poll_fn(|cx| {
            if cell.has_signals() {
                return Poll::Ready(None);
            }
            match rx.poll_recv(cx) {
                Poll::Ready(env) => Poll::Ready(Some(env)),
                Poll::Pending => {
                    // About to wait: hand every slot taken so far back first.
                    cell.gate.release(std::mem::take(taken));
                    cell.poll_signal(cx).map(|()| None)
                }
            }
        })
        .await;
        let env = match next {
            None => continue,
            Some(Some(env)) => {
                *taken += 1;
                if *taken >= batch {
                    cell.gate.release(std::mem::take(taken));
                }
                env
            }
            // The context holds a sender, so this cannot happen while we run.
            Some(None) => return InstanceEnd::Exited(ExitReason::Normal),
        };
        if let Some(end) = handle_envelope(actor, ctx, cell, env).await {
            return end;
        }
        if let Some(reason) = ctx.stop.take() {
            return InstanceEnd::Exited(reason);
        }
    }
}

async fn handle_envelope<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    cell: &ActorCell,
    env: BoxEnvelope<A>,
) -> Option<InstanceEnd> {
    let message_type = env.message_type();
    let span = tracing::debug_span!("handle", message = message_type);
    let outcome = CatchUnwind(env.handle(actor, ctx)).instrument(span).await;
    let Err(payload) = outcome else {
        return None;
    };
    let text = panic_text(payload.as_ref());
    tracing::error!(actor = %cell, message = message_type, panic = %text, "handler panicked");
    let failure = Failure { message_type, panic: text };
    let reason = || ExitReason::Panicked(format!("{} (while handling {})", failure.panic, failure.message_type));
    match CatchUnwind(pin!(actor.on_failure(ctx, &failure))).await {
        Ok(FailureDecision::Resume) => {
            tracing::warn!(actor = %cell, message = message_type, "resuming after a handler panic");
            None
        }
        Ok(FailureDecision::Stop) => Some(InstanceEnd::Exited(reason())),
        Err(payload) => {
            tracing::error!(actor = %cell, panic = %panic_text(payload.as_ref()), "on_failure hook panicked");
            Some(InstanceEnd::Exited(reason()))
        }
    }
}

async fn handle_signal<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    cell: &ActorCell,
    sig: Signal,
) -> Option<InstanceEnd> {
    match sig {
        Signal::Stop(reason) => Some(InstanceEnd::Stopped(reason)),
        Signal::Suspend(ack) => Some(InstanceEnd::Suspended(ack)),
        Signal::ChildTerminated(id) => {
            ctx.children.remove(&id);
            None
        }
        Signal::Restart(_) => None,
        Signal::Terminated(t) => {
            let outcome = CatchUnwind(pin!(actor.on_terminated(ctx, t))).await;
            match outcome {
                Ok(()) => ctx.stop.take().map(InstanceEnd::Exited),
                Err(payload) => {
                    let text = panic_text(payload.as_ref());
                    tracing::error!(actor = %cell, panic = %text, "on_terminated hook panicked");
                    Some(InstanceEnd::Exited(ExitReason::Panicked(format!("{text} (in on_terminated)"))))
                }
            }
        }
        Signal::LinkExit(t) => {
            cell.remove_link(t.id);
            let (from, reason) = (t.id, t.reason.clone());
            let outcome = CatchUnwind(pin!(actor.on_link_exit(ctx, t))).await;
            match outcome {
                Ok(LinkDecision::Ignore) => ctx.stop.take().map(InstanceEnd::Exited),
                Ok(LinkDecision::Stop) => {
                    Some(InstanceEnd::Exited(ExitReason::Linked { from, reason: Box::new(reason) }))
                }
                Err(payload) => {
                    let text = panic_text(payload.as_ref());
                    tracing::error!(actor = %cell, panic = %text, "on_link_exit hook panicked");
                    Some(InstanceEnd::Exited(ExitReason::Panicked(format!("{text} (in on_link_exit)"))))
                }
            }
        }
    }
}

/// Marks the actor dead and tells everyone who needs to know. Waiters of
/// `wait_for_stop` are woken last, so they see the registry already cleaned.
fn finish<A: Actor>(cell: &Arc<ActorCell>, ctx: &Context<A>, reason: ExitReason) {
    let Some(remains) = cell.finish(reason.clone()) else {
        return;
    };
    if reason.is_abnormal() {
        tracing::warn!(actor = %cell, %reason, "actor stopped");
    } else {
        tracing::debug!(actor = %cell, %reason, "actor stopped");
    }
    let system = ctx.system();
    for name in &remains.names {
        system.release_name(name, cell.id());
    }
    let notice = Terminated { id: cell.id(), reason };
    for watcher in remains.watchers.iter().filter_map(|w| w.upgrade()) {
        watcher.signal(Signal::Terminated(notice.clone()));
    }
    for linked in remains.links.iter().filter_map(|l| l.upgrade()) {
        linked.signal(Signal::LinkExit(notice.clone()));
    }
    match ctx.parent() {
        Some(parent) => parent.signal(Signal::ChildTerminated(cell.id())),
        None => system.remove_top_level(cell.id()),
    }
    cell.notify_exited();
}

/// Polls a future, turning a panic into an error.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
