//! Who is in which room, and what that means for every receiver: whom it
//! hears, how many deliveries it expects, which message of a sender comes
//! next. `fanout` is the plan with one room that holds everyone.
//!
//! Clients `0..N`, rooms `0..R` of exactly `S` members, each client in `K`
//! distinct rooms (`N·K = R·S`). The rooms come in `K` layers of `R/K`
//! rooms; each layer splits all N clients into groups of S: layer 0 in
//! blocks of consecutive ids, layer `k` after the permutation
//! `c → c·m_k mod N` (`m_k` coprime with N and at least `S^k`), so that
//! rooms of different layers share few members. Sender `s` says its
//! messages in runs of `run` in a row in one room, moving through its rooms
//! in turn: message `q` in its room number `(q / run) mod K`. (A server
//! batches the relays of one room that arrive together: a sender changing
//! rooms at every message at full speed makes one buffer per message.)

use crate::error::Error;

/// The membership plan of a run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    clients: usize,
    room_size: usize,
    per_client: usize,
    /// Messages a sender says in a row in one room.
    run: u32,
    /// `rooms[c * K + i]`: client `c`'s `i`-th room.
    rooms: Vec<u32>,
    /// Room names; empty for the one unnamed room of a version 1 `fanout`.
    names: Vec<String>,
    /// `peers[c]`: the other members of `c`'s rooms, each once, ascending.
    /// Sharing a room is symmetric: these are whom `c` hears and who hears `c`.
    peers: Vec<Vec<u32>>,
}

impl Plan {
    /// Everyone in one room, with no name: `fanout`'s version 1 `Send`s.
    pub(crate) fn one_room(clients: usize) -> Plan {
        let all: Vec<u32> = (0..clients as u32).collect();
        Plan {
            clients,
            room_size: clients,
            per_client: 1,
            run: 1,
            rooms: vec![0; clients],
            names: Vec::new(),
            peers: (0..clients as u32)
                .map(|c| all.iter().copied().filter(|&p| p != c).collect())
                .collect(),
        }
    }

    /// `clients` clients in rooms of `room_size`, each in `per_client`
    /// rooms, saying `run` messages in a row in each; `rooms`, if given,
    /// must be what that makes. Room `i` is called `{tag}-{i}`.
    ///
    /// # Errors
    ///
    /// [`Error::Options`] when the numbers do not fit together.
    pub(crate) fn rooms(
        clients: usize,
        rooms: Option<usize>,
        room_size: usize,
        per_client: usize,
        run: u32,
        tag: &str,
    ) -> Result<Plan, Error> {
        let bad = |why: String| Err(Error::Options(why));
        if per_client > 1000 {
            return bad("a client can be in at most 1000 rooms here".into());
        }
        if room_size < 2 || per_client < 1 || run < 1 {
            return bad(
                "rooms need at least 2 members, clients at least 1 room, runs at least 1 message"
                    .into(),
            );
        }
        if !clients.is_multiple_of(room_size) {
            return bad(format!(
                "{clients} clients do not split into rooms of {room_size}"
            ));
        }
        let layer = clients / room_size;
        let count = layer * per_client;
        if let Some(r) = rooms.filter(|&r| r != count) {
            return bad(format!(
                "{clients} clients in {per_client} rooms each make {} memberships, which is \
                 {count} rooms of {room_size}, not {r}: use --rooms {count}, or -n {}",
                clients * per_client,
                r * room_size / per_client
            ));
        }
        let mut plan = Plan {
            clients,
            room_size,
            per_client,
            run,
            rooms: vec![0; clients * per_client],
            names: (0..count).map(|i| format!("{tag}-{i}")).collect(),
            peers: Vec::new(),
        };
        let mut m = 1usize;
        for k in 0..per_client {
            if k > 0 {
                m = multiplier(clients, m, room_size);
            }
            for c in 0..clients {
                let group = (c * m % clients.max(1)) / room_size;
                plan.rooms[c * per_client + k] = (k * layer + group) as u32;
            }
        }
        let mut members = vec![Vec::new(); count];
        for c in 0..clients {
            for &r in plan.rooms_of(c) {
                members[r as usize].push(c as u32);
            }
        }
        plan.peers = (0..clients)
            .map(|c| {
                let mut p: Vec<u32> = plan
                    .rooms_of(c)
                    .iter()
                    .flat_map(|&r| members[r as usize].iter().copied())
                    .filter(|&p| p as usize != c)
                    .collect();
                p.sort_unstable();
                p.dedup();
                p
            })
            .collect();
        Ok(plan)
    }

