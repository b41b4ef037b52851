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
//!
//! **Senders.** All clients send, or only every `d`-th one (ids `0, d,
//! 2d, ...`; the others only receive). With `d` dividing `S`, every room of
//! every layer gets exactly `S/d` senders: `c → c·m_k mod N` keeps the
//! multiples of `d` among themselves (`d` divides `N`, `m_k` is coprime
//! with it), and each group of a layer is a block of `S` consecutive values.

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
    /// `peers[c]`: the other members of `c`'s rooms, each once, ascending:
    /// who hears `c`.
    peers: Vec<Vec<u32>>,
    /// Every `stride`-th client sends (1: all of them).
    stride: usize,
    /// `heard[c]`: the senders among `peers[c]`, ascending: whom `c` hears.
    heard: Vec<Vec<u32>>,
}

impl Plan {
    /// Everyone in one room, with no name: `fanout`'s version 1 `Send`s.
    pub(crate) fn one_room(clients: usize) -> Plan {
        let all: Vec<u32> = (0..clients as u32).collect();
        let peers: Vec<Vec<u32>> = (0..clients as u32)
            .map(|c| all.iter().copied().filter(|&p| p != c).collect())
            .collect();
        Plan {
            clients,
            room_size: clients,
            per_client: 1,
            run: 1,
            rooms: vec![0; clients],
            names: Vec::new(),
            heard: peers.clone(),
            peers,
            stride: 1,
        }
    }

    /// `clients` clients in rooms of `room_size`, each in `per_client`
    /// rooms, saying `run` messages in a row in each; `rooms`, if given,
    /// must be what that makes. Room `i` is called `{prefix}{i}`. All
    /// clients send (see [`with_senders`](Self::with_senders)).
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
        prefix: &str,
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
            names: (0..count).map(|i| format!("{prefix}{i}")).collect(),
            peers: Vec::new(),
            stride: 1,
            heard: Vec::new(),
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
        plan.heard = plan.peers.clone();
        Ok(plan)
    }

    /// The same rooms with only `senders` of the clients sending, every
    /// room the same number of them; the others only receive.
    ///
    /// # Errors
    ///
    /// [`Error::Options`] when the senders cannot be spread evenly.
    pub(crate) fn with_senders(mut self, senders: usize) -> Result<Plan, Error> {
        let (n, size) = (self.clients, self.room_size);
        let stride = n / senders.max(1);
        if senders == 0 || senders > n || stride * senders != n || size % stride != 0 {
            // Every d-th client for a divisor d of the room size.
            let fits: Vec<String> = (1..=size)
                .filter(|d| size % d == 0)
                .map(|d| (n / d).to_string())
                .collect();
            return Err(Error::Options(format!(
                "--senders {senders} does not spread evenly over the rooms: every room must \
                 get the same number of senders, so with {n} clients in rooms of {size} the \
                 senders must be every d-th client for a divisor d of {size}, that is one of \
                 {}",
                fits.join(", ")
            )));
        }
        self.stride = stride;
        self.heard = self
            .peers
            .iter()
            .map(|p| {
                p.iter()
                    .copied()
                    .filter(|&c| self.sends(c as usize))
                    .collect()
            })
            .collect();
        Ok(self)
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

    /// Who hears client `c`: everyone it shares a room with.
    pub(crate) fn peers(&self, c: usize) -> &[u32] {
        &self.peers[c]
    }

    /// Whom client `c` hears: the senders it shares a room with.
    pub(crate) fn heard(&self, c: usize) -> &[u32] {
        &self.heard[c]
    }

    /// Whether client `c` sends.
    pub(crate) fn sends(&self, c: usize) -> bool {
        c.is_multiple_of(self.stride)
    }

    /// How many clients send.
    pub(crate) fn senders(&self) -> usize {
        self.clients / self.stride
    }

    /// The senders, ascending.
    pub(crate) fn sender_ids(&self) -> Vec<u32> {
        (0..self.clients as u32).step_by(self.stride).collect()
    }

    /// Messages client `c` sends when senders send `messages` each.
    pub(crate) fn messages_of(&self, c: usize, messages: u32) -> u32 {
        if self.sends(c) { messages } else { 0 }
    }

    /// Where sender `s` is in [`heard(r)`](Self::heard), if `r` hears it.
    #[inline]
    pub(crate) fn heard_slot(&self, r: usize, s: usize) -> Option<usize> {
        slot(&self.heard[r], r, s, self.clients)
    }

    /// Where receiver `r` is in [`peers(s)`](Self::peers), if it hears `s`.
    pub(crate) fn peer_slot(&self, s: usize, r: usize) -> Option<usize> {
        slot(&self.peers[s], s, r, self.clients)
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

    /// Deliveries receiver `r` expects when every sender sends `messages`.
    pub(crate) fn expected(&self, r: usize, messages: u32) -> u64 {
        let (m, run) = (u64::from(messages), u64::from(self.run));
        self.heard[r]
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

/// Where `x` is in `list`, the ascending ids of some clients other than
/// `me` out of `clients`. Everyone else (one room of all, all sending) is
/// the common case at full speed: arithmetic there, a search otherwise.
#[inline]
fn slot(list: &[u32], me: usize, x: usize, clients: usize) -> Option<usize> {
    if x == me || x >= clients {
        return None;
    }
    if list.len() + 1 == clients {
        return Some(x - usize::from(x > me));
    }
    list.binary_search(&(x as u32)).ok()
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
        let mut senders = vec![0; plan.count()];
        for c in (0..n).filter(|&c| plan.sends(c)) {
            for r in plan.rooms_of(c) {
                senders[*r as usize] += 1;
            }
        }
        let each = s * plan.senders() / n;
        assert!(senders.iter().all(|&x| x == each), "{senders:?}");
        for c in 0..n {
            for (i, &p) in plan.peers(c).iter().enumerate() {
                assert_eq!(plan.peer_slot(c, p as usize), Some(i));
            }
            for (i, &p) in plan.heard(c).iter().enumerate() {
                assert!(plan.sends(p as usize));
                assert_eq!(plan.heard_slot(c, p as usize), Some(i));
            }
            assert_eq!(plan.heard_slot(c, c), None);
        }
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
                for snd in (0..n).filter(|&x| x != r && plan.sends(x)) {
                    if plan.hears(snd, r, q) {
                        want += 1;
                        assert!(plan.heard(r).contains(&(snd as u32)));
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
    fn senders_spread_evenly_over_every_layer() {
        let p = |n, size, k| Plan::rooms(n, None, size, k, 1, "t").unwrap();
        check(&p(1000, 100, 1).with_senders(100).unwrap());
        check(&p(1000, 10, 2).with_senders(200).unwrap());
        check(&p(60, 10, 3).with_senders(30).unwrap());
        check(&p(60, 10, 3).with_senders(60).unwrap());
        let plan = p(10_000, 100, 1).with_senders(1000).unwrap();
        assert_eq!(plan.senders(), 1000);
        assert_eq!(plan.sender_ids()[..3], [0, 10, 20]);
        assert_eq!(plan.heard(5).len(), 10);
        assert_eq!(plan.heard(10).len(), 9);
        assert_eq!(plan.peers(10).len(), 99);
        assert_eq!(plan.expected(5, 20), 200);
        assert_eq!(plan.messages_of(11, 20), 0);
        for bad in [0, 3, 300, 2000, 20_000] {
            let e = p(1000, 100, 1).with_senders(bad).unwrap_err().to_string();
            assert!(
                e.contains("the same number of senders") && e.contains("1000, 500"),
                "{e}"
            );
        }
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
