//! A supervision tree at work, narrated: traffic, a crash and a one-for-all
//! restart, a crash loop that exceeds the restart intensity and escalates,
//! death watch, and an orderly shutdown. Exits non-zero if any step does not
//! behave as promised.
//!
//! Run: `cargo run --release --example supervision_demo`
//!
//! ```text
//! app (one_for_one)
//! ├── store     (permanent)   counts the records it is sent
//! └── pipeline  (one_for_all, at most 2 restarts in 10 s)
//!     ├── parser (permanent)  panics on input it cannot parse
//!     └── writer (permanent)  forwards parsed records to the store
//! ```

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footlight::prelude::*;

type Log = Arc<Mutex<Vec<String>>>;

// ---------------------------------------------------------------- store

struct Store {
    records: u64,
    log: Log,
}

impl Actor for Store {
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push("store".into());
    }
}

#[derive(Message)]
struct Record(#[allow(dead_code)] u64);

impl Handler<Record> for Store {
    async fn handle(&mut self, _: Record, _ctx: &mut Context<Self>) {
        self.records += 1;
    }
}

#[derive(Message)]
#[message(reply = u64)]
struct Count;

impl Handler<Count> for Store {
    async fn handle(&mut self, _: Count, _ctx: &mut Context<Self>) -> u64 {
        self.records
    }
}

// ---------------------------------------------------------------- pipeline

struct Parser {
    generation: u32,
    log: Log,
}

impl Actor for Parser {
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(format!("parser (generation {})", self.generation));
    }
}

#[derive(Message)]
#[message(reply = u64)]
struct Parse(String);

impl Handler<Parse> for Parser {
    async fn handle(&mut self, Parse(line): Parse, _ctx: &mut Context<Self>) -> u64 {
        match line.trim().parse() {
            Ok(n) => n,
            Err(_) => panic!("cannot parse {line:?}"),
        }
    }
}

#[derive(Message)]
#[message(reply = u32)]
struct Generation;

impl Handler<Generation> for Parser {
    async fn handle(&mut self, _: Generation, _ctx: &mut Context<Self>) -> u32 {
        self.generation
    }
}

struct Writer {
    log: Log,
}

impl Actor for Writer {
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push("writer".into());
    }
}

// ---------------------------------------------------------------- watcher

struct Watcher {
    seen: tokio::sync::mpsc::UnboundedSender<Terminated>,
}

impl Actor for Watcher {
    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: Terminated) {
        let _ = self.seen.send(t);
    }
}

#[derive(Message)]
struct WatchStore(ActorRef<Store>);

impl Handler<WatchStore> for Watcher {
    async fn handle(&mut self, WatchStore(store): WatchStore, ctx: &mut Context<Self>) {
        ctx.watch(&store);
    }
}

// ---------------------------------------------------------------- script

fn tree(log: &Log) -> Supervisor {
    let generations = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (store_log, pipeline_log) = (log.clone(), log.clone());
    Supervisor::one_for_one()
        .max_restarts(5, Duration::from_secs(10))
        .child("store", Restart::Permanent, move || Store { records: 0, log: store_log.clone() })
        .child("pipeline", Restart::Permanent, move || {
            let (parser_log, writer_log, generations) =
                (pipeline_log.clone(), pipeline_log.clone(), generations.clone());
            Supervisor::one_for_all()
                .max_restarts(2, Duration::from_secs(10))
                .child("parser", Restart::Permanent, move || Parser {
                    generation: generations.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1,
                    log: parser_log.clone(),
                })
                .child("writer", Restart::Permanent, move || Writer { log: writer_log.clone() })
        })
}