    pub(crate) fn clients(&self) -> usize {
        self.clients
    }

    /// Members per room.
    pub(crate) fn room_size(&self) -> usize {
        self.room_size
    }

    /// Rooms per client.
    pub(crate) fn per_client(&self) -> usize {
        self.per_client
    }

    /// How many rooms there are.
    pub(crate) fn count(&self) -> usize {
        self.clients * self.per_client / self.room_size.max(1)
    }

    /// Whether the rooms have names (the ROOMS capability's `Say`), rather
    /// than being the one room of version 1 `Send`s.
    pub(crate) fn named(&self) -> bool {
        !self.names.is_empty()
    }

    /// Client `c`'s rooms, in the order its messages cycle through them.
    pub(crate) fn rooms_of(&self, c: usize) -> &[u32] {
        &self.rooms[c * self.per_client..(c + 1) * self.per_client]
    }

    /// The names of client `c`'s rooms (empty for an unnamed plan).
    pub(crate) fn names_of(&self, c: usize) -> Vec<String> {
        if !self.named() {
            return Vec::new();
        }
        self.rooms_of(c)
            .iter()
            .map(|&r| self.names[r as usize].clone())
            .collect()
    }

    /// Messages a sender says in a row in one room.
    pub(crate) fn run(&self) -> u32 {
        self.run
    }

    /// Which of its rooms (an index into [`rooms_of`](Self::rooms_of)) a
    /// sender says its message `q` in.
    pub(crate) fn turn(&self, q: u32) -> usize {
        (q / self.run) as usize % self.per_client
    }

    /// The name of the room sender `s` says its message `q` in.
    pub(crate) fn room_name(&self, s: usize, q: u32) -> &str {
        let r = self.rooms_of(s)[self.turn(q)];
        &self.names[r as usize]
    }

    /// Whom client `c` shares a room with.
    pub(crate) fn peers(&self, c: usize) -> &[u32] {
        &self.peers[c]
    }

    /// Whether receiver `r` is in the room sender `s` says its message `q` in.
    pub(crate) fn hears(&self, s: usize, r: usize, q: u32) -> bool {
        let room = self.rooms_of(s)[self.turn(q)];
        self.rooms_of(r).contains(&room)
    }

    /// The first of sender `s`'s messages `from..messages` that receiver `r`
    /// gets, or `messages` if none.
    pub(crate) fn next(&self, s: usize, r: usize, from: u32, messages: u32) -> u32 {
        if self.per_client == 1 {
            // One room each: a receiver hears every message of a sender it
            // shares that room with (the only senders it asks about).
            return from.min(messages);
        }
        // Within K runs the sender has been through all its rooms.
        let mut q = from;
        for _ in 0..=self.per_client {
            if q >= messages {
                break;
            }
            if self.hears(s, r, q) {
                return q;
            }
            q = (q / self.run).saturating_add(1).saturating_mul(self.run);
        }
        messages
    }

    /// Deliveries receiver `r` expects when everyone sends `messages`.
    pub(crate) fn expected(&self, r: usize, messages: u32) -> u64 {
        let (m, run) = (u64::from(messages), u64::from(self.run));
        self.peers[r]
            .iter()
            .map(|&s| {
                // Run j holds messages j·run .. min((j + 1)·run, M).
                (0..m.div_ceil(run))
                    .filter(|&j| self.hears(s as usize, r, (j * run) as u32))
                    .map(|j| m.min((j + 1) * run) - j * run)
                    .sum::<u64>()
            })
            .sum()
    }
}

