//! Which groups read committed records: lag is measured against the last stable offset for
//! them and against the high watermark for the others. A group says nothing of its isolation
//! level (it is a consumer setting, sent only with each Fetch), so the coordinator remembers,
//! per client (client id and host), the isolation level of its latest Fetch, and a group reads
//! committed when every member's client fetched read_committed last; a group without members
//! (its partitions assigned by the application) by the client that committed its offsets
//! last. A client id shared by consumers of one host with different settings counts as its
//! latest fetch says.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Most clients (and groups' committers) remembered; past it, the tenth seen longest ago is
/// forgotten.
const MAX_CLIENTS: usize = 10_000;

/// The isolation level of a group's reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

impl Isolation {
    /// Kafka's name (`isolation.level`).
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// A client: a hash of its id (keyed per process: no allocation on the Fetch path, and no
/// collision a client could aim for) and its host.
type Client = (u64, IpAddr);

/// The isolation level of each client's latest Fetch.
#[derive(Debug, Default)]
pub(super) struct Fetchers {
    /// (client id, host) → (read committed, when: a counter of notes).
    seen: Mutex<HashMap<Client, (bool, u64)>>,
    /// Group → (client id, host) of its latest OffsetCommit, and when.
    committers: Mutex<HashMap<String, (Client, u64)>>,
    notes: std::sync::atomic::AtomicU64,
    ids: std::collections::hash_map::RandomState,
}

/// Inserts `v` under `k`; a full `map` first forgets the tenth of its entries noted longest
/// ago (one pass for many inserts: a client cycling through ids costs no scan per fetch).
fn insert_bounded<K: std::hash::Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V>,
    k: K,
    v: V,
    at: impl Fn(&V) -> u64,
) {
    if !map.contains_key(&k) && map.len() >= MAX_CLIENTS {
        let mut ats: Vec<u64> = map.values().map(&at).collect();
        let nth = ats.len() / 10;
        let (_, cut, _) = ats.select_nth_unstable(nth);
        let cut = *cut;
        map.retain(|_, v| at(v) > cut);
    }
    map.insert(k, v);
}

impl Fetchers {
    fn client(&self, client_id: &str, host: IpAddr) -> Client {
        use std::hash::BuildHasher;
        (self.ids.hash_one(client_id), host)
    }

    fn tick(&self) -> u64 {
        self.notes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// `client_id` at `host` fetched read_committed or not.
    pub(super) fn note(&self, client_id: &str, host: IpAddr, committed: bool) {
        let at = self.tick();
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let client = self.client(client_id, host);
        if let Some(e) = seen.get_mut(&client) {
            *e = (committed, at);
            return;
        }
        insert_bounded(&mut seen, client, (committed, at), |v| v.1);
    }

    /// `client_id` at `host` committed offsets for `group`.
    pub(super) fn note_commit(&self, group: &str, client_id: &str, host: IpAddr) {
        let at = self.tick();
        let Ok(mut c) = self.committers.lock() else {
            return;
        };
        let client = self.client(client_id, host);
        if let Some(e) = c.get_mut(group) {
            *e = (client, at);
            return;
        }
        insert_bounded(&mut c, group.to_string(), (client, at), |v| v.1);
    }

    /// The isolation level of the client that committed for `group` last.
    pub(super) fn of_committer(&self, group: &str) -> Option<Isolation> {
        let client = self.committers.lock().ok()?.get(group)?.0;
        let seen = self.seen.lock().ok()?;
        seen.get(&client).map(|(c, _)| {
            if *c {
                Isolation::ReadCommitted
            } else {
                Isolation::ReadUncommitted
            }
        })
    }

    /// The isolation level of members (client id, client host as Kafka shows it, `/ip`):
    /// read_committed when every one fetched so last, read_uncommitted when one did not, None
    /// when none has fetched (or there are no members).
    pub(super) fn of<'a>(
        &self,
        members: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<Isolation> {
        let seen = self.seen.lock().ok()?;
        let mut out = None;
        for (client_id, host) in members {
            let Ok(ip) = host.trim_start_matches('/').parse::<IpAddr>() else {
                continue;
            };
            match seen.get(&self.client(client_id, ip)) {
                Some((false, _)) => return Some(Isolation::ReadUncommitted),
                Some((true, _)) => out = Some(Isolation::ReadCommitted),
                None => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_reads_committed_when_every_member_fetched_so_last() {
        let f = Fetchers::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(f.of([("a", "/127.0.0.1")]), None);
        f.note("a", ip, true);
        f.note("b", ip, true);
        assert_eq!(
            f.of([("a", "/127.0.0.1"), ("b", "/127.0.0.1")]),
            Some(Isolation::ReadCommitted)
        );
        f.note("b", ip, false);
        assert_eq!(
            f.of([("a", "/127.0.0.1"), ("b", "/127.0.0.1")]),
            Some(Isolation::ReadUncommitted)
        );
        // Another host's client of the same id is another client.
        assert_eq!(f.of([("a", "/10.0.0.1")]), None);
    }

    #[test]
    fn the_clients_seen_longest_ago_are_forgotten_past_the_bound() {
        let f = Fetchers::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..MAX_CLIENTS {
            f.note(&format!("c{i}"), ip, true);
        }
        f.note("c0", ip, true);
        f.note("new", ip, true);
        // The oldest tenth went (c1 ...), c0 was seen again and stays.
        assert_eq!(f.seen.lock().unwrap().len(), MAX_CLIENTS - MAX_CLIENTS / 10);
        f.note_commit("g", "c0", ip);
        assert_eq!(f.of_committer("g"), Some(Isolation::ReadCommitted));
        assert_eq!(f.of_committer("h"), None);
        assert!(f.of([("c1", "/127.0.0.1")]).is_none(), "c1 was the oldest");
        assert!(f.of([("c0", "/127.0.0.1")]).is_some());
    }
}
