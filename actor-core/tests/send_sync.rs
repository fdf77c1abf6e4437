//! Compile-time checks that public types stay `Send + Sync` (and futures
//! `Send`), so they can cross tasks and threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use actor_core::*;

struct A;
impl Actor for A {}
struct M;
impl Message for M {
    type Reply = ();
}
impl Handler<M> for A {
    async fn handle(&mut self, _: M, _ctx: &mut Context<Self>) {}
}

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<ActorRef<A>>();
    send_sync::<WeakActorRef<A>>();
    send_sync::<Recipient<M>>();
    send_sync::<ActorSystem>();
    send_sync::<ActorId>();
    send_sync::<ExitReason>();
    send_sync::<Terminated>();
    send_sync::<Timer>();
    send_sync::<SendError<M>>();
    send_sync::<TrySendError<M>>();
    send_sync::<AskError<M>>();
    send_sync::<Error>();
    send_sync::<Supervisor>();
    send_sync::<SpawnOptions>();
    send_sync::<Mailbox>();
}

#[test]
fn futures_are_send() {
    let system = ActorSystem::new("t");
    let _ = &system;
    fn check(r: &ActorRef<A>, s: &ActorSystem) {
        send(&r.tell(M));
        send(&r.ask(M).into_future_check());
        send(&r.wait_for_stop());
        send(&s.shutdown());
    }
    let _ = check;
}

trait IntoFutureCheck: std::future::IntoFuture + Sized {
    fn into_future_check(self) -> Self::IntoFuture {
        self.into_future()
    }
}
impl<T: std::future::IntoFuture> IntoFutureCheck for T {}
