//! The chat service: rooms are actors registered cluster-wide as
//! `room:<name>` (created on the node of the first user to join); users are
//! actors on their own node, sent to the room inside `Join` messages. A room
//! fans each line out to its users across nodes and watches them: a user
//! whose node dies leaves the room, and the others are told. Shared by the
//! example binary and the in-process test.
//!
//! Partitions: the nodes run a keep-majority split-brain resolver. A node
//! on the minority side downs itself; its users' lines and joins are then
//! refused with the reason (so no second room of one name grows there),
//! and the majority side re-creates a room that lived on the minority.
#![allow(dead_code, unreachable_pub)]

use footlight::prelude::*;
use footlight::{ClusterEvent, SendError};
use tokio::sync::mpsc;

/// A chat room: its users, by name.
pub struct Room {
    name: String,
    users: Vec<(String, ActorRef<User>)>,
}

/// A user enters the room.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "chat.Join")]
pub struct Join {
    /// Display name.
    pub user: String,
    /// Where the room's lines go (an actor on the user's node).
    pub inbox: ActorRef<User>,
}

/// A user leaves the room.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "chat.Leave")]
pub struct Leave {
    /// Display name.
    pub user: String,
}

/// A user says something in the room.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "chat.Say")]
pub struct Say {
    /// Display name.
    pub user: String,
    /// The line.
    pub text: String,
}

/// Who is in the room.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = Vec<String>, remote = "chat.Who")]
pub struct Who;

impl Room {
    async fn announce(&self, from: &str, text: String) {
        for (_, inbox) in &self.users {
            let line = Line { room: self.name.clone(), from: from.to_owned(), text: text.clone() };
            // A user on a node that is gone is removed when its watch fires.
            let _ = inbox.tell(line).await;
        }
    }
}

impl Handler<Join> for Room {
    async fn handle(&mut self, join: Join, ctx: &mut Context<Self>) {
        ctx.watch(&join.inbox);
        self.users.retain(|(name, _)| *name != join.user);
        self.users.push((join.user.clone(), join.inbox));
        self.announce("*", format!("{} joined", join.user)).await;
    }
}

impl Handler<Leave> for Room {
    async fn handle(&mut self, leave: Leave, ctx: &mut Context<Self>) {
        if let Some(i) = self.users.iter().position(|(name, _)| *name == leave.user) {
            let (_, inbox) = self.users.remove(i);
            ctx.unwatch(&inbox);
            self.announce("*", format!("{} left", leave.user)).await;
        }
    }
}

impl Handler<Say> for Room {
    async fn handle(&mut self, say: Say, _ctx: &mut Context<Self>) {
        self.announce(&say.user, say.text).await;
    }
}

impl Handler<Who> for Room {
    async fn handle(&mut self, _: Who, _ctx: &mut Context<Self>) -> Vec<String> {
        self.users.iter().map(|(name, _)| name.clone()).collect()
    }
}

impl RemoteActor for Room {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Join>().add::<Leave>().add::<Say>().add::<Who>();
    }
}

/// A user's inbox: lines from rooms go to the terminal (or a test).
#[derive(Actor)]
pub struct User {
    out: mpsc::UnboundedSender<String>,
}

/// A line from a room.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "chat.Line")]
pub struct Line {
    /// The room.
    pub room: String,
    /// Who said it (`*` for the room itself).
    pub from: String,
    /// What was said.
    pub text: String,
}

impl Handler<Line> for User {
    async fn handle(&mut self, line: Line, _ctx: &mut Context<Self>) {
        let _ = self.out.send(format!("[{}] {}: {}", line.room, line.from, line.text));
    }
}

impl RemoteActor for User {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Line>();
    }
}

/// A room watches its users: one that stops, or whose node is lost,
/// leaves the room, and the others are told.
impl Actor for Room {
    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, gone: Terminated) {
        if let Some(i) = self.users.iter().position(|(_, inbox)| inbox.id() == gone.id) {
            let (user, _) = self.users.remove(i);
            let why = match gone.reason {
                ExitReason::NodeDown => "their node is down".to_owned(),
                other => other.to_string(),
            };
            self.announce("*", format!("{user} left ({why})")).await;
        }
    }
}

