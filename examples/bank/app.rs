//! The bank's service code, shared by the `bank` binary, the flagship demo
//! and the scenario tests: accounts as sharded entities, transfers by ask,
//! an audit that sums every balance and counts where each account runs.
//!
//! An account keeps its state in a ledger: a directory with one file per
//! account, written (to a temporary file, then renamed) before each reply.
//! It stands in for the database a real service would use; what matters is
//! that it outlives a node's process, and that sharding guarantees one
//! writer per account at a time. Transfers are effectively once: each has
//! an id, the debit and the credit record the ids they applied, so a
//! transfer retried after a timeout or a lost node is applied once.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use footlight::cluster::{EntityAskError, Sharding};
use footlight::prelude::*;

/// The entity type's name.
pub const ACCOUNTS: &str = "bank.account";
/// The group of every node's census.
pub const CENSUS: &str = "bank.census";
/// What each account holds when it is first opened.
pub const OPENING_BALANCE: u64 = 1_000;

/// An account's durable state.
#[derive(Default, Serialize, Deserialize)]
struct State {
    balance: u64,
    /// Transfers debited here: whether each one was (or was refused).
    debits: BTreeMap<u64, bool>,
    /// Transfers credited here.
    credits: BTreeSet<u64>,
}

/// The accounts active on this node (a census the audit gathers).
pub type Active = Arc<Mutex<BTreeSet<String>>>;

/// One account.
pub struct Account {
    id: String,
    node: String,
    ledger: PathBuf,
    state: State,
    active: Active,
}

impl Account {
    fn path(&self) -> PathBuf {
        let safe: String =
            self.id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        self.ledger.join(format!("{safe}.account"))
    }

    fn save(&self) -> Result<(), String> {
        let bytes = footlight::remote::codec::encode(&self.state).map_err(|e| e.to_string())?;
        let path = self.path();
        let tmp = path.with_extension(format!("tmp-{}", self.node));
        std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| e.to_string())
    }
}

impl Actor for Account {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.state = match std::fs::read(self.path()) {
            Ok(bytes) => footlight::remote::codec::decode(&bytes).map_err(|e| ActorError::msg(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                State { balance: OPENING_BALANCE, ..State::default() }
            }
            Err(e) => return Err(ActorError::msg(e.to_string())),
        };
        self.active.lock().unwrap_or_else(|p| p.into_inner()).insert(self.id.clone());
        Ok(())
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// Takes `amount` out for transfer `transfer`, if the balance allows:
/// `Ok(true)` if debited, `Ok(false)` if refused for want of funds (the
/// same answer again for the same transfer).
#[derive(Message, Serialize, Deserialize)]
#[message(reply = Result<bool, String>, remote = "bank.Debit")]
pub struct Debit {
    pub transfer: u64,
    pub amount: u64,
}

/// Puts `amount` in for transfer `transfer` (once, however often asked).
#[derive(Message, Serialize, Deserialize)]
#[message(reply = Result<(), String>, remote = "bank.Credit")]
pub struct Credit {
    pub transfer: u64,
    pub amount: u64,
}

/// The balance, and the node the account runs on.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = (u64, String), remote = "bank.Balance")]
pub struct Balance;

impl Handler<Debit> for Account {
    async fn handle(&mut self, Debit { transfer, amount }: Debit, _ctx: &mut Context<Self>) -> Result<bool, String> {
        if let Some(done) = self.state.debits.get(&transfer) {
            return Ok(*done);
        }
        let done = self.state.balance >= amount;
        if done {
            self.state.balance -= amount;
        }
        self.state.debits.insert(transfer, done);
        self.save()?;
        Ok(done)
    }
}

impl Handler<Credit> for Account {
    async fn handle(&mut self, Credit { transfer, amount }: Credit, _ctx: &mut Context<Self>) -> Result<(), String> {
        if self.state.credits.insert(transfer) {
            self.state.balance += amount;
            self.save()?;
        }
        Ok(())
    }
}

impl Handler<Balance> for Account {
    async fn handle(&mut self, _: Balance, _ctx: &mut Context<Self>) -> (u64, String) {
        (self.state.balance, self.node.clone())
    }
}

impl RemoteActor for Account {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Debit>().add::<Credit>().add::<Balance>();
    }
}

/// Each node's census: the accounts active on it.
pub struct Census(Active);

impl Actor for Census {}

/// The ids of the accounts active on the census' node.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = Vec<String>, remote = "bank.Count")]
pub struct Count;

impl Handler<Count> for Census {
    async fn handle(&mut self, _: Count, _ctx: &mut Context<Self>) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

impl RemoteActor for Census {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Count>();
    }
}

/// The bank on one node: its accounts' region, and what runs here.
#[derive(Clone)]
pub struct Bank {
    pub accounts: Sharding<Account>,
    pub active: Active,
}

/// A default ledger directory for cluster `cluster`, shared by the nodes
/// of this machine.
pub fn default_ledger(cluster: &str) -> PathBuf {
    std::env::temp_dir().join(format!("footlight-bank-{cluster}"))
}

/// Starts the bank on `node`: the accounts' sharding (every node hosts
/// accounts) and the node's census.
pub fn start(node: &Cluster, ledger: &Path) -> Result<Bank, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(ledger)?;
    let active = Active::default();
    let (me, dir, census) = (node.id().to_owned(), ledger.to_owned(), active.clone());
    let accounts = node
        .sharding(ACCOUNTS, move |id: &str| Account {
            id: id.to_owned(),
            node: me.clone(),
            ledger: dir.clone(),
            state: State::default(),
            active: census.clone(),
        })
        .shards(100)
        .start()?;
    let census = node.system().spawn(Census(active.clone()));
    node.join(CENSUS, &census)?;
    Ok(Bank { accounts, active })
}

