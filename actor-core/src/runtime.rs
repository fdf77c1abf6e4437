//! The actor task: spawning, the message loop, failure handling, restarts in
//! place for supervised children, and the bookkeeping when an actor dies.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio::sync::oneshot;
use tracing::Instrument;

use crate::cell::{ActorCell, Remains, Signal, StartAck};
use crate::mailbox::{BoxEnvelope, Queue};
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
    pub(crate) report: Arc<dyn Fn(ChildReport) + Send + Sync>,
    /// Fired once the first instance's `started` returned.
    pub(crate) started: Option<StartAck>,
}

/// A supervised child's exit, as told to its supervisor.
pub(crate) struct ChildReport {
    pub(crate) id: ActorId,
    /// Which instance exited: 0 for the first, one more at every restart. Lets
    /// the supervisor tell a stale report from a fresh one.
    pub(crate) generation: u64,
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
    let myself = create::<A>(&args.options);
    if let Some(name) = &args.options.name {
        system.register(name, &myself).map_err(|_| SpawnError::NameTaken(name.clone()))?;
    }
    launch(system, myself.clone(), initial, args);
    Ok(myself)
}

/// Spawns an actor whose options carry no name (so nothing can conflict).
pub(crate) fn spawn_unnamed<A: Actor>(system: &ActorSystem, initial: Option<A>, args: SpawnArgs<A>) -> ActorRef<A> {
    let myself = create::<A>(&args.options);
    launch(system, myself.clone(), initial, args);
    myself
}

fn create<A: Actor>(options: &SpawnOptions) -> ActorRef<A> {
    let display = options.name.as_deref().or(options.label.as_deref()).map(Arc::from);
    let mailbox = options.mailbox.unwrap_or_else(A::default_mailbox);
    let shutdown = options.shutdown.unwrap_or_else(A::shutdown_policy);
    let cell = Arc::new(ActorCell::new(std::any::type_name::<A>(), display, mailbox, shutdown));
    ActorRef::new(cell)
}

fn launch<A: Actor>(system: &ActorSystem, myself: ActorRef<A>, initial: Option<A>, args: SpawnArgs<A>) {
    let cell = myself.cell().clone();
    let parent = args.parent.as_ref().map(Arc::downgrade);
    if args.parent.is_none() {
        system.add_top_level(&cell);
    }
    // A root span: a child's events name the child, not the chain of its
    // supervisors (the chain is in the supervision tree, not in each line).
    // At error level, so that it is on whenever an event inside is: the
    // runtime's events name the actor only through it.
    let span = tracing::error_span!(parent: None, "actor", actor = %cell);
    let ctx = Context::new(myself, system.clone(), parent);
    // Two task bodies rather than one that branches: an `async fn` keeps its
    // arguments beside the future it awaits, so a wrapper would add their size
    // to every idle actor.
    // The guard is made here, not in the task: a task killed before it first
    // ran still drops it, and so still does the death bookkeeping.
    // A span no subscriber wants is not wrapped around the task: the
    // wrapper would still enter and leave it on every poll, and its 40
    // bytes would sit in every idle actor.
    let task = match (args.supervision, initial) {
        (Some(supervision), _) => {
            let running = Running { ctx, closed: false, report: Some(supervision.report.clone()) };
            if span.is_disabled() {
                tokio::spawn(run_supervised(running, supervision))
            } else {
                tokio::spawn(run_supervised(running, supervision).instrument(span))
            }
        }
        (None, Some(actor)) => {
            let running = Running { ctx, closed: false, report: None };
            if span.is_disabled() {
                tokio::spawn(run_unsupervised(actor, running))
            } else {
                tokio::spawn(run_unsupervised(actor, running).instrument(span))
            }
        }
        (None, None) => {
            close(&ctx, ExitReason::Failed("no actor instance to run".into()));
            return;
        }
    };
    cell.set_task(task.abort_handle());
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
    Restart(Option<StartAck>),
    Stop(ExitReason),
}

/// The context of a running actor task. A task dropped before it closed
/// its actor (killed, or its runtime went away) still does the death
/// bookkeeping: reason `Killed`, its children killed, its supervisor told.
struct Running<A: Actor> {
    ctx: Context<A>,
    closed: bool,
    report: Option<Arc<dyn Fn(ChildReport) + Send + Sync>>,
}

