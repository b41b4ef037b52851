//! The `rooms` workload's clients: named (the ROOMS capability), each out
//! of the lobby and in the rooms the plan gives it. The run itself is
//! `fanout`'s, over that plan.
//!
//! Every client leaves the lobby, so that a thousand clients arriving do not
//! make a million lobby notices, and the run measures the rooms alone.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::conn::{Ask, Client, connect_all};
use crate::error::Error;
use crate::fanout::Options;

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
    let what = format!("seat all {n} clients in their rooms");
    connect_all(n, opts.parallel, opts.timeout, &what, |id| {
        let (server, join, name) = (
            opts.server,
            opts.plan.names_of(id),
            format!("{}.{id}", opts.tag),
        );
        async move {
            let ask = Ask {
                name: &name,
                join: &join,
                part_lobby: true,
            };
            Client::named(id, server, ask, |_, _| {}).await
        }
    })
    .await
}
