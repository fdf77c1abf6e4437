//! Hello, Footlight: spawn an actor, `tell` and `ask` it, and watch a
//! supervised worker panic and come back with the same ref.
//!
//! Run: `cargo run --example hello`

use footlight::prelude::*;

#[derive(Actor, Default)]
struct Counter {
    n: u64,
}

#[derive(Message)]
#[message(reply = u64)]
struct Add(u64);

impl Handler<Add> for Counter {
    async fn handle(&mut self, Add(k): Add, _ctx: &mut Context<Self>) -> u64 {
        self.n += k;
        self.n
    }
}

/// Makes the counter panic, to show supervision at work.
#[derive(Message)]
struct Crash;

impl Handler<Crash> for Counter {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crashing on purpose");
    }
}

#[tokio::main]
async fn main() -> Result<(), footlight::Error> {
    // `RUST_LOG` chooses what is logged (default: info).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
    // The runtime logs every panic with its actor and message; skip the
    // default hook's second, unstructured report.
    std::panic::set_hook(Box::new(|_| {}));

    let system = ActorSystem::new("hello");

    // A plain actor: tell (fire and forget) then ask (request/reply).
    let counter = system.spawn(Counter::default());
    counter.tell(Add(1)).await?;
    let n = counter.ask(Add(2)).await?;
    println!("counter says {n}");

    // A supervised one: it panics, is restarted with fresh state, and the
    // same ref reaches the new instance.
    let sup = system.spawn(Supervisor::one_for_one().child("counter", Restart::Permanent, Counter::default));
    let worker = sup.child::<Counter>("counter").await?;
    println!("supervised counter says {}", worker.ask(Add(40)).await?);
    worker.tell(Crash).await?;
    println!("after a panic and a restart it says {}", worker.ask(Add(2)).await?);

    system.shutdown().await;
    println!("all actors stopped");
    Ok(())
}
