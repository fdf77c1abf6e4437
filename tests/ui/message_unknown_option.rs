use footlight::Message;

#[derive(Message)]
#[message(reply = u32, replay = u32)]
struct Typo;

fn main() {}