impl<A: Actor> Running<A> {
    fn close(&mut self, reason: ExitReason) {
        self.closed = true;
        close(&self.ctx, reason);
    }
}

impl<A: Actor> Drop for Running<A> {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.ctx.cancel_timers();
        for child in self.ctx.child_cells() {
            child.kill();
        }
        close(&self.ctx, ExitReason::Killed);
        if let Some(report) = &self.report {
            let id = self.ctx.id();
            report(ChildReport { id, generation: 0, reason: ExitReason::Killed, terminal: true });
        }
    }
}

/// An actor without a supervisor: one instance, then the end.
async fn run_unsupervised<A: Actor>(actor: A, mut running: Running<A>) {
    let reason = match run_instance(actor, &mut running.ctx, None).await {
        InstanceEnd::Exited(reason) | InstanceEnd::Stopped(reason) => reason,
        // Only a supervisor suspends, and only its own children.
        InstanceEnd::Suspended(_) => ExitReason::Shutdown,
    };
    running.close(reason);
}

/// A supervised child: instances come and go on the supervisor's word while
/// the mailbox (and so every ref) stays.
async fn run_supervised<A: Actor>(mut running: Running<A>, mut supervision: Supervision<A>) {
    let ctx = &mut running.ctx;
    let cell = ctx.myself().cell().clone();
    let mut started_ack = supervision.started.take();
    let mut generation = 0;
    let reason = loop {
        let end = match build(&cell, &supervision) {
            Ok(actor) => run_instance(actor, ctx, started_ack.take()).await,
            Err(reason) => {
                // The supervisor may be waiting for this start: let it go.
                if let Some(ack) = started_ack.take() {
                    let _ = ack.send(Err(reason.clone()));
                }
                InstanceEnd::Exited(reason)
            }
        };
        match end {
            InstanceEnd::Stopped(reason) => break reason,
            InstanceEnd::Exited(reason) => {
                (supervision.report)(ChildReport { id: cell.id(), generation, reason, terminal: false })
            }
            InstanceEnd::Suspended(ack) => {
                let _ = ack.send(());
            }
        }
        match Box::pin(wait_for_decision(&cell, ctx)).await {
            Decision::Restart(ack) => {
                started_ack = ack;
                generation += 1;
            }
            Decision::Stop(reason) => break reason,
        }
    };
    running.close(reason.clone());
    (supervision.report)(ChildReport { id: cell.id(), generation, reason, terminal: true });
}

/// Closes the mailbox (queued messages are dropped; pending asks get
/// `NoReply`) and runs the death bookkeeping.
fn close<A: Actor>(ctx: &Context<A>, reason: ExitReason) {
    let cell = ctx.myself().cell();
    cell.gate.close();
    let queued = ctx.myself().queue().close();
    // Dropping a queued message runs user `Drop` code: a panic there must not
    // skip the bookkeeping below.
    if let Err(payload) = caught(|| std::panic::catch_unwind(AssertUnwindSafe(move || drop(queued)))) {
        crate::stats::panicked(cell.type_name());
        tracing::error!(actor = %cell, panic = %panic_text(payload.as_ref()), "dropping a queued message panicked");
    }
    finish(cell, ctx, reason);
}

/// Builds a fresh instance of a supervised actor, catching a panicking factory.
fn build<A: Actor>(cell: &ActorCell, sup: &Supervision<A>) -> Result<A, ExitReason> {
    caught(|| std::panic::catch_unwind(AssertUnwindSafe(|| (sup.factory)()))).map_err(|payload| {
        let text = panic_text(payload.as_ref());
        crate::stats::panicked(cell.type_name());
        tracing::error!(panic = %text, "actor factory panicked");
        ExitReason::Panicked(format!("{text} (in the actor factory)"))
    })
}

