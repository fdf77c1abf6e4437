//! Deadlines of pending asks, kept without a Tokio timer per ask.
//!
//! An ask used to arm a Tokio timer for its deadline (5 s by default):
//! registering and removing it, and, when no earlier timer was armed, waking
//! the thread parked on the timer driver so that it parks again with the
//! new deadline. Counted by callgrind, that was about 700 of an ask's 3,400
//! instructions; the wake-ups came on top.
//!
//! Instead, an ask whose reply is not there at once files its deadline and
//! its waker in a registry of the thread it runs on (`Deadlines`), and
//! takes it out when it ends: a lock held for a few instructions, no
//! allocation once the registry has grown to the number of asks in flight.
//! One sweeper task per registry sleeps until the earliest deadline filed
//! (a Tokio timer, re-armed only when a deadline earlier than the one it
//! waits for is filed, or when it wakes) and then wakes the asks whose
//! deadline has passed; each finds `now >= deadline` and ends with
//! `Timeout`. Deadlines stay as exact as Tokio's timer (1 ms): the sweeper
//! sleeps until the exact instant.
//!
//! Under a steady stream of asks with the same timeout, every new deadline
//! is later than the one the sweeper waits for, so filing one wakes nobody;
//! the sweeper wakes about once per timeout, finds the asks it waited for
//! long done, and sleeps again.
//!
//! Public for the remoting layer, whose asks wait the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

/// The deadlines filed on one thread.
pub(crate) struct Deadlines {
    slots: Mutex<Slots>,
    /// Wakes the sweeper: a deadline earlier than the one it sleeps until
    /// was filed, or it has gone and must be replaced.
    earlier: Notify,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// The deadline the sweeper sleeps until (`None`: it waits to be
    /// notified).
    armed: Option<Instant>,
    /// A sweeper task is running for this registry.
    sweeping: bool,
}

struct Entry {
    deadline: Instant,
    waker: Waker,
    /// The sweeper found the deadline passed and woke the ask; a waker
    /// installed later is woken at once (see [`Filed::rewake`]).
    woken: bool,
}

thread_local! {
    static LOCAL: Arc<Deadlines> = Arc::new(Deadlines { slots: Mutex::default(), earlier: Notify::new() });
}

/// How long a sweeper with nothing filed waits before it ends (the next
/// filing starts another): a thread that stopped asking, or exited, leaves
/// no task behind for long.
const IDLE_SWEEPER: std::time::Duration = std::time::Duration::from_secs(10);

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files `deadline` with `waker` in this thread's registry; `None` when
    /// the caller must use a timer of its own: outside a Tokio runtime, or
    /// on a current-thread runtime (a sweeper there runs only while that
    /// runtime is driven, and this thread may drive another meanwhile).
    fn file(deadline: Instant, waker: &Waker) -> Option<Filed> {
        let registry = LOCAL.try_with(Arc::clone).ok()?;
        let mut slots = registry.lock();
        if !slots.sweeping {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
                return None;
            }
            slots.sweeping = true;
            slots.armed = None;
            drop(slots);
            // The guard lives in the task from its creation: a task dropped
            // before it ever ran (its runtime shutting down) still clears
            // the flag, and the next filing starts another sweeper.
            runtime.spawn(sweep(Sweeping { registry: registry.clone(), cleared: false }));
            slots = registry.lock();
            if !slots.sweeping {
                // The runtime refused the task (it is shutting down).
                return None;
            }
        }
        let entry = Some(Entry { deadline, waker: waker.clone(), woken: false });
        let index = match slots.free.pop() {
            Some(index) => {
                slots.entries[index] = entry;
                index
            }
            None => {
                slots.entries.push(entry);
                slots.entries.len() - 1
            }
        };
        let earlier = slots.armed.is_none_or(|armed| deadline < armed);
        if earlier {
            slots.armed = Some(deadline);
        }
        drop(slots);
        if earlier {
            registry.earlier.notify_one();
        }
        Some(Filed { registry, index })
    }
}

/// A deadline filed in a registry, taken out when dropped.
struct Filed {
    registry: Arc<Deadlines>,
    index: usize,
}

impl Filed {
    /// Points the entry at `waker` (the ask is polled by another task now);
    /// wakes it at once if the sweeper already found the deadline passed
    /// (it woke the previous waker, which may not poll the ask again).
    /// False if the registry's sweeper has gone (its runtime was dropped):
    /// the deadline must be filed again, where a sweeper runs.
    fn rewake(&self, waker: &Waker) -> bool {
        let mut slots = self.registry.lock();
        let sweeping = slots.sweeping;
        let Some(Some(entry)) = slots.entries.get_mut(self.index) else { return sweeping };
        if !entry.waker.will_wake(waker) {
            entry.waker = waker.clone();
        }
        let woken = entry.woken;
        drop(slots);
        if woken {
            waker.wake_by_ref();
        }
        sweeping
    }
}

