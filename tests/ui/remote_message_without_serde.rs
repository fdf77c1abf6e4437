use footlight::Message;

#[derive(Message)]
#[message(reply = u64, remote = "demo.Add")]
struct Add(u64);

fn main() {}
