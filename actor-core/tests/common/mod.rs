//! Helpers shared by the integration tests: await events with a deadline
//! instead of sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::future::IntoFuture;
use std::time::Duration;

use tokio::sync::mpsc;

/// Generous bound for an event that should arrive promptly; only reached when
/// the behaviour under test is broken.
pub const WITHIN: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it does not finish within [`WITHIN`].
pub async fn within<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WITHIN, fut.into_future()).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A channel the actors under test report events on.
pub fn events<T>() -> (mpsc::UnboundedSender<T>, Events<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Events(rx))
}

pub struct Events<T>(mpsc::UnboundedReceiver<T>);

impl<T: std::fmt::Debug> Events<T> {
    /// The next event, failing the test if none comes.
    pub async fn next(&mut self) -> T {
        within("an event", self.0.recv()).await.expect("event channel closed")
    }

    /// Asserts nothing is queued right now.
    pub fn assert_empty(&mut self) {
        if let Ok(ev) = self.0.try_recv() {
            panic!("unexpected event {ev:?}");
        }
    }

    /// Everything queued right now.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while let Ok(ev) = self.0.try_recv() {
            out.push(ev);
        }
        out
    }
}

/// An actor with no state of its own, for tests about lifecycles.
#[derive(Default)]
pub struct Worker;
impl actor_core::Actor for Worker {}

/// Makes a [`Worker`] fail (`ctx.fail("boom")`).
pub struct Crash;
impl actor_core::Message for Crash {
    type Reply = ();
}
impl actor_core::Handler<Crash> for Worker {
    async fn handle(&mut self, _: Crash, ctx: &mut actor_core::Context<Self>) {
        ctx.fail("boom");
    }
}
