//! [`ActorSystem`]: spawning top-level actors, the local name registry and
//! graceful shutdown.

use crate::entropy::DashMap;
use std::any::Any;
use std::cmp::Reverse;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::mapref::entry::Entry;

use crate::cell::ActorCell;
use crate::runtime::{self, SpawnArgs};
use crate::{Actor, ActorId, ActorRef, ExitReason, LookupError, Mailbox, RegisterError, SpawnError};

/// A set of actors sharing a registry and a shutdown.
///
/// Cheap to clone (a reference to shared state). Several systems may live in one
/// process. Spawning needs a Tokio runtime (as `tokio::spawn` does) with its
/// time driver enabled if timers or ask timeouts are used.
///
/// ```
/// use actor_core::{Actor, ActorSystem, Mailbox, SpawnOptions};
///
/// struct Cache;
/// impl Actor for Cache {}
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), actor_core::Error> {
/// let system = ActorSystem::new("app");
/// let cache = system.spawn_with(Cache, SpawnOptions::new().name("cache").mailbox(Mailbox::bounded(64)))?;
/// let found = system.lookup::<Cache>("cache")?; // the registry: names are freed when actors stop
/// assert_eq!(found.id(), cache.id());
/// system.shutdown().await; // stops every actor, children before parents
/// assert!(!cache.is_alive());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ActorSystem {
    inner: Arc<SystemInner>,
}

struct SystemInner {
    name: String,
    top_level: DashMap<ActorId, Arc<ActorCell>>,
    registry: DashMap<String, Registered>,
    shutting_down: AtomicBool,
}

struct Registered {
    cell: Arc<ActorCell>,
    actor_ref: Box<dyn Any + Send + Sync>,
}

/// One actor of the supervision tree, with its children, as
/// [`ActorSystem::tree`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActorNode {
    /// The actor.
    pub info: ActorInfo,
    /// Its live children, oldest first; `None` if it did not say in time
    /// (busy in a long handler) or ended meanwhile.
    pub children: Option<Vec<ActorNode>>,
}

/// The most actors [`ActorSystem::tree`] reports.
pub const MAX_TREE_ACTORS: usize = 10_000;

/// One actor as [`ActorSystem::actors`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActorInfo {
    /// Its id.
    pub id: ActorId,
    /// Its type (as `std::any::type_name` spells it).
    pub type_name: &'static str,
    /// The name it was spawned with ([`SpawnOptions::name`]), if any.
    pub label: Option<String>,
    /// The names it is registered under in the system's registry.
    pub names: Vec<String>,
    /// Spawned by the system (not a child).
    pub top_level: bool,
    /// Messages in its mailbox (for a bounded mailbox: admitted and not yet
    /// released by the actor, which releases slots in batches of up to a
    /// sixteenth of the capacity, at most 32); `None` for an unbounded one.
    pub mailbox_depth: Option<usize>,
    /// Its mailbox's capacity; `None` if unbounded.
    pub mailbox_capacity: Option<usize>,
    /// Messages it has taken from its mailbox since it was spawned
    /// (restarts included), counted in batches.
    pub handled: u64,
}

impl ActorInfo {
    /// What `cell` shows now; `names` by actor, from the registry.
    fn of(cell: &ActorCell, top_level: bool, names: &crate::entropy::HashMap<ActorId, Vec<String>>) -> Self {
        ActorInfo {
            id: cell.id(),
            type_name: cell.type_name(),
            label: cell.name().map(str::to_owned),
            names: names.get(&cell.id()).cloned().unwrap_or_default(),
            top_level,
            mailbox_depth: cell.gate.depth(),
            mailbox_capacity: cell.gate.capacity(),
            handled: cell.gate.taken(),
        }
    }
}

/// Options for [`ActorSystem::spawn_with`] and [`Context::spawn_with`](crate::Context::spawn_with).
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    pub(crate) name: Option<String>,
    /// A display name that is not registered (supervised children's names).
    pub(crate) label: Option<String>,
    pub(crate) mailbox: Option<Mailbox>,
    pub(crate) shutdown: Option<crate::Shutdown>,
}

impl SpawnOptions {
    /// Default options: no name, the actor type's
    /// [`Actor::default_mailbox`](crate::Actor::default_mailbox).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the actor under `name` in the system registry for as long as
    /// it lives. Spawning fails with [`SpawnError::NameTaken`] if a live actor
    /// holds the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the mailbox kind and size, overriding the actor type's default.
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.mailbox = Some(mailbox);
        self
    }

    /// Sets how long the actor may take to stop when its parent or the
    /// system stops it, overriding
    /// [`Actor::shutdown_policy`](crate::Actor::shutdown_policy).
    pub fn shutdown(mut self, shutdown: crate::Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }
}

