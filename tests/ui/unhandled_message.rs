use footlight::prelude::*;

#[derive(Actor)]
struct Counter;

#[derive(Message)]
struct Add(u64);

async fn send(counter: ActorRef<Counter>) {
    let _ = counter.tell(Add(1)).await;
}

fn main() {}
