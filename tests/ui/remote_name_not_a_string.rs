use footlight::Message;

#[derive(Message)]
#[message(remote = demo)]
struct Add(u64);

fn main() {}