/// Waits, between two instances, for the supervisor's word. User messages stay
/// queued in the mailbox meanwhile.
///
/// Watch and link notices that arrive meanwhile are kept for the next
/// instance: watches and links belong to the actor, not to one instance.
async fn wait_for_decision<A: Actor>(cell: &Arc<ActorCell>, ctx: &mut Context<A>) -> Decision {
    let mut kept = Vec::new();
    loop {
        while let Some(sig) = cell.next_signal() {
            match sig {
                Signal::Restart(ack) => {
                    cell.requeue_front(kept);
                    return Decision::Restart(ack);
                }
                Signal::Stop(reason) => return Decision::Stop(reason),
                Signal::Suspend(ack) => {
                    let _ = ack.send(());
                }
                Signal::ChildTerminated(id) => {
                    ctx.remove_child(id);
                }
                Signal::Children(reply) => {
                    let _ = reply.send(ctx.child_cells());
                }
                notice @ (Signal::Terminated(_) | Signal::LinkExit(_)) => kept.push(notice),
            }
        }
        cell.signalled().await;
    }
}

/// The start and the stop sequence of an instance, in place when they fit
/// (as a handler's future does, in a slot that overlaps the handler's: they
/// never run at the same time), boxed otherwise: an actor whose hooks await
/// a lot does not make every idle actor of its type bigger.
type Hook<'a, T> = stackfuture::StackFuture<'a, T, { crate::mailbox::INLINE_HANDLER }>;

/// Runs one instance of an actor: `started`, messages, then the stop sequence.
///
/// Rare paths (signals that run hooks, panics) are boxed futures so that the
/// state every idle actor carries stays small; the message path is not boxed,
/// and the start and stop sequences are boxed only when they do not fit
/// [`Hook`].
async fn run_instance<A: Actor>(mut actor: A, ctx: &mut Context<A>, started_ack: Option<StartAck>) -> InstanceEnd {
    ctx.stop = None;
    let cell = ctx.myself().cell().clone();
    let end = match Hook::from_or_box(start_instance(&mut actor, ctx, &cell)).await {
        Ok(()) => {
            cell.mark_started();
            if let Some(ack) = started_ack {
                let _ = ack.send(Ok(()));
            }
            let end = message_loop(&mut actor, ctx, &cell).await;
            Hook::from_or_box(end_instance(&mut actor, ctx, &cell, true)).await;
            end
        }
        Err(reason) => {
            if let Some(ack) = started_ack {
                let _ = ack.send(Err(reason.clone()));
            }
            Hook::from_or_box(end_instance(&mut actor, ctx, &cell, false)).await;
            InstanceEnd::Exited(reason)
        }
    };
    // Dropping user state can panic too; it must not take the task down.
    if let Err(payload) = caught(|| std::panic::catch_unwind(AssertUnwindSafe(move || drop(actor)))) {
        crate::stats::panicked(cell.type_name());
        tracing::error!(panic = %panic_text(payload.as_ref()), "actor drop panicked");
    }
    end
}

async fn start_instance<A: Actor>(actor: &mut A, ctx: &mut Context<A>, cell: &ActorCell) -> Result<(), ExitReason> {
    match CatchUnwind(pin!(actor.started(ctx))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "actor failed to start");
            Err(err.into())
        }
        Err(payload) => {
            let text = panic_text(payload.as_ref());
            crate::stats::panicked(cell.type_name());
            tracing::error!(panic = %text, "started hook panicked");
            Err(ExitReason::Panicked(format!("{text} (in started)")))
        }
    }
}

/// The stop sequence: timers off, `stopping`, children (youngest first),
/// `stopped`. The hooks run only if `started` succeeded.
async fn end_instance<A: Actor>(actor: &mut A, ctx: &mut Context<A>, cell: &ActorCell, started: bool) {
    ctx.cancel_timers();
    if started && let Err(payload) = CatchUnwind(pin!(actor.stopping(ctx))).await {
        crate::stats::panicked(cell.type_name());
        tracing::error!(panic = %panic_text(payload.as_ref()), "stopping hook panicked");
    }
    if ctx.has_children() {
        Box::pin(ctx.stop_children()).await;
    }
    if started && let Err(payload) = CatchUnwind(pin!(actor.stopped(ctx))).await {
        crate::stats::panicked(cell.type_name());
        tracing::error!(panic = %panic_text(payload.as_ref()), "stopped hook panicked");
    }
}