/// The smallest multiplier coprime with `n`, above `prev`, and at least
/// `prev · size` while that stays below `n`: consecutive ids then land in
/// different groups of the new layer.
fn multiplier(n: usize, prev: usize, size: usize) -> usize {
    let want = prev.saturating_mul(size);
    let mut m = if want < n {
        want.max(prev + 1)
    } else {
        prev + 1
    };
    while gcd(m, n) != 1 {
        m += 1;
    }
    m
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(plan: &Plan) {
        let (n, k, s) = (plan.clients(), plan.per_client(), plan.room_size());
        let mut size = vec![0; plan.count()];
        for c in 0..n {
            let rooms = plan.rooms_of(c);
            assert_eq!(rooms.len(), k);
            for (i, r) in rooms.iter().enumerate() {
                assert!(!rooms[..i].contains(r), "client {c} twice in room {r}");
                size[*r as usize] += 1;
            }
        }
        assert!(size.iter().all(|&x| x == s), "{size:?}");
        // Brute force against the closed forms, and `next` against a scan.
        let m = 7;
        for snd in 0..n {
            for r in plan.peers(snd) {
                let r = *r as usize;
                for from in 0..=m {
                    let scan = (from..m).find(|&q| plan.hears(snd, r, q)).unwrap_or(m);
                    assert_eq!(plan.next(snd, r, from, m), scan, "{snd} -> {r} from {from}");
                }
            }
        }
        for r in 0..n {
            let mut want = 0;
            for q in 0..m {
                for snd in (0..n).filter(|&x| x != r) {
                    if plan.hears(snd, r, q) {
                        want += 1;
                        assert!(plan.peers(r).contains(&(snd as u32)));
                    }
                }
            }
            assert_eq!(plan.expected(r, m), want, "receiver {r}");
        }
    }

    #[test]
    fn every_room_has_exactly_its_members() {
        check(&Plan::rooms(1000, Some(200), 10, 2, 1, "t").unwrap());
        check(&Plan::rooms(1000, None, 100, 2, 3, "t").unwrap());
        check(&Plan::rooms(60, None, 10, 3, 2, "t").unwrap());
        check(&Plan::rooms(50, None, 50, 1, 1, "t").unwrap());
        check(&Plan::one_room(5));
    }

    #[test]
    fn layers_overlap_little() {
        let plan = Plan::rooms(1000, None, 10, 2, 1, "t").unwrap();
        // Rooms of 10 in two layers: a client hears 18 others, not 9.
        assert!(plan.peers.iter().all(|p| p.len() == 18));
        assert_eq!(
            plan.room_name(3, 1),
            plan.names[plan.rooms_of(3)[1] as usize]
        );
    }

    #[test]
    fn the_next_message_skips_rooms_the_receiver_is_not_in() {
        let plan = Plan::rooms(20, None, 10, 2, 1, "t").unwrap();
        let (s, r) = (0, 1); // same block: they share room 0 (layer 0) only
        assert!(plan.hears(s, r, 0) && !plan.hears(s, r, 1));
        assert_eq!(plan.next(s, r, 0, 5), 0);
        assert_eq!(plan.next(s, r, 1, 5), 2);
        assert_eq!(plan.next(s, r, 5, 5), 5);
        // In runs of 3: messages 0-2 in room 0, 3-5 in the other, 6-8 in room 0.
        let plan = Plan::rooms(20, None, 10, 2, 3, "t").unwrap();
        assert!(plan.hears(s, r, 2) && !plan.hears(s, r, 3) && plan.hears(s, r, 6));
        assert_eq!(plan.next(s, r, 2, 10), 2);
        assert_eq!(plan.next(s, r, 3, 10), 6);
        assert_eq!(plan.next(s, r, 4, 10), 6);
        assert_eq!(plan.next(s, r, 8, 10), 8);
        assert_eq!(plan.next(s, r, 9, 10), 10);
        assert_eq!(plan.next(s, r, 3, 6), 6);
        let one = Plan::one_room(3);
        assert_eq!(one.next(0, 1, 4, 9), 4);
        assert_eq!(one.expected(0, 9), 18);
    }

    #[test]
    fn numbers_that_do_not_fit_are_refused() {
        let e = Plan::rooms(1000, Some(100), 10, 2, 1, "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--rooms 200") && e.contains("-n 500"), "{e}");
        assert!(Plan::rooms(1000, None, 30, 2, 1, "t").is_err());
        assert!(Plan::rooms(10, None, 1, 2, 1, "t").is_err());
    }
}