impl Drop for Filed {
    fn drop(&mut self) {
        let mut slots = self.registry.lock();
        if let Some(slot) = slots.entries.get_mut(self.index)
            && slot.take().is_some()
        {
            slots.free.push(self.index);
        }
    }
}

/// Marks the registry's sweeper as running while it lives: dropped with the
/// sweeper's task (even one that never ran), it lets the next filing start
/// another.
struct Sweeping {
    registry: Arc<Deadlines>,
    /// Already cleared by the sweeper itself (a new one may be running).
    cleared: bool,
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        if self.cleared {
            return;
        }
        // The task was dropped (its runtime is gone): the asks still filed
        // are woken to file their deadline again where a sweeper runs.
        let mut slots = self.registry.lock();
        slots.sweeping = false;
        let wakers: Vec<Waker> = slots.entries.iter().flatten().map(|e| e.waker.clone()).collect();
        drop(slots);
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The sweeper: sleeps until the earliest deadline filed, wakes the asks
/// whose deadline has passed, and sleeps again; ends after
/// [`IDLE_SWEEPER`] with nothing filed.
async fn sweep(mut sweeping: Sweeping) {
    let registry = sweeping.registry.clone();
    let mut due = Vec::new();
    loop {
        let next = {
            let mut slots = registry.lock();
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for entry in slots.entries.iter_mut().flatten() {
                if entry.woken {
                    continue;
                }
                if entry.deadline <= now {
                    // Woken, it sees its deadline passed; it stays filed
                    // until it ends (its drop takes it out).
                    entry.woken = true;
                    due.push(entry.waker.clone());
                } else if next.is_none_or(|n| entry.deadline < n) {
                    next = Some(entry.deadline);
                }
            }
            if slots.entries.len() == slots.free.len() && slots.entries.capacity() > 64 {
                // No ask holds an index now: start afresh, small.
                slots.entries = Vec::new();
                slots.free = Vec::new();
            }
            slots.armed = next;
            next
        };
        // Woken outside the lock.
        for waker in due.drain(..) {
            waker.wake();
        }
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = registry.earlier.notified() => {}
                }
            }
            None => {
                let idle = tokio::time::timeout(IDLE_SWEEPER, registry.earlier.notified()).await;
                if idle.is_err() {
                    // Stop unless a filing came in meanwhile (it saw the
                    // sweeper running and did not start another).
                    let mut slots = registry.lock();
                    if slots.armed.is_none() {
                        slots.sweeping = false;
                        sweeping.cleared = true;
                        return;
                    }
                }
            }
        }
    }
}

/// When an ask's wait ends.
#[derive(Clone, Copy, Debug)]
pub enum Deadline {
    /// At this instant.
    At(Instant),
    /// This long after the wait is first found pending (the clock is read
    /// only then: an ask whose reply is there at once never reads it).
    After(std::time::Duration),
}

impl Deadline {
    /// The instant, reading the clock for [`Deadline::After`] (which then
    /// becomes [`Deadline::At`]).
    pub fn fix(&mut self) -> Instant {
        let at = match *self {
            Deadline::At(at) => at,
            Deadline::After(wait) => crate::actor_ref::deadline_after(wait),
        };
        *self = Deadline::At(at);
        at
    }
}

/// Waits for `reply` until its deadline: `Some` with its output, `None`
/// once the deadline has passed. Files the deadline (see the module docs)
/// only if the reply is not there at the first poll.
pub struct Until<F> {
    reply: F,
    deadline: Deadline,
    filed: Option<Filed>,
    /// Outside a runtime's registry (no Tokio context to sweep in): a plain
    /// timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F> std::fmt::Debug for Until<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Until").field("deadline", &self.deadline).field("filed", &self.filed.is_some()).finish()
    }
}

impl<F: Future + Unpin> Until<F> {
    /// Waits for `reply` until `deadline`.
    pub fn new(reply: F, deadline: Deadline) -> Self {
        Until { reply, deadline, filed: None, timer: None }
    }
}

