//! `#[derive(Actor)]` and `#[derive(Message)]` through the facade.

use footlight::prelude::*;

#[derive(Actor, Default)]
struct Greeter {
    greeted: u32,
}

#[derive(Message)]
#[message(reply = String)]
struct Greet(String);

impl Handler<Greet> for Greeter {
    async fn handle(&mut self, Greet(name): Greet, _ctx: &mut Context<Self>) -> String {
        self.greeted += 1;
        format!("hello {name} (#{})", self.greeted)
    }
}

/// No `#[message]` attribute: the reply is `()`.
#[derive(Message)]
struct Ping;

impl Handler<Ping> for Greeter {
    async fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) {}
}

/// Generic messages keep their parameters and bounds.
#[derive(Message)]
#[message(reply = Vec<T>)]
struct Repeat<T: Clone + Send + 'static>(T, usize);

impl<T: Clone + Send + 'static> Handler<Repeat<T>> for Greeter {
    async fn handle(&mut self, Repeat(item, n): Repeat<T>, _ctx: &mut Context<Self>) -> Vec<T> {
        vec![item; n]
    }
}

#[tokio::test]
async fn derived_actor_and_messages_work() {
    let system = ActorSystem::new("derive");
    let greeter = system.spawn(Greeter::default());
    greeter.tell(Ping).await.unwrap();
    let () = greeter.ask(Ping).await.unwrap();
    assert_eq!(greeter.ask(Greet("ada".into())).await.unwrap(), "hello ada (#1)");
    assert_eq!(greeter.ask(Repeat('x', 3)).await.unwrap(), vec!['x', 'x', 'x']);
    system.shutdown().await;
}

#[test]
fn reply_types_are_as_declared() {
    fn reply_of<M: Message>() -> &'static str {
        std::any::type_name::<M::Reply>()
    }
    assert_eq!(reply_of::<Greet>(), std::any::type_name::<String>());
    assert_eq!(reply_of::<Ping>(), "()");
    assert_eq!(reply_of::<Repeat<u8>>(), std::any::type_name::<Vec<u8>>());
}