async fn message_loop<A: Actor>(actor: &mut A, ctx: &mut Context<A>, cell: &Arc<ActorCell>) -> InstanceEnd {
    let me = ctx.myself().clone();
    let mut state = LoopState { batch: VecDeque::new(), taken: 0, release_every: cell.gate.release_batch() };
    let end = message_loop_inner(actor, ctx, cell, me.queue(), &mut state).await;
    // Messages taken from the queue but not handled go back in front of it, and
    // slots of handled ones are released: a restarted instance keeps the mailbox.
    me.queue().put_back(std::mem::take(&mut state.batch));
    cell.gate.release(state.taken, true);
    end
}

struct LoopState<A: Actor> {
    /// Envelopes swapped out of the queue, handled front to back.
    batch: VecDeque<BoxEnvelope<A>>,
    /// Handled messages whose gate slots are not released yet.
    taken: usize,
    release_every: usize,
}

async fn message_loop_inner<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    cell: &Arc<ActorCell>,
    queue: &Queue<A>,
    st: &mut LoopState<A>,
) -> InstanceEnd {
    loop {
        // Signals go first, before every message.
        if cell.has_signals() {
            while let Some(sig) = cell.next_signal() {
                let end = match sig {
                    // Notices run a hook: boxed, so that its future is not
                    // part of every idle actor.
                    Signal::Terminated(_) | Signal::LinkExit(_) => Box::pin(handle_notice(actor, ctx, cell, sig)).await,
                    sig => handle_signal(ctx, sig),
                };
                if let Some(end) = end {
                    return end;
                }
            }
        }
        let env = match st.batch.pop_front() {
            Some(env) => env,
            None => {
                if st.batch.capacity() > 256 {
                    // Do not keep a burst's worth of memory around while idle.
                    st.batch = VecDeque::new();
                }
                let got = std::future::poll_fn(|cx| {
                    if cell.has_signals() {
                        return Poll::Ready(false);
                    }
                    if queue.take_all(&mut st.batch, || cell.register(cx.waker())) {
                        cell.mark_active();
                        return Poll::Ready(true);
                    }
                    // About to wait (the waker is registered): hand every slot
                    // taken so far back first, then catch a signal that raced in.
                    cell.gate.release(std::mem::take(&mut st.taken), true);
                    if cell.has_signals() { Poll::Ready(false) } else { Poll::Pending }
                })
                .await;
                match st.batch.pop_front() {
                    Some(env) if got => env,
                    _ => continue,
                }
            }
        };
        st.taken += 1;
        if st.taken >= st.release_every {
            cell.gate.release(std::mem::take(&mut st.taken), false);
        }
        // Let other tasks on this worker run when the mailbox never drains.
        tokio::task::consume_budget().await;
        // A handler that waits (for instance on a full mailbox, possibly its
        // own) first hands back every slot held so far, its own message's too.
        let message_type = env.message_type();
        let release = || cell.gate.release(std::mem::take(&mut st.taken), true);
        let outcome = if crate::mailbox::debug_spans() || crate::stats::handler_times() {
            // Observed: a span, a clock, or both. Boxed, so that the state
            // every actor's task carries holds only the plain path's.
            let observed = Box::pin(handle_observed(actor, ctx, cell, env, message_type));
            FirstPending { fut: observed, on_pending: Some(release) }.await
        } else {
            let handler = env.handle(actor, ctx);
            FirstPending { fut: CatchUnwind(pin!(handler)), on_pending: Some(release) }.await
        };
        if let Err(payload) = outcome {
            // The actor's `on_failure` may wait too: slots first, as above.
            cell.gate.release(std::mem::take(&mut st.taken), true);
            if let Some(end) = Box::pin(on_panic(actor, ctx, cell, message_type, payload)).await {
                return end;
            }
        }
        if let Some(reason) = ctx.take_stop() {
            return InstanceEnd::Exited(reason);
        }
    }
}

