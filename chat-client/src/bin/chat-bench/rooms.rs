//! The `rooms` workload's clients: named (the ROOMS capability), each out
//! of the lobby and in the rooms the plan gives it. The run itself is
//! `fanout`'s, over that plan.
//!
//! Every client leaves the lobby, so that a thousand clients arriving do not
//! make a million lobby notices, and the run measures the rooms alone.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::conn::{Ask, Client};
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
    let tag = &opts.tag;
    let gate = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut set = JoinSet::new();
    for id in 0..opts.plan.clients() {
        let (gate, server) = (gate.clone(), opts.server);
        let join = opts.plan.names_of(id);
        let name = format!("{tag}.{id}");
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let ask = Ask {
                name: &name,
                join: &join,
                part_lobby: true,
            };
            Client::named(id, server, ask, |_, _| {}).await
        });
    }
    let all = async {
        let mut clients = Vec::with_capacity(set.len());
        while let Some(r) = set.join_next().await {
            clients.push(r.expect("connect task panicked")?);
        }
        Ok::<_, Error>(clients)
    };
    let mut clients = tokio::time::timeout(opts.timeout, all)
        .await
        .map_err(|_| {
            Error::Timeout(format!(
                "could not connect and seat all {} clients in their rooms in {:?}",
                opts.plan.clients(),
                opts.timeout
            ))
        })??;
    clients.sort_by_key(|c| c.id);
    Ok(clients)
}