impl<F: Future + Unpin> Future for Until<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.reply).poll(cx) {
            return Poll::Ready(Some(out));
        }
        if let Some(timer) = &mut this.timer {
            return timer.as_mut().poll(cx).map(|()| None);
        }
        match &this.filed {
            None => {
                if let Deadline::At(at) = this.deadline
                    && Instant::now() >= at
                {
                    return Poll::Ready(None);
                }
                // A zero wait is filed too: the sweeper ends it at once.
                let deadline = this.deadline.fix();
                match Deadlines::file(deadline, cx.waker()) {
                    Some(filed) => this.filed = Some(filed),
                    None => {
                        let mut timer = Box::pin(tokio::time::sleep_until(deadline));
                        let polled = timer.as_mut().poll(cx);
                        this.timer = Some(timer);
                        return polled.map(|()| None);
                    }
                }
            }
            Some(filed) => {
                if let Deadline::At(at) = this.deadline
                    && Instant::now() >= at
                {
                    return Poll::Ready(None);
                }
                if !filed.rewake(cx.waker()) {
                    // Its sweeper has gone: filed again (or a timer).
                    this.filed = None;
                    return Pin::new(this).poll(cx);
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether this thread's registry is used (a multi-thread runtime).
    fn filed_here() -> usize {
        LOCAL.with(|r| r.lock().entries.iter().flatten().count())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_that_never_comes_ends_at_its_deadline() {
        let (_tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let start = Instant::now();
        let mut waiting = Until::new(rx, Deadline::After(Duration::from_millis(50)));
        assert!(futures_poll(&mut waiting).is_pending());
        assert_eq!(filed_here(), 1, "filed in this thread's registry, no timer");
        // In a task of its own, so that only its deadline can wake it.
        let waiting = tokio::spawn(waiting);
        let out = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("ended by its deadline");
        assert!(out.unwrap().is_none());
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(filed_here(), 0, "taken out when it ended");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_earlier_deadline_filed_later_ends_without_waiting_for_the_earlier_filed_one() {
        let (_long_tx, long_rx) = tokio::sync::oneshot::channel::<u32>();
        let (_short_tx, short_rx) = tokio::sync::oneshot::channel::<u32>();
        let start = Instant::now();
        let mut long = Until::new(long_rx, Deadline::After(Duration::from_secs(600)));
        assert!(futures_poll(&mut long).is_pending());
        // Filed in the same registry, after the later one.
        let mut short = Until::new(short_rx, Deadline::After(Duration::from_millis(50)));
        assert!(futures_poll(&mut short).is_pending());
        assert_eq!(filed_here(), 2);
        let short = tokio::spawn(short);
        let short = tokio::time::timeout(Duration::from_secs(30), short).await.expect("ended by its deadline");
        assert!(short.unwrap().is_none());
        assert!(start.elapsed() < Duration::from_secs(600));
        drop(long);
        assert_eq!(filed_here(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_in_time_are_taken_and_their_slots_reused() {
        for i in 0..1000 {
            let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
            let waiting = Until::new(rx, Deadline::After(Duration::from_secs(5)));
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                let _ = tx.send(i);
            });
            assert_eq!(waiting.await, Some(Ok(i)));
        }
        let slots = LOCAL.with(|r| r.lock().entries.len());
        assert!(slots <= 2, "{slots} slots for asks one at a time");
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_current_thread_runtime_a_timer_ends_the_wait_exactly() {
        let (_tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let start = Instant::now();
        let out = Until::new(rx, Deadline::At(start + Duration::from_millis(1500))).await;
        assert!(out.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert_eq!(filed_here(), 0, "no registry on a current-thread runtime");
    }

    /// A thread that drives two runtimes: its registry's sweeper runs on the
    /// first; when that runtime goes, an ask filed from the second files its
    /// deadline again where a sweeper runs, and still ends on time.
    #[test]
    fn an_ask_outlives_the_runtime_its_sweeper_ran_on() {
        let multi = || tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let first = multi();
        first.block_on(async {
            let (_tx, rx) = tokio::sync::oneshot::channel::<u32>();
            let mut filed = Until::new(rx, Deadline::After(Duration::from_secs(600)));
            assert!(futures_poll(&mut filed).is_pending());
        });
        let second = multi();
        second.block_on(async move {
            let (_tx, rx) = tokio::sync::oneshot::channel::<u32>();
            let mut waiting = Until::new(rx, Deadline::After(Duration::from_millis(50)));
            assert!(futures_poll(&mut waiting).is_pending());
            // The sweeper's runtime goes, and the sweeper with it.
            first.shutdown_background();
            // In a task of its own, so that only its deadline can wake it.
            let waiting = tokio::spawn(waiting);
            let out = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("ended by its deadline");
            assert!(out.unwrap().is_none());
        });
    }

    /// Polls once with a no-op waker.
    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }
}