impl ActorSystem {
    /// A new, empty system.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(SystemInner {
                name: name.into(),
                top_level: crate::entropy::dash_map(),
                registry: crate::entropy::dash_map(),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Spawns a top-level actor with default options and returns its ref.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    pub fn spawn<A: Actor>(&self, actor: A) -> ActorRef<A> {
        let args = SpawnArgs { options: SpawnOptions::new(), parent: None, supervision: None };
        runtime::spawn_unnamed(self, Some(actor), args)
    }

    /// Spawns a top-level actor with options (name, mailbox).
    pub fn spawn_with<A: Actor>(&self, actor: A, options: SpawnOptions) -> Result<ActorRef<A>, SpawnError> {
        runtime::spawn(self, Some(actor), SpawnArgs { options, parent: None, supervision: None })
    }

    /// Registers `actor` under `name` until the actor stops or the name is
    /// [unregistered](Self::unregister). An actor may hold several names.
    pub fn register<A: Actor>(&self, name: &str, actor: &ActorRef<A>) -> Result<(), RegisterError> {
        if actor.is_remote() {
            return Err(RegisterError::NotLocal);
        }
        match self.inner.registry.entry(name.to_owned()) {
            Entry::Occupied(e) if e.get().cell.is_alive() => return Err(RegisterError::NameTaken(name.to_owned())),
            // A dead holder whose finaliser has not run yet: take the name over.
            Entry::Occupied(mut e) => {
                e.insert(Registered { cell: actor.cell().clone(), actor_ref: Box::new(actor.clone()) });
            }
            Entry::Vacant(e) => {
                e.insert(Registered { cell: actor.cell().clone(), actor_ref: Box::new(actor.clone()) });
            }
        }
        if actor.cell().add_name(name).is_err() {
            self.release_name(name, actor.id());
            return Err(RegisterError::ActorStopped);
        }
        Ok(())
    }