/// The name of account `n`.
pub fn account(n: u64) -> String {
    format!("acct-{n}")
}

/// How a run of transfers went.
#[derive(Debug, Default)]
pub struct Report {
    pub transfers: u64,
    pub moved: u64,
    pub refused: u64,
    /// Asks that failed (a timeout, a node lost) and were asked again.
    pub retries: u64,
}

/// Asks until there is an answer: the messages are idempotent.
async fn until_answered<M, R>(bank: &Bank, id: &str, mut msg: impl FnMut() -> M, retries: &mut u64) -> Result<R, String>
where
    M: Message<Reply = Result<R, String>>,
    Account: Handler<M>,
{
    let entity = bank.accounts.entity_ref(id);
    for _ in 0..100 {
        match entity.ask_timeout(msg(), Duration::from_secs(2)).await {
            Ok(answer) => return answer,
            Err(EntityAskError::Timeout | EntityAskError::NoReply | EntityAskError::Full) => {
                *retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("{id} did not answer"))
}

/// Runs transfers `ids` between accounts `0..accounts` (amounts and pairs
/// drawn from `seed`), `concurrency` at a time; counts each one done in
/// `done`.
pub async fn run_transfers(
    bank: &Bank,
    ids: std::ops::Range<u64>,
    accounts: u64,
    concurrency: usize,
    seed: u64,
    done: Arc<AtomicU64>,
) -> Result<Report, String> {
    let work = Arc::new(Mutex::new(ids.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (bank, work, done) = (bank.clone(), work.clone(), done.clone());
        tasks.spawn(async move {
            let mut report = Report::default();
            loop {
                let Some(transfer) = work.lock().unwrap_or_else(|p| p.into_inner()).next() else { break };
                let r = mix(seed ^ transfer);
                let from = r % accounts;
                let to = (from + 1 + (r >> 20) % (accounts - 1).max(1)) % accounts;
                let amount = 1 + (r >> 40) % 200;
                let debited =
                    until_answered(&bank, &account(from), || Debit { transfer, amount }, &mut report.retries).await?;
                if debited {
                    until_answered(&bank, &account(to), || Credit { transfer, amount }, &mut report.retries).await?;
                    report.moved += 1;
                } else {
                    report.refused += 1;
                }
                report.transfers += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(report)
        });
    }
    let mut total = Report::default();
    while let Some(done) = tasks.join_next().await {
        let r = done.map_err(|e| e.to_string())??;
        total.transfers += r.transfers;
        total.moved += r.moved;
        total.refused += r.refused;
        total.retries += r.retries;
    }
    Ok(total)
}

/// A 64-bit mix (splitmix64's finaliser): the same pairs for the same seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the audit found.
#[derive(Debug)]
pub struct Audit {
    /// The sum of every balance.
    pub total: u64,
    /// Where each account answered from.
    pub answered_from: BTreeMap<String, String>,
    /// Each account's activations, as every node's census counts them.
    pub activations: BTreeMap<String, usize>,
    /// Accounts per node.
    pub per_node: BTreeMap<String, usize>,
}

impl Audit {
    /// The accounts not active exactly once, with their counts.
    pub fn not_once(&self) -> Vec<(String, usize)> {
        let mut out: Vec<_> = self.activations.iter().filter(|(_, n)| **n != 1).map(|(a, n)| (a.clone(), *n)).collect();
        for id in self.answered_from.keys() {
            if !self.activations.contains_key(id) {
                out.push((id.clone(), 0));
            }
        }
        out
    }
}

/// Sums the balances of accounts `0..accounts` and gathers every node's
/// census.
pub async fn audit(node: &Cluster, bank: &Bank, accounts: u64) -> Result<Audit, String> {
    let mut total = 0;
    let mut answered_from = BTreeMap::new();
    for n in 0..accounts {
        let id = account(n);
        let mut tries = 0;
        let (balance, from) = loop {
            match bank.accounts.entity_ref(id.as_str()).ask_timeout(Balance, Duration::from_secs(2)).await {
                Ok(answer) => break answer,
                Err(_) if tries < 20 => tries += 1,
                Err(e) => return Err(format!("{id}: {e}")),
            }
        };
        total += balance;
        answered_from.insert(id, from);
    }
    let mut activations: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_node = HashMap::new();
    for census in node.group::<Census>(CENSUS).await {
        let at = census.remote_addr().map_or_else(|| node.id().to_owned(), |a| a.node);
        let ids = census.ask(Count).await.map_err(|e| format!("census of {at}: {e}"))?;
        per_node.insert(at, ids.len());
        for id in ids {
            *activations.entry(id).or_default() += 1;
        }
    }
    Ok(Audit { total, answered_from, activations, per_node: per_node.into_iter().collect() })
}
