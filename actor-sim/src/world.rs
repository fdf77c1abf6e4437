//! The simulated nodes, their network and the record of what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use footlight::cluster::SplitBrainResolver;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::{Cluster, ClusterEvent, Node};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::SimError;
use crate::faults::{Fault, Plan};
use crate::trace::{Event, Seen, Trace};

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Faults play.
    Faults,
    /// Healed; the cluster settles.
    Settling,
    /// Over: the scenario should finish and return.
    Done,
}

type Hook = Arc<dyn Fn(World, Cluster) + Send + Sync>;

/// The simulated cluster: its nodes, its network, its trace. Cheap to
/// clone; every clone is the same world.
#[derive(Clone)]
pub struct World {
    inner: Arc<Inner>,
}

struct Inner {
    ids: Vec<String>,
    /// The network's latency (see [`Sim::latency`](crate::Sim::latency)).
    latency: Duration,
    net: MemoryNetwork,
    began: Instant,
    state: Mutex<State>,
    phase: watch::Sender<Phase>,
}

#[derive(Default)]
struct State {
    /// The live run of each node that is up.
    live: BTreeMap<String, Cluster>,
    /// The runs that have joined the cluster (and had the hooks run).
    joined: BTreeSet<(String, u64)>,
    trace: Trace,
    hooks: Vec<Hook>,
}

/// How long a killed node's shutdown may take before the run says so.
const KILL_PATIENCE: Duration = Duration::from_secs(60);