    /// Frees `name`. Returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        match self.inner.registry.remove(name) {
            Some((_, reg)) => {
                reg.cell.remove_name(name);
                true
            }
            None => false,
        }
    }

    /// The live actor registered as `name`, if it is an `A`.
    pub fn lookup<A: Actor>(&self, name: &str) -> Result<ActorRef<A>, LookupError> {
        let reg = self.inner.registry.get(name).ok_or_else(|| LookupError::NotFound(name.to_owned()))?;
        if !reg.cell.is_alive() {
            return Err(LookupError::NotFound(name.to_owned()));
        }
        reg.actor_ref.downcast_ref::<ActorRef<A>>().cloned().ok_or_else(|| LookupError::WrongType {
            name: name.to_owned(),
            expected: std::any::type_name::<A>(),
            actual: reg.cell.type_name(),
        })
    }

    /// Stops every actor and returns once all have stopped.
    ///
    /// Top-level actors are told to stop together; each stops its own children
    /// first (youngest first), so `stopped` hooks run children before parents.
    /// Actors spawned at top level during shutdown are stopped too. Each
    /// actor's [`Shutdown`](crate::Shutdown) policy bounds its part: one still
    /// running after its timeout (5 s by default) is killed, so a handler
    /// stuck on an await cannot hold the shutdown up for longer.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        loop {
            let mut cells: Vec<Arc<ActorCell>> = self.inner.top_level.iter().map(|e| e.value().clone()).collect();
            if cells.is_empty() {
                break;
            }
            cells.sort_by_key(|c| Reverse(c.id()));
            let since = tokio::time::Instant::now();
            for cell in &cells {
                cell.begin_stop(ExitReason::Shutdown);
            }
            for cell in &cells {
                cell.finish_stop(since).await;
            }
        }
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// How many top-level actors are alive.
    pub fn top_level_count(&self) -> usize {
        self.inner.top_level.len()
    }

    /// The supervision tree: the top-level actors and, below each, its
    /// live children, down to the leaves (at most [`MAX_TREE_ACTORS`]
    /// actors). Each actor is asked for its children with a signal, which
    /// it answers between two messages; one that does not answer within
    /// `patience` (busy in a long handler) is listed without them. Costs
    /// the actors nothing until called.
    pub async fn tree(&self, patience: std::time::Duration) -> Vec<ActorNode> {
        let names = self.names_by_actor();
        let info = |cell: &Arc<ActorCell>, top_level: bool| ActorInfo::of(cell, top_level, &names);
        let mut tops: Vec<Arc<ActorCell>> =
            self.inner.top_level.iter().map(|e| e.value().clone()).filter(|c| c.is_alive()).collect();
        tops.sort_by_key(|c| c.id());
        tops.truncate(MAX_TREE_ACTORS);
        // Asked level by level, every actor of a level at once.
        let mut listed = tops.len();
        let mut level: Vec<(Vec<usize>, Arc<ActorCell>)> =
            tops.iter().enumerate().map(|(i, c)| (vec![i], c.clone())).collect();
        let mut roots: Vec<ActorNode> =
            tops.iter().map(|c| ActorNode { info: info(c, true), children: None }).collect();
        while !level.is_empty() {
            let asked: Vec<_> = level
                .into_iter()
                .filter_map(|(path, cell)| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    cell.ask_children(tx).then_some((path, rx))
                })
                .collect();
            let deadline = tokio::time::Instant::now() + patience;
            let mut next = Vec::new();
            for (path, rx) in asked {
                let Ok(Ok(mut children)) = tokio::time::timeout_at(deadline, rx).await else { continue };
                children.retain(|c| c.is_alive());
                children.sort_by_key(|c| c.id());
                children.truncate(MAX_TREE_ACTORS.saturating_sub(listed));
                listed += children.len();
                let Some(node) = node_at(&mut roots, &path) else { continue };
                node.children =
                    Some(children.iter().map(|c| ActorNode { info: info(c, false), children: None }).collect());
                for (i, child) in children.into_iter().enumerate() {
                    let mut child_path = path.clone();
                    child_path.push(i);
                    next.push((child_path, child));
                }
            }
            level = next;
        }
        roots
    }

    /// The names each actor holds in the registry.
    fn names_by_actor(&self) -> crate::entropy::HashMap<ActorId, Vec<String>> {
        let mut names: crate::entropy::HashMap<ActorId, Vec<String>> = crate::entropy::HashMap::default();
        for entry in self.inner.registry.iter() {
            names.entry(entry.value().cell.id()).or_default().push(entry.key().clone());
        }
        for held in names.values_mut() {
            held.sort();
        }
        names
    }

    /// A snapshot of the system's top-level actors and of every actor
    /// registered under a name (children included), for operators: type,
    /// name, mailbox depth, messages handled. Reading it costs the actors
    /// nothing (their counters are read, not asked for). Children that are
    /// neither top-level nor named are not listed. Ordered by id.
    pub fn actors(&self) -> Vec<ActorInfo> {
        let mut cells: crate::entropy::HashMap<ActorId, (Arc<ActorCell>, bool)> =
            self.inner.top_level.iter().map(|e| (*e.key(), (e.value().clone(), true))).collect();
        for entry in self.inner.registry.iter() {
            let cell = &entry.value().cell;
            cells.entry(cell.id()).or_insert_with(|| (cell.clone(), false));
        }
        let names = self.names_by_actor();
        let mut infos: Vec<ActorInfo> = cells
            .into_values()
            .filter(|(cell, _)| cell.is_alive())
            .map(|(cell, top_level)| ActorInfo::of(&cell, top_level, &names))
            .collect();
        infos.sort_by_key(|i| i.id);
        infos
    }

    pub(crate) fn add_top_level(&self, cell: &Arc<ActorCell>) {
        self.inner.top_level.insert(cell.id(), cell.clone());
    }

    pub(crate) fn remove_top_level(&self, id: ActorId) {
        self.inner.top_level.remove(&id);
    }

    /// Frees `name` if `id` still holds it.
    pub(crate) fn release_name(&self, name: &str, id: ActorId) {
        self.inner.registry.remove_if(name, |_, reg| reg.cell.id() == id);
    }
}

impl fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorSystem")
            .field("name", &self.inner.name)
            .field("top_level", &self.inner.top_level.len())
            .finish()
    }
}

/// The node at `path` (indexes from the roots down).
fn node_at<'a>(roots: &'a mut [ActorNode], path: &[usize]) -> Option<&'a mut ActorNode> {
    let (first, rest) = path.split_first()?;
    let mut node = roots.get_mut(*first)?;
    for i in rest {
        node = node.children.as_mut()?.get_mut(*i)?;
    }
    Some(node)
}
