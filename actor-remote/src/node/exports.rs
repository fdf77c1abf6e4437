//! Exports: which local actors peers may reach, by name and by handle.
//!
//! An actor's **handle** is the number peers address it by: a
//! random-looking 64-bit number (SipHash with this run's secret keys over
//! the actor's id), so a peer reaches only actors whose handle it was given
//! (by a lookup or inside a message), never one it guesses. An actor's
//! handle is the same for its whole life, also after the cache here forgot
//! it (links name their actors by handle).

use actor_core::entropy::DashMap;
use std::any::{Any, TypeId};
use std::hash::BuildHasher;
use std::sync::Arc;

use actor_core::{ActorId, ActorRef};

use super::NodeError;
use super::expose::{DispatchTable, Exposed, ExposedActor, RemoteActor, RemoteMessages};
use crate::proto::frame::{Target, TargetRef};

/// Actors a node exports by handle: past this, refs to more local actors in
/// messages are refused.
pub(crate) const MAX_EXPORTED: usize = 100_000;

/// Makes an actor of one type reachable: its `ActorRef<A>`, boxed, in; its
/// exposure out.
type Exporter = Arc<dyn Fn(Box<dyn Any + Send + Sync>) -> Option<Arc<dyn Exposed>> + Send + Sync>;

/// The local actors peers may reach.
pub(crate) struct Exports {
    /// By the name they were spawned under ([`Node::spawn_named`](super::Node::spawn_named)).
    by_name: DashMap<String, Arc<dyn Exposed>>,
    /// By handle, with their name if any.
    by_handle: DashMap<u64, (String, Arc<dyn Exposed>)>,
    /// Per exposed actor type ([`Node::expose`](super::Node::expose)).
    exporters: DashMap<TypeId, Exporter>,
    /// Handles made so far, by actor id.
    handles: DashMap<u64, u64>,
    keys: actor_core::entropy::Keys,
}

impl Default for Exports {
    fn default() -> Self {
        Exports {
            by_name: actor_core::entropy::dash_map(),
            by_handle: actor_core::entropy::dash_map(),
            exporters: actor_core::entropy::dash_map(),
            handles: actor_core::entropy::dash_map(),
            keys: actor_core::entropy::Keys::new(),
        }
    }
}

impl Exports {
    /// Lets actors of type `A` be exported, and gives the table of the
    /// messages peers may send them.
    pub(crate) fn expose<A: RemoteActor>(&self) -> Result<Arc<DispatchTable<A>>, NodeError> {
        let mut messages = RemoteMessages::new();
        A::remote_messages(&mut messages);
        let (table, missing) = messages.into_parts();
        if !missing.is_empty() {
            return Err(NodeError::NotRemote { actor: std::any::type_name::<A>(), messages: missing });
        }
        let table = Arc::new(table);
        let for_exporter = table.clone();
        let exporter: Exporter = Arc::new(move |any| {
            let actor = any.downcast::<ActorRef<A>>().ok()?;
            Some(Arc::new(ExposedActor { actor: *actor, table: for_exporter.clone() }) as Arc<dyn Exposed>)
        });
        self.exporters.insert(TypeId::of::<A>(), exporter);
        Ok(table)
    }

    /// Exports `actor` under `name` too.
    pub(crate) fn add_named<A: RemoteActor>(&self, name: &str, actor: &ActorRef<A>, table: Arc<DispatchTable<A>>) {
        let exposed: Arc<dyn Exposed> = Arc::new(ExposedActor { actor: actor.clone(), table });
        self.by_name.insert(name.to_owned(), exposed.clone());
        let handle = self.handle_of(actor.id());
        self.by_handle.insert(handle, (name.to_owned(), exposed));
    }

    /// The handle of local actor `actor_id`, made on first use. Never 0,
    /// which nothing is reachable by. Ids are never reused in a process, so
    /// neither are handles.
    pub(crate) fn handle_of(&self, actor_id: ActorId) -> u64 {
        *self.handles.entry(actor_id.as_u64()).or_insert_with(|| self.keys.hash_one(actor_id.as_u64()).max(1))
    }

    /// The handle of local actor `actor_id` if it was made.
    pub(crate) fn known_handle(&self, actor_id: ActorId) -> Option<u64> {
        self.handles.get(&actor_id.as_u64()).map(|h| *h)
    }

    /// Makes the local actor `actor` (an `ActorRef<A>` with `type_id` =
    /// `TypeId::of::<A>()`) reachable by its handle, if its type is exposed,
    /// and returns the handle.
    pub(crate) fn export(
        &self,
        type_id: TypeId,
        actor_id: ActorId,
        actor: Box<dyn Any + Send + Sync>,
    ) -> Result<u64, String> {
        let handle = self.handle_of(actor_id);
        if !self.by_handle.contains_key(&handle) {
            if self.by_handle.len() >= MAX_EXPORTED {
                self.forget_dead();
                if self.by_handle.len() >= MAX_EXPORTED {
                    return Err("too many exported actors on this node".into());
                }
            }
            let exporter = self
                .exporters
                .get(&type_id)
                .map(|e| e.value().clone())
                .ok_or("this actor type is not exposed (Node::expose) and cannot be sent to peers")?;
            let exposed = exporter(actor).ok_or("actor type mismatch")?;
            self.by_handle.entry(handle).or_insert_with(|| (String::new(), exposed));
        }
        Ok(handle)
    }

    /// The exported actor with `handle`, alive or not.
    pub(crate) fn by_handle(&self, handle: u64) -> Option<Arc<dyn Exposed>> {
        self.by_handle.get(&handle).map(|e| e.value().1.clone())
    }

    /// The exported actor a frame targets, if it is alive.
    pub(crate) fn resolve(&self, target: &Target) -> Option<Arc<dyn Exposed>> {
        self.resolve_ref(match target {
            Target::Id(id) => TargetRef::Id(*id),
            Target::Name(name) => TargetRef::Name(name),
        })
    }

    /// [`resolve`](Self::resolve) for a target read in place.
    pub(crate) fn resolve_ref(&self, target: TargetRef<'_>) -> Option<Arc<dyn Exposed>> {
        let exposed = match target {
            TargetRef::Id(id) => self.by_handle(id)?,
            TargetRef::Name(name) => self.by_name.get(name).map(|e| e.value().clone())?,
        };
        if exposed.is_alive() {
            Some(exposed)
        } else {
            self.forget_dead();
            None
        }
    }

    /// The live actor exported under `name`, with its handle.
    pub(crate) fn named(&self, name: &str) -> Option<(u64, Arc<dyn Exposed>)> {
        let exposed = self.resolve_ref(TargetRef::Name(name))?;
        let handle = self.by_handle.iter().find_map(|e| Arc::ptr_eq(&e.value().1, &exposed).then_some(*e.key()))?;
        Some((handle, exposed))
    }

    /// Whether the actor with `handle` is exported and alive.
    pub(crate) fn is_alive(&self, handle: u64) -> bool {
        self.by_handle.get(&handle).is_some_and(|e| e.value().1.is_alive())
    }

    /// Drops exported actors that have stopped (their names are free again).
    pub(crate) fn forget_dead(&self) {
        self.by_name.retain(|_, e| e.is_alive());
        self.by_handle.retain(|_, (_, e)| e.is_alive());
        self.handles.retain(|_, h| self.by_handle.contains_key(h));
    }

    /// Forgets every cached handle (tests: handles are the same afterwards).
    #[cfg(test)]
    pub(crate) fn clear_handles(&self) {
        self.handles.clear();
    }
}
