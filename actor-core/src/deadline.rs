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
}

thread_local! {
    static LOCAL: Arc<Deadlines> = Arc::new(Deadlines { slots: Mutex::default(), earlier: Notify::new() });
}

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files `deadline` with `waker` in this thread's registry; `None`
    /// outside a Tokio runtime (the caller falls back to a timer).
    fn file(deadline: Instant, waker: &Waker) -> Option<Filed> {
        let registry = LOCAL.try_with(Arc::clone).ok()?;
        let mut slots = registry.lock();
        if !slots.sweeping {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            slots.sweeping = true;
            slots.armed = None;
            runtime.spawn(sweep(registry.clone()));
        }
        let entry = Some(Entry { deadline, waker: waker.clone() });
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
    /// Points the entry at `waker` (the ask moved to another task's waker).
    fn rewake(&self, waker: &Waker) {
        let mut slots = self.registry.lock();
        if let Some(Some(entry)) = slots.entries.get_mut(self.index)
            && !entry.waker.will_wake(waker)
        {
            entry.waker = waker.clone();
        }
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

/// Ends the sweeper's run in the registry, even if its task is dropped
/// with its runtime: the next filing starts another.
struct Sweeping(Arc<Deadlines>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        self.0.lock().sweeping = false;
    }
}

/// The sweeper: sleeps until the earliest deadline filed, wakes the asks
/// whose deadline has passed, and sleeps again.
async fn sweep(registry: Arc<Deadlines>) {
    let sweeping = Sweeping(registry);
    let registry = &sweeping.0;
    loop {
        let next = {
            let mut slots = registry.lock();
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for entry in slots.entries.iter_mut().flatten() {
                if entry.deadline <= now {
                    // Woken, it sees its deadline passed; it stays filed
                    // until it ends (its drop takes it out).
                    entry.waker.wake_by_ref();
                    entry.deadline = far_future(now);
                } else if next.is_none_or(|n| entry.deadline < n) {
                    next = Some(entry.deadline);
                }
            }
            slots.armed = next;
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = registry.earlier.notified() => {}
                }
            }
            None => registry.earlier.notified().await,
        }
    }
}

/// A deadline no ask reaches (one already woken is not woken again).
fn far_future(now: Instant) -> Instant {
    now + std::time::Duration::from_secs(86_400 * 365 * 30)
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
                filed.rewake(cx.waker());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reply_that_never_comes_ends_at_the_deadline_exactly() {
        let (_tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let start = Instant::now();
        let out = Until::new(rx, Deadline::At(start + Duration::from_millis(1500))).await;
        assert!(out.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_filed_later_still_ends_on_time() {
        let (_long_tx, long_rx) = tokio::sync::oneshot::channel::<u32>();
        let (_short_tx, short_rx) = tokio::sync::oneshot::channel::<u32>();
        let start = Instant::now();
        let long = tokio::spawn(Until::new(long_rx, Deadline::After(Duration::from_secs(10))));
        tokio::task::yield_now().await;
        let short = Until::new(short_rx, Deadline::After(Duration::from_millis(200))).await;
        assert!(short.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert!(long.await.unwrap().is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_in_time_is_taken_and_its_entry_freed() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let start = Instant::now();
        let answer = tokio::spawn(Until::new(rx, Deadline::At(start + Duration::from_secs(5))));
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send(7).unwrap();
        assert_eq!(answer.await.unwrap(), Some(Ok(7)));
        // Many asks one after another reuse one slot.
        for i in 0..1000 {
            let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
            let waiting = tokio::spawn(Until::new(rx, Deadline::After(Duration::from_secs(5))));
            tokio::task::yield_now().await;
            tx.send(i).unwrap();
            assert_eq!(waiting.await.unwrap(), Some(Ok(i)));
        }
        let filed = LOCAL.with(|r| r.lock().entries.len());
        assert!(filed <= 4, "{filed} slots for asks one at a time");
    }
}