impl Room {
    fn new(name: &str) -> Room {
        Room { name: name.to_owned(), users: Vec::new() }
    }
}

/// Lets rooms and users be reached across nodes.
pub fn setup(node: &Cluster) -> Result<(), ClusterError> {
    node.expose::<Room>()?;
    node.expose::<User>()?;
    Ok(())
}

/// The room named `name`: found anywhere in the cluster, or created here.
pub async fn room(node: &Cluster, name: &str) -> Result<ActorRef<Room>, ClusterError> {
    let key = format!("room:{name}");
    if let Ok(found) = node.lookup::<Room>(&key).await {
        return Ok(found);
    }
    let room = node.system().spawn(Room::new(name));
    match node.register(&key, &room) {
        Ok(()) => {
            // Made at the same time on another node, and that one won: stop
            // this one, so its users rejoin the winner on their next line.
            let mut events = node.subscribe();
            let weak = room.downgrade();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if matches!(&event, ClusterEvent::NameLost { name, .. } if *name == key) {
                        if let Some(room) = weak.upgrade() {
                            room.stop();
                        }
                        return;
                    }
                }
            });
            Ok(room)
        }
        // Created elsewhere meanwhile: use that one.
        Err(ClusterError::NameTaken { .. }) => {
            room.stop();
            node.lookup(&key).await
        }
        Err(e) => Err(e),
    }
}

/// One user on one node: the terminal client's state.
pub struct Client {
    node: Cluster,
    name: String,
    inbox: ActorRef<User>,
    current: Option<(String, ActorRef<Room>)>,
}

impl Client {
    /// A user named `name` on `node`; lines for it arrive on the receiver.
    pub fn new(node: &Cluster, name: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
        let (out, lines) = mpsc::unbounded_channel();
        let inbox = node.system().spawn(User { out });
        (Client { node: node.clone(), name: name.to_owned(), inbox, current: None }, lines)
    }

    /// Why this node refuses lines, if it does: it downed itself.
    fn refusal(&self) -> Result<(), Box<dyn std::error::Error>> {
        match self.node.downed_reason() {
            Some(reason) => Err(format!(
                "refused: this node is on the losing side of a partition and downed itself ({reason}); restart it to rejoin"
            )
            .into()),
            None => Ok(()),
        }
    }

    /// Enters room `name` (leaving the current one).
    pub async fn join(&mut self, name: &str) -> Result<(), Box<dyn std::error::Error>> {
        self.refusal()?;
        self.leave().await;
        let room = room(&self.node, name).await?;
        room.tell(Join { user: self.name.clone(), inbox: self.inbox.clone() }).await?;
        self.current = Some((name.to_owned(), room));
        Ok(())
    }

    /// Leaves the current room.
    pub async fn leave(&mut self) {
        if let Some((_, room)) = self.current.take() {
            let _ = room.tell(Leave { user: self.name.clone() }).await;
        }
    }

    /// Says `text` in the current room. If the room's node is gone, the room
    /// is made again (here, or wherever another user made it) and rejoined.
    pub async fn say(&mut self, text: &str) -> Result<(), Box<dyn std::error::Error>> {
        self.refusal()?;
        let Some((name, room)) = self.current.clone() else { return Err("join a room first: /join NAME".into()) };
        match room.tell(Say { user: self.name.clone(), text: text.to_owned() }).await {
            Ok(()) => Ok(()),
            Err(SendError::NodeDown(say) | SendError::Closed(say)) => {
                self.current = None;
                self.join(&name).await?;
                if let Some((_, room)) = &self.current {
                    room.tell(say).await?;
                }
                Ok(())
            }
            Err(e) => Err(e.to_string().into()),
        }
    }

    /// The current room's name, if in one.
    pub fn room_name(&self) -> Option<String> {
        self.current.as_ref().map(|(name, _)| name.clone())
    }

    /// Who is in the current room.
    pub async fn who(&self) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let Some((_, room)) = &self.current else { return Err("join a room first: /join NAME".into()) };
        Ok(room.ask(Who).await?)
    }
}
