//! The `rooms` workload's clients: named (the ROOMS capability), each out
//! of the lobby and in the rooms the plan gives it. The run itself is
//! `fanout`'s, over that plan. `history ack` seats its clients here too.
//!
//! Every client leaves the lobby, so that a thousand clients arriving do not
//! make a million lobby notices, and the run measures the rooms alone.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_proto::features;

use crate::conn::{Ask, Client, LOBBY, connect_all};
use crate::error::Error;
use crate::fanout::Options;
use crate::plan::Plan;

/// A short tag for this run's room and client names, so that a run does
/// not meet the names of an earlier one still leaving the same server.
pub(crate) fn tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "b{:06x}",
        (nanos ^ u64::from(std::process::id()) << 20) & 0xff_ffff
    )
}

/// Connects every client of `opts.plan`, named `{tag}.{id}` after
/// `opts.tag`, each in its rooms; returns them in id order once every room
/// has all its members (each client had the server's answer to each of its
/// joins).
pub(crate) async fn connect(opts: &Options) -> Result<Vec<Client>, Error> {
    let n = opts.plan.clients();
    let seats = Seats {
        server: opts.server,
        plan: &opts.plan,
        tag: &opts.tag,
        features: features::ROOMS,
        parallel: opts.parallel,
        timeout: opts.timeout,
    };
    seats
        .fill(&format!("seat all {n} clients in their rooms"))
        .await
}

/// Who sits where, and how to connect them.
pub(crate) struct Seats<'a> {
    pub(crate) server: SocketAddr,
    pub(crate) plan: &'a Plan,
    /// What the client names start with.
    pub(crate) tag: &'a str,
    /// What the clients ask for (ROOMS at least).
    pub(crate) features: u64,
    /// Handshakes in flight at once.
    pub(crate) parallel: usize,
    pub(crate) timeout: Duration,
}

impl Seats<'_> {
    /// Connects every client, named `{tag}.{id}`, each in its rooms and
    /// out of the lobby (or, with no rooms, in the lobby alone); returns
    /// them in id order once each had the server's answer to each of its
    /// joins. A timeout says "could not connect and {what}".
    pub(crate) async fn fill(&self, what: &str) -> Result<Vec<Client>, Error> {
        let n = self.plan.clients();
        connect_all(n, self.parallel, self.timeout, what, |id| {
            let (server, features) = (self.server, self.features);
            let (join, name) = (self.plan.names_of(id), format!("{}.{id}", self.tag));
            async move {
                let ask = Ask {
                    name: &name,
                    join: &join,
                    part_lobby: !join.is_empty(),
                };
                let mut c = Client::named_with(id, server, ask, features, |_, _| {}).await?;
                if c.rooms.is_empty() {
                    c.rooms = vec![LOBBY.into()];
                }
                Ok(c)
            }
        })
        .await
    }
}
