//! `on_failure` decides: `Resume` keeps the state and goes on; a failing
//! `started` fails the actor with its error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorError, ActorSystem, Context, ExitReason, Failure, FailureDecision, Handler, Message};
use common::within;

struct Resilient {
    n: u64,
    failures: Vec<String>,
}
impl Actor for Resilient {
    async fn on_failure(&mut self, _ctx: &mut Context<Self>, failure: &Failure) -> FailureDecision {
        self.failures.push(format!("{}: {}", failure.message_type.rsplit("::").next().unwrap_or(""), failure.panic));
        FailureDecision::Resume
    }
}

struct Add(u64);
impl Message for Add {
    type Reply = u64;
}
impl Handler<Add> for Resilient {
    async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
        self.n += n;
        self.n
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Resilient {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("bad input");
    }
}

struct Failures;
impl Message for Failures {
    type Reply = Vec<String>;
}
impl Handler<Failures> for Resilient {
    async fn handle(&mut self, _: Failures, _ctx: &mut Context<Self>) -> Vec<String> {
        self.failures.clone()
    }
}

#[tokio::test]
async fn resume_keeps_state() {
    let system = ActorSystem::new("t");
    let a = system.spawn(Resilient { n: 0, failures: vec![] });
    a.ask(Add(4)).await.unwrap();
    a.tell(Crash).await.unwrap();
    assert_eq!(within("ask", a.ask(Add(1))).await.unwrap(), 5, "state survived the panic");
    assert_eq!(a.ask(Failures).await.unwrap(), ["Crash: bad input"]);
    system.shutdown().await;
}

struct NoStart;
impl Actor for NoStart {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        "not a number".parse::<u32>()?;
        Ok(())
    }
}

#[tokio::test]
async fn failed_start_fails_the_actor() {
    let system = ActorSystem::new("t");
    let a = system.spawn(NoStart);
    let reason = within("stop", a.wait_for_stop()).await;
    assert_eq!(reason, ExitReason::Failed("invalid digit found in string".into()));
}

struct Quitter;
impl Actor for Quitter {}
struct Fail;
impl Message for Fail {
    type Reply = ();
}
impl Handler<Fail> for Quitter {
    async fn handle(&mut self, _: Fail, ctx: &mut Context<Self>) {
        ctx.fail("gave up");
    }
}

#[tokio::test]
async fn ctx_fail_fails_the_actor() {
    let system = ActorSystem::new("t");
    let a = system.spawn(Quitter);
    a.tell(Fail).await.unwrap();
    assert_eq!(within("stop", a.wait_for_stop()).await, ExitReason::Failed("gave up".into()));
}