async fn child<A: Actor>(sup: &ActorRef<Supervisor>, name: &str) -> Result<ActorRef<A>, String> {
    sup.child::<A>(name).await.map_err(|e| format!("asking for {name}: {e}"))
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

async fn script() -> Result<(), String> {
    let log: Log = Arc::default();
    let system = ActorSystem::new("demo");
    let app = system.spawn(tree(&log));
    let store: ActorRef<Store> = child(&app, "store").await?;
    let pipeline: ActorRef<Supervisor> = child(&app, "pipeline").await?;
    let parser: ActorRef<Parser> = child(&pipeline, "parser").await?;
    println!("1. tree started: app(one_for_one)[store, pipeline(one_for_all)[parser, writer]]");

    // Traffic.
    let n = 200_000u64;
    let t = Instant::now();
    for i in 0..n {
        store.tell(Record(i)).await.map_err(|e| e.to_string())?;
    }
    let count = store.ask(Count).await.map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    check(count == n, "store lost records")?;
    println!("2. {n} tells + 1 ask to the store: {:.1} M msgs/s, count confirmed = {count}", n as f64 / secs / 1e6);
    let t = Instant::now();
    for i in 0..10_000u64 {
        let v = parser.ask(Parse(i.to_string())).await.map_err(|e| e.to_string())?;
        check(v == i, "parser answered wrong")?;
    }
    println!("   10000 sequential asks to the parser: mean {:.1} us", t.elapsed().as_secs_f64() * 1e6 / 10_000.0);

    // A crash: one_for_all restarts parser and writer; the ref stays valid.
    let t = Instant::now();
    let crashed = parser.ask(Parse("not a number".into())).await;
    check(matches!(crashed, Err(AskError::NoReply)), "the crashing ask must end with NoReply")?;
    let generation = parser.ask(Generation).await.map_err(|e| e.to_string())?;
    check(generation == 2, "parser was not restarted")?;
    println!(
        "3. parser panicked on bad input; pipeline restarted parser and writer (one_for_all) in {:.2} ms; \
         the same ref now reaches generation {generation}",
        t.elapsed().as_secs_f64() * 1e3
    );
    check(store.ask(Count).await.map_err(|e| e.to_string())? == n, "store must be untouched")?;
    println!("   store untouched: still {n} records");

    // A crash loop: the pipeline gives up after 2 restarts and escalates; the
    // app restarts the whole pipeline subtree with fresh children.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let watcher = system.spawn(Watcher { seen: seen_tx });
    watcher.ask(WatchStore(store.clone())).await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    for _ in 0..2 {
        let _ = parser.ask(Parse("garbage".into())).await;
    }
    let reason = parser.wait_for_stop().await;
    let fresh: ActorRef<Parser> = loop {
        let current: ActorRef<Parser> = child(&pipeline, "parser").await?;
        if current.id() != parser.id() {
            break current;
        }
        tokio::task::yield_now().await;
    };
    println!(
        "4. two more bad inputs: a third restart within 10 s exceeds the pipeline's intensity (2), so it \
         gives up, shuts its children down (parser: {reason}) and escalates;\n   \
         app restarted the pipeline in {:.2} ms with a fresh parser {} (old parser {} is dead: {})",
        t.elapsed().as_secs_f64() * 1e3,
        fresh.id(),
        parser.id(),
        !parser.is_alive()
    );
    check(fresh.ask(Parse("7".into())).await.map_err(|e| e.to_string())? == 7, "fresh parser must work")?;

    // Death watch.
    store.stop();
    let notice = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.map_err(|_| "no Terminated notice")?;
    let notice = notice.ok_or("watcher gone")?;
    check(notice.id == store.id() && notice.reason == ExitReason::Normal, "wrong Terminated notice")?;
    println!(
        "5. store stopped by its ref; the watcher got Terminated {{ id: {}, reason: {} }}",
        notice.id, notice.reason
    );

    // Orderly shutdown: children before parents.
    log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let t = Instant::now();
    system.shutdown().await;
    let order = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    check(order.len() == 2 && order[0] == "writer" && order[1].starts_with("parser"), "shutdown order")?;
    println!("6. shutdown in {:.2} ms, stopped hooks in order: {}", t.elapsed().as_secs_f64() * 1e3, order.join(", "));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings and errors only by default: panics and restarts, as the
    // runtime logs them (`RUST_LOG` chooses otherwise).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
    // The runtime logs every panic with its actor and message type.
    std::panic::set_hook(Box::new(|_| {}));
    println!("Footlight supervision demo\n");
    match script().await {
        Ok(()) => {
            println!("\nall steps behaved as promised");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("\nFAILED: {why}");
            ExitCode::FAILURE
        }
    }
}
