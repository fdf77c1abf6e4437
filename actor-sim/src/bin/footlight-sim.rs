//! Runs the built-in workload under simulation: one seed (`--seed`, with
//! `--trace` to print what happened), or a campaign over many
//! (`--seeds 0..100000`). Every failing seed is printed with the command
//! that replays it. Exit status 1 if any seed broke a guarantee.

use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use actor_sim::{Faults, Sim, SimError, check, traffic};
use clap::Parser;

/// Deterministic simulation of a Footlight cluster.
#[derive(Parser)]
#[command(name = "footlight-sim")]
struct Args {
    /// One seed to run.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds to run, `start..end`.
    #[arg(long, value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Nodes per run.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of faults (virtual time).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds to settle after healing (virtual time).
    #[arg(long, default_value_t = 30)]
    settle: u64,
    /// Fault kinds: all, none, or a list of partition, one-way, isolate,
    /// reset, kill, delay.
    #[arg(long, default_value = "all")]
    faults: Faults,
    /// Print each run's trace.
    #[arg(long)]
    trace: bool,
    /// Instead of the workload: simulate clusters of these sizes (say
    /// `100,1000`) and print membership convergence, gossip traffic,
    /// failure detection and registry propagation.
    #[arg(long, value_delimiter = ',')]
    scale: Vec<usize>,
}

fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s.split_once("..").ok_or("expected start..end")?;
    let a = a.parse::<u64>().map_err(|e| e.to_string())?;
    let b = b.parse::<u64>().map_err(|e| e.to_string())?;
    Ok(a..b)
}

/// Log lines stamped with the run's virtual time, as the trace is.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match actor_sim::elapsed() {
            Some(at) => write!(w, "{:>10.3}s", at.as_secs_f64()),
            None => write!(w, "{:>11}", "-"),
        }
    }
}

/// The most real time one seed may take before it counts as stalled.
const WALL_LIMIT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args = Args::parse();
    // RUST_LOG=actor_cluster=debug (say) shows the runtime's own logs
    // beside the trace, stamped with virtual time.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_timer(VirtualTime)
            .with_writer(std::io::stderr)
            .init();
    }
    let seeds = match (args.seed, args.seeds.clone()) {
        (Some(seed), _) => seed..seed.saturating_add(1),
        (None, Some(range)) => range,
        (None, None) => 0..1,
    };
    if !Sim::replayable() {
        eprintln!("note: built without --cfg tokio_unstable: runs are checked but not replayable bit for bit");
    }
    if !args.scale.is_empty() {
        return scale(&args.scale, args.seed.unwrap_or(1));
    }
    let started = std::time::Instant::now();
    let (mut ran, mut failed) = (0u64, 0u64);
    for seed in seeds {
        let sim = Sim::new(seed)
            .nodes(args.nodes)
            .duration(Duration::from_secs(args.duration))
            .settle(Duration::from_secs(args.settle))
            .faults(args.faults.clone());
        ran += 1;
        match sim.run_within(WALL_LIMIT, traffic::run) {
            Ok(report) => {
                if args.trace {
                    print!("{}", report.trace);
                }
                let violations = check(&report.trace);
                println!(
                    "seed {seed}: {} events, {} messages, trace {:016x}{}",
                    report.trace.entries().len(),
                    report.output,
                    report.trace.hash(),
                    if violations.is_empty() { String::new() } else { format!(", {} violations", violations.len()) }
                );
                if !violations.is_empty() {
                    failed += 1;
                    for v in &violations {
                        println!("  {v}");
                    }
                    println!("  replay: {}", sim.replay_command());
                }
            }
            Err(e) => {
                failed += 1;
                println!("seed {seed}: {e}\n  replay: {}", sim.replay_command());
                if matches!(e, SimError::Stalled(_)) {
                    // Its thread still spins: the seeds after it would crawl.
                    println!("{ran} seeds, {failed} failed, stopped at the stalled seed");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("{ran} seeds, {failed} failed, {:.1} s", started.elapsed().as_secs_f64());
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn scale(sizes: &[usize], seed: u64) -> ExitCode {
    println!(
        "| members | converge | gossip per node | kill -> down at every member | registration -> at every member | wall time |"
    );
    println!("|---|---|---|---|---|---|");
    for &members in sizes {
        match actor_sim::scale::measure(seed, members) {
            Ok(f) => println!(
                "| {} | {:.2} s | {:.0} B/s | {:.2} s | {:.2} s | {:.1} s |",
                f.members,
                f.converge.as_secs_f64(),
                f.gossip_bytes_per_node_per_sec,
                f.detect_everywhere.as_secs_f64(),
                f.registry_everywhere.as_secs_f64(),
                f.wall.as_secs_f64()
            ),
            Err(e) => {
                println!("| {members} | {e} | | | | |");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
