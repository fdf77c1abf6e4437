//! The local registry: register, look up, conflicts, wrong type, and names
//! freed when their actor stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorSystem, LookupError, RegisterError, SpawnError, SpawnOptions};
use common::within;

struct A;
impl Actor for A {}
struct B;
impl Actor for B {}

#[tokio::test]
async fn register_lookup_and_release() {
    let system = ActorSystem::new("t");
    let a = system.spawn(A);
    system.register("svc", &a).unwrap();
    assert_eq!(system.lookup::<A>("svc").unwrap(), a);

    let other = system.spawn(A);
    assert_eq!(system.register("svc", &other), Err(RegisterError::NameTaken("svc".into())));

    assert!(matches!(system.lookup::<B>("svc"), Err(LookupError::WrongType { .. })));
    assert_eq!(system.lookup::<A>("nope"), Err(LookupError::NotFound("nope".into())));

    a.stop();
    within("stop", a.wait_for_stop()).await;
    assert_eq!(system.lookup::<A>("svc"), Err(LookupError::NotFound("svc".into())), "freed on stop");
    system.register("svc", &other).unwrap();
    assert_eq!(system.lookup::<A>("svc").unwrap(), other);
    system.shutdown().await;
}

#[tokio::test]
async fn spawn_with_a_name() {
    let system = ActorSystem::new("t");
    let a = system.spawn_with(A, SpawnOptions::new().name("one")).unwrap();
    assert_eq!(a.name(), Some("one"));
    assert_eq!(system.lookup::<A>("one").unwrap(), a);
    let err = system.spawn_with(A, SpawnOptions::new().name("one")).unwrap_err();
    assert_eq!(err, SpawnError::NameTaken("one".into()));
    assert!(system.unregister("one"));
    assert!(system.lookup::<A>("one").is_err());
    system.shutdown().await;
}

#[tokio::test]
async fn registering_a_dead_actor_fails() {
    let system = ActorSystem::new("t");
    let a = system.spawn(A);
    a.stop();
    a.wait_for_stop().await;
    assert_eq!(system.register("late", &a), Err(RegisterError::ActorStopped));
    assert!(system.lookup::<A>("late").is_err());
}
