use footlight::Message;

#[derive(Message)]
#[message(reply = 42)]
struct Number;

fn main() {}