/// Runs a handler in its span (a child of the span the message was sent
/// in, if it was kept, naming the actor then: it is not under the actor's
/// span; else of the actor's span) and times it, as asked.
async fn handle_observed<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    cell: &ActorCell,
    env: BoxEnvelope<A>,
    message_type: &'static str,
) -> Result<(), Box<dyn Any + Send>> {
    let span = if !crate::mailbox::debug_spans() {
        tracing::Span::none()
    } else {
        match env.sent_in() {
            Some(sent_in) => tracing::debug_span!(parent: sent_in, "handle", message_type, actor = %cell),
            None => tracing::debug_span!("handle", message_type),
        }
    };
    // Without a subscriber that wants the span, no wrapper: entering and
    // leaving a disabled span on every poll (and on the drop) still costs.
    let started = crate::stats::handler_times().then(std::time::Instant::now);
    let outcome = if span.is_disabled() {
        CatchUnwind(pin!(env.handle(actor, ctx))).await
    } else {
        CatchUnwind(pin!(env.handle(actor, ctx))).instrument(span).await
    };
    if let Some(started) = started {
        crate::stats::handled_in(cell.type_name(), started.elapsed());
    }
    outcome
}

/// A handler panicked: log it and let the actor decide.
async fn on_panic<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    cell: &ActorCell,
    message_type: &'static str,
    payload: Box<dyn Any + Send>,
) -> Option<InstanceEnd> {
    let text = panic_text(payload.as_ref());
    crate::stats::panicked(cell.type_name());
    tracing::error!(message_type, panic = %text, "handler panicked");
    let failure = Failure { message_type, panic: text };
    let reason = || ExitReason::Panicked(format!("{} (while handling {})", failure.panic, failure.message_type));
    match CatchUnwind(pin!(actor.on_failure(ctx, &failure))).await {
        Ok(FailureDecision::Resume) => {
            tracing::warn!(message_type, "resuming after a handler panic");
            None
        }
        Ok(FailureDecision::Stop) => Some(InstanceEnd::Exited(reason())),
        Err(payload) => {
            crate::stats::panicked(cell.type_name());
            tracing::error!(panic = %panic_text(payload.as_ref()), "on_failure hook panicked");
            Some(InstanceEnd::Exited(reason()))
        }
    }
}

/// A signal that runs no hook: handled at once.
fn handle_signal<A: Actor>(ctx: &mut Context<A>, sig: Signal) -> Option<InstanceEnd> {
    match sig {
        Signal::Stop(reason) => Some(InstanceEnd::Stopped(reason)),
        Signal::Suspend(ack) => Some(InstanceEnd::Suspended(ack)),
        Signal::ChildTerminated(id) => {
            ctx.remove_child(id);
            None
        }
        Signal::Restart(_) => None,
        Signal::Children(reply) => {
            let _ = reply.send(ctx.child_cells());
            None
        }
        // Notices run hooks: see `handle_notice`.
        Signal::Terminated(_) | Signal::LinkExit(_) => None,
    }
}

/// A watch or link notice: runs the actor's hook for it.
async fn handle_notice<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    cell: &ActorCell,
    sig: Signal,
) -> Option<InstanceEnd> {
    match sig {
        Signal::Terminated(t) => {
            let outcome = CatchUnwind(pin!(actor.on_terminated(ctx, t))).await;
            match outcome {
                Ok(()) => ctx.take_stop().map(InstanceEnd::Exited),
                Err(payload) => {
                    let text = panic_text(payload.as_ref());
                    crate::stats::panicked(cell.type_name());
                    tracing::error!(panic = %text, "on_terminated hook panicked");
                    Some(InstanceEnd::Exited(ExitReason::Panicked(format!("{text} (in on_terminated)"))))
                }
            }
        }
        Signal::LinkExit(t) => {
            cell.remove_link(t.id);
            let (from, reason) = (t.id, t.reason.clone());
            let outcome = CatchUnwind(pin!(actor.on_link_exit(ctx, t))).await;
            match outcome {
                Ok(LinkDecision::Ignore) => ctx.take_stop().map(InstanceEnd::Exited),
                Ok(LinkDecision::Stop) => {
                    Some(InstanceEnd::Exited(ExitReason::Linked { from, reason: Box::new(reason) }))
                }
                Err(payload) => {
                    let text = panic_text(payload.as_ref());
                    crate::stats::panicked(cell.type_name());
                    tracing::error!(panic = %text, "on_link_exit hook panicked");
                    Some(InstanceEnd::Exited(ExitReason::Panicked(format!("{text} (in on_link_exit)"))))
                }
            }
        }
        other => handle_signal(ctx, other),
    }
}

