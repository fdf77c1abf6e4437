use footlight::Message;

#[derive(Message)]
#[message(reply = u32)]
#[message(reply = u64)]
struct Twice;

fn main() {}
