use footlight::prelude::*;

#[derive(Actor)]
struct Counter;

struct Plain;

impl Handler<Plain> for Counter {
    async fn handle(&mut self, _: Plain, _ctx: &mut Context<Self>) {}
}

fn main() {}
