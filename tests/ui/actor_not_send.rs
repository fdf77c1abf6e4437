use std::rc::Rc;

use footlight::Actor;

#[derive(Actor)]
struct Local(Rc<u8>);

fn main() {}