impl World {
    pub(crate) fn new(ids: Vec<String>, latency: Duration) -> Self {
        let (phase, _) = watch::channel(Phase::Faults);
        let net = MemoryNetwork::new();
        for id in &ids {
            net.delay(id, latency);
        }
        World {
            inner: Arc::new(Inner {
                ids,
                latency,
                net,
                began: Instant::now(),
                state: Mutex::new(State::default()),
                phase,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The network the nodes talk over: inject your own faults with it.
    pub fn network(&self) -> &MemoryNetwork {
        &self.inner.net
    }

    /// Every node's id (`n1`, `n2`, …), also its address.
    pub fn ids(&self) -> &[String] {
        &self.inner.ids
    }

    /// The live run of `id`, if it is up.
    pub fn node(&self, id: &str) -> Option<Cluster> {
        self.state().live.get(id).cloned()
    }

    /// The live runs of every node that is up, by id.
    pub fn nodes(&self) -> Vec<Cluster> {
        self.state().live.values().cloned().collect()
    }

    /// Whether `run` is the live run of `id`.
    pub fn is_live(&self, id: &str, run: u64) -> bool {
        self.state().live.get(id).is_some_and(|c| c.run() == run)
    }

    /// Virtual time since the run began.
    pub fn now(&self) -> Duration {
        self.inner.began.elapsed()
    }

    /// Where the run is now.
    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Waits until the run reaches `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.inner.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// Records a scenario's own observation in the trace.
    pub fn note(&self, what: impl Into<String>) {
        self.record(Event::Note(what.into()));
    }

    pub(crate) fn record(&self, event: Event) {
        let at = self.now();
        self.state().trace.push(at, event);
    }

    /// When every node first saw all the others (virtual time since the
    /// run began), if they have.
    pub fn formed_at(&self) -> Option<Duration> {
        self.state().trace.entries().iter().find(|e| e.event == Event::Formed).map(|e| e.at)
    }

    /// The trace so far.
    pub fn trace(&self) -> Trace {
        self.state().trace.clone()
    }

    /// Calls `hook` for every node up now and for every run started later
    /// (restarts included), once that run has joined the cluster: set up
    /// each run's actors here.
    pub fn each_node(&self, hook: impl Fn(World, Cluster) + Send + Sync + 'static) {
        let hook: Hook = Arc::new(hook);
        let live: Vec<Cluster> = {
            let mut state = self.state();
            state.hooks.push(hook.clone());
            state.live.values().filter(|c| state.joined.contains(&(c.id().to_owned(), c.run()))).cloned().collect()
        };
        for node in live {
            hook(self.clone(), node);
        }
    }

    pub(crate) async fn start_all(&self, within: Duration) -> Result<(), SimError> {
        let ids = self.inner.ids.clone();
        for (i, id) in ids.iter().enumerate() {
            let seeds: Vec<String> = if i == 0 { Vec::new() } else { vec![ids[0].clone()] };
            self.start_node(id, seeds).await?;
        }
        let formed = async {
            loop {
                let nodes = self.nodes();
                if nodes.len() == ids.len() && nodes.iter().all(|n| n.members().len() == ids.len()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(within, formed).await.map_err(|_| SimError::NoCluster(within))?;
        self.record(Event::Formed);
        Ok(())
    }

    async fn start_node(&self, id: &str, seeds: Vec<String>) -> Result<Cluster, SimError> {
        let node = Node::builder(id).transport(self.inner.net.transport()).listen(id);
        let cluster = Cluster::builder(node)
            .seeds(seeds)
            .split_brain_resolver(SplitBrainResolver::keep_majority().stable_after(Duration::from_secs(2)))
            .start()
            .await
            .map_err(|e| SimError::Start { node: id.to_owned(), error: e.to_string() })?;
        let run = cluster.run();
        {
            let mut state = self.state();
            state.live.insert(id.to_owned(), cluster.clone());
            state.trace.push(self.now(), Event::Started { node: id.to_owned(), run });
        }
        tokio::spawn(self.clone().observe(cluster.clone()));
        tokio::spawn(self.clone().hook_once_joined(cluster.clone()));
        Ok(cluster)
    }

    /// Runs the hooks for `cluster` once it has joined (a node registers
    /// names and starts services only then), if it is still the live run.
    async fn hook_once_joined(self, cluster: Cluster) {
        if cluster.joined().await.is_err() {
            return;
        }
        let hooks = {
            let mut state = self.state();
            if state.live.get(cluster.id()).is_none_or(|c| c.run() != cluster.run()) {
                return;
            }
            state.joined.insert((cluster.id().to_owned(), cluster.run()));
            let now = self.now();
            state.trace.push(now, Event::Admitted { node: cluster.id().to_owned(), run: cluster.run() });
            state.hooks.clone()
        };
        for hook in hooks {
            hook(self.clone(), cluster.clone());
        }
    }

    /// Records what `cluster` sees of the others; restarts it once it downs
    /// itself (as an orchestrator would).
    async fn observe(self, cluster: Cluster) {
        let me = cluster.id().to_owned();
        let run = cluster.run();
        let mut events = cluster.subscribe();
        while let Some(event) = events.recv().await {
            let (member, what) = match event {
                ClusterEvent::MemberUp(m) => (m, Seen::Up),
                ClusterEvent::MemberUnreachable(m) => (m, Seen::Unreachable),
                ClusterEvent::MemberReachable(m) => (m, Seen::Reachable),
                ClusterEvent::MemberDown(m) => (m, Seen::Down),
                ClusterEvent::MemberLeft(m) => (m, Seen::Left),
                ClusterEvent::SelfDowned { .. } => {
                    if !self.is_live(&me, run) {
                        return;
                    }
                    self.record(Event::SelfDowned { node: me.clone(), run });
                    tokio::spawn(self.clone().restart_downed(me, run));
                    return;
                }
                _ => continue,
            };
            if member.id == me || !self.is_live(&me, run) {
                continue;
            }
            self.record(Event::Saw { node: me.clone(), run, member: member.id, member_run: member.run, what });
        }
    }

    async fn restart_downed(self, id: String, run: u64) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(node) = self.take_if_live(&id, run) else { return };
        node.shutdown().await;
        if self.phase() < Phase::Done && self.node(&id).is_none() {
            let _ = self.restart(&id).await;
        }
    }

    fn take_if_live(&self, id: &str, run: u64) -> Option<Cluster> {
        let mut state = self.state();
        if state.live.get(id).is_some_and(|c| c.run() == run) { state.live.remove(id) } else { None }
    }

    /// Kills the live run of `id`: cut off from everyone, stopped (nothing
    /// it says on the way out reaches anyone), its connections broken.
    pub async fn kill(&self, id: &str) {
        let Some(node) = self.state().live.remove(id) else { return };
        let net = &self.inner.net;
        net.isolate(id);
        self.record(Event::Killed { node: id.to_owned(), run: node.run() });
        if tokio::time::timeout(KILL_PATIENCE, node.shutdown()).await.is_err() {
            self.note(format!("{id} took over {KILL_PATIENCE:?} to stop"));
        }
        for other in &self.inner.ids {
            if other != id {
                net.reset(id, other);
            }
        }
        net.rejoin(id);
    }

    /// Starts a new run of `id` if it is not up, with every node as its
    /// seeds (itself included, as a deployment lists the same seeds on
    /// every node): it joins through the others, and the lowest of the
    /// nodes founds the cluster again if none of them was admitted.
    pub fn restart<'a>(&'a self, id: &'a str) -> Pin<Box<dyn Future<Output = Result<(), SimError>> + Send + 'a>> {
        // Boxed: a start spawns the observer that may restart the node.
        Box::pin(async move {
            if self.node(id).is_some() {
                return Ok(());
            }
            let seeds: Vec<String> = self.inner.ids.clone();
            self.start_node(id, seeds).await.map(|_| ())
        })
    }

    async fn apply(&self, fault: &Fault) {
        let net = &self.inner.net;
        self.record(Event::Fault(fault.clone()));
        match fault {
            Fault::Partition { a, b } => net.partition(a, b),
            Fault::OneWay { from, to } => net.partition_one_way(from, to),
            Fault::Isolate { node } => net.isolate(node),
            Fault::Reset { a, b } => net.reset(a, b),
            Fault::Kill { node } => self.kill(node).await,
            Fault::Delay { node, by } => net.delay(node, self.inner.latency + *by),
        }
    }

    async fn undo(&self, fault: &Fault) {
        let net = &self.inner.net;
        match fault {
            Fault::Partition { a, b } => net.heal(a, b),
            Fault::OneWay { from, to } => net.heal_one_way(from, to),
            Fault::Isolate { node } => net.rejoin(node),
            Fault::Reset { .. } => {}
            Fault::Kill { node } => {
                if let Err(e) = self.restart(node).await {
                    self.note(format!("restarting {node}: {e}"));
                }
            }
            Fault::Delay { node, .. } => net.delay(node, self.inner.latency),
        }
        self.record(Event::FaultEnded(fault.clone()));
    }

    /// Plays `plan`, heals, lets the cluster settle, records every live
    /// node's view, and ends the run.
    pub(crate) async fn play(self, plan: Plan, duration: Duration, settle: Duration) {
        let began = Instant::now();
        for (at, length, fault) in &plan.steps {
            tokio::time::sleep_until(began + *at).await;
            self.apply(fault).await;
            tokio::time::sleep(*length).await;
            self.undo(fault).await;
        }
        tokio::time::sleep_until(began + duration).await;
        self.inner.net.heal_all();
        for id in &self.inner.ids {
            self.inner.net.delay(id, self.inner.latency);
        }
        for id in self.inner.ids.clone() {
            if let Err(e) = self.restart(&id).await {
                self.note(format!("restarting {id}: {e}"));
            }
        }
        self.record(Event::Healed);
        self.inner.phase.send_replace(Phase::Settling);
        tokio::time::sleep(settle).await;
        for node in self.nodes() {
            let mut members: Vec<(String, u64)> = node.members().into_iter().map(|m| (m.id, m.run)).collect();
            members.sort();
            self.record(Event::View { node: node.id().to_owned(), run: node.run(), members });
        }
        self.record(Event::Ending);
        self.inner.phase.send_replace(Phase::Done);
    }

    /// Shuts every live node down, in id order.
    pub(crate) async fn stop_all(&self) {
        let live: Vec<Cluster> = std::mem::take(&mut self.state().live).into_values().collect();
        for node in live {
            node.shutdown().await;
        }
        self.state().hooks.clear();
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("ids", &self.inner.ids).field("phase", &self.phase()).finish()
    }
}