/// Marks the actor dead and tells everyone who needs to know. Waiters of
/// `wait_for_stop` are woken last, so they see the registry already cleaned.
fn finish<A: Actor>(cell: &Arc<ActorCell>, ctx: &Context<A>, reason: ExitReason) {
    let Some(remains) = cell.finish(reason.clone()) else {
        return;
    };
    if reason.is_abnormal() {
        tracing::warn!(%reason, "actor stopped");
    } else {
        tracing::debug!(%reason, "actor stopped");
    }
    let system = ctx.system();
    for name in &remains.names {
        system.release_name(name, cell.id());
    }
    notify_death(cell, &remains, reason);
    match ctx.parent() {
        Some(parent) => parent.signal(Signal::ChildTerminated(cell.id())),
        None => system.remove_top_level(cell.id()),
    }
    cell.notify_exited();
}

/// Tells watchers and linked actors that `cell`'s actor stopped.
pub(crate) fn notify_death(cell: &ActorCell, remains: &Remains, reason: ExitReason) {
    let notice = Terminated { id: cell.id(), reason };
    for watcher in remains.watchers.iter().filter_map(|w| w.upgrade()) {
        watcher.signal(Signal::Terminated(notice.clone()));
    }
    for linked in remains.links.iter().filter_map(|l| l.upgrade()) {
        linked.signal(Signal::LinkExit(notice.clone()));
    }
}

/// Polls a future and runs `on_pending` the first time it is not ready.
struct FirstPending<F, G> {
    fut: F,
    on_pending: Option<G>,
}

impl<F: Future + Unpin, G: FnOnce() + Unpin> Future for FirstPending<F, G> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.fut).poll(cx) {
            Poll::Ready(out) => Poll::Ready(out),
            Poll::Pending => {
                if let Some(f) = this.on_pending.take() {
                    f();
                }
                Poll::Pending
            }
        }
    }
}

thread_local! {
    /// Set while actor code runs under the runtime's `catch_unwind`: a
    /// panic then is caught and logged by the runtime.
    static CAUGHT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether [`quiet_actor_panics`] was called: only then is [`CAUGHT`]
/// kept, so a program that never asks pays one relaxed load per poll.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `f` with [`CAUGHT`] set (when quiet panics were asked for).
fn caught<R>(f: impl FnOnce() -> R) -> R {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return f();
    }
    let before = CAUGHT.with(|c| c.replace(true));
    let out = f();
    CAUGHT.with(|c| c.set(before));
    out
}

/// Keeps the panics the runtime catches in actors (handlers, hooks, actor
/// factories) off stderr: each is still recorded by `tracing` (an `ERROR`
/// event with the panic's message and the actor, and a `DEBUG` event with
/// its source location), and the actor's supervisor, links and watchers see
/// it as before. Every other panic (a test's failed assertion, a panic in
/// your own tasks or threads) goes to the panic hook that was installed
/// before, unchanged. Call it once, early in `main` or a test.
pub fn quiet_actor_panics() {
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CAUGHT.with(|c| c.get()) {
            let location = info.location().map(|l| l.to_string()).unwrap_or_default();
            tracing::debug!(%location, "panic in an actor, caught by the runtime");
        } else {
            previous(info);
        }
    }));
}

/// Polls a future, turning a panic into an error.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match caught(|| std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx)))) {
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Empty;
    impl Actor for Empty {}

    /// Every idle actor carries its task's state: keep it small. The figure
    /// measured at the time of writing is 640 bytes (96 of them the inline
    /// slot a handler runs in); the bound leaves room for compiler changes
    /// while catching a regression that nests a large future into the
    /// message path.
    #[test]
    fn idle_actor_task_state_stays_small() {
        let me = create::<Empty>(&SpawnOptions::new());
        let ctx = Context::new(me, ActorSystem::new("size"), None);
        let task = run_unsupervised(Empty, Running { ctx, closed: false, report: None });
        let size = std::mem::size_of_val(&task);
        assert!(size <= 900, "actor task state grew to {size} bytes");
        // 328: 320 plus the gate's count of messages taken (for operators).
        assert!(std::mem::size_of::<ActorCell>() <= 328, "cell grew to {}", std::mem::size_of::<ActorCell>());
    }
}
