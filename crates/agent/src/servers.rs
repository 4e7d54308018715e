//! The control-plane replicas an agent knows (`--server URL,URL,...`) and the one it uses.
//!
//! The agent talks to ONE server at a time for everything (registration, the task channel,
//! reports, log shipping, task secrets and role credentials), so what it sends arrives in the
//! order it was sent. When the current server cannot be reached (refused, reset, timed out, a
//! TLS failure, or a proxy's 502/503/504: [`crate::api_client::ApiError::is_unreachable`]),
//! every later call moves to the next server in the list; an answer (a 4xx, an ECS error) is
//! the server's word and moves nothing. Agents start at different servers (a hash of the host
//! name and the data directory, [`agent_seed`]), so a fleet spreads over the replicas and a
//! restarted agent starts where it did before.
//!
//! Moving is not announced until a server answers: then one line says which server was left,
//! why, and which one answers now ([`Failover`]), however many dead servers were tried between.

use std::path::Path;
use std::sync::Mutex;

/// Checks one control-plane URL and returns it without a trailing slash.
pub fn parse_server_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let url = reqwest::Url::parse(s).map_err(|e| {
        format!("'{s}' is not a URL ({e}): give the control plane as http://HOST:PORT or https://HOST:PORT")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "'{s}' is not an http:// or https:// URL: give the control plane as http://HOST:PORT or https://HOST:PORT"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{s}' names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{s}' has a query or fragment: give only the control plane's address"
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// The servers `items` name, each possibly a comma-separated list: checked, in order, each
/// once.
pub fn parse_server_list(items: &[String]) -> Result<Vec<String>, String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in items.iter().flat_map(|i| i.split(',')) {
        if piece.trim().is_empty() {
            continue;
        }
        let url = parse_server_url(piece)?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    if urls.is_empty() {
        return Err(
            "no control plane URL given: pass --server http://HOST:PORT (several replicas comma-separated)"
                .into(),
        );
    }
    Ok(urls)
}

/// What spreads agents over the servers: the host's name and the agent's data directory, so
/// two agents of one host differ, and a restarted agent starts where it did before.
pub fn agent_seed(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{}\n{}", host.trim(), dir.display())
}

/// The server an agent with `seed` starts at, out of `count` (FNV-1a: stable across builds
/// and platforms, unlike std's hasher).
pub fn start_index(seed: &str, count: usize) -> usize {
    if count == 0 {
        return 0;
    }
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % count as u64) as usize
}

/// The agent moved from one server to another, announced when the new one first answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub from: String,
    pub reason: String,
    pub to: String,
}

impl std::fmt::Display for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(
                f,
                "control plane {} was unreachable ({}); it answers again, using it",
                self.from, self.reason
            )
        } else {
            write!(
                f,
                "control plane {} unreachable ({}); using {}",
                self.from, self.reason, self.to
            )
        }
    }
}

/// The servers and which one is current, shared by every clone of the agent's client.
#[derive(Debug)]
pub struct Servers {
    urls: Vec<String>,
    state: Mutex<Rotation>,
}

#[derive(Debug)]
struct Rotation {
    current: usize,
    /// The server left last while it was in use, and why; taken when another answers.
    left: Option<(String, String)>,
}

impl Servers {
    /// `urls` (checked, see [`parse_server_list`]), starting at `start` (modulo their number).
    pub fn new(urls: Vec<String>, start: usize) -> Result<Servers, String> {
        if urls.is_empty() {
            return Err("no control plane URL given".into());
        }
        let current = start % urls.len();
        Ok(Servers {
            urls,
            state: Mutex::new(Rotation {
                current,
                left: None,
            }),
        })
    }

    /// The servers `items` name, starting where `seed` says.
    pub fn from_list(items: &[String], seed: &str) -> Result<Servers, String> {
        let urls = parse_server_list(items)?;
        let start = start_index(seed, urls.len());
        Servers::new(urls, start)
    }

    fn rotation(&self) -> std::sync::MutexGuard<'_, Rotation> {
        // Nothing panics while holding it; a poisoned lock still holds a usable index.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The server to use now: its index (to report it unreachable) and URL.
    pub fn current(&self) -> (usize, String) {
        let i = self.rotation().current;
        (i, self.urls[i].clone())
    }

    /// Server `index` could not be reached: later calls use the next one. Only the first of
    /// the calls that saw the same server fail moves on (the others find it current no more),
    /// so concurrent failures skip no server.
    pub fn unreachable(&self, index: usize, reason: &str) {
        if self.urls.len() < 2 {
            return;
        }
        let mut r = self.rotation();
        if r.current != index {
            return;
        }
        if r.left.is_none() {
            r.left = Some((self.urls[index].clone(), reason.to_string()));
        }
        r.current = (index + 1) % self.urls.len();
        tracing::debug!(
            "control plane {} unreachable ({reason}); trying {}",
            self.urls[index],
            self.urls[r.current]
        );
    }

    /// Server `index` answered: the failover that led to it, if this is the first answer
    /// since the agent left the server it used before.
    pub fn answered(&self, index: usize) -> Option<Failover> {
        let mut r = self.rotation();
        if r.current != index {
            return None;
        }
        let (from, reason) = r.left.take()?;
        Some(Failover {
            from,
            reason,
            to: self.urls[index].clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn server_lists_are_split_checked_and_deduplicated() {
        assert_eq!(
            parse_server_list(&list(&[
                "http://a:1/, https://b:2",
                "http://c:3",
                "http://a:1"
            ])),
            Ok(list(&["http://a:1", "https://b:2", "http://c:3"]))
        );
        assert_eq!(
            parse_server_list(&list(&["http://127.0.0.1:4566"])),
            Ok(list(&["http://127.0.0.1:4566"]))
        );
        assert!(parse_server_list(&list(&["http://a:1,,"])).is_ok());
        for bad in [
            "",
            ",",
            "a:1",
            "ftp://a",
            "http://",
            "http://a:1?x=1",
            "http://a,b c",
        ] {
            assert!(parse_server_list(&list(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn start_is_stable_and_spreads() {
        assert_eq!(start_index("seed", 3), start_index("seed", 3));
        assert_eq!(start_index("anything", 1), 0);
        assert_eq!(start_index("anything", 0), 0);
        let mut counts = [0usize; 3];
        for i in 0..300 {
            counts[start_index(&format!("host-{i}\n/var/lib/gantry"), 3)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 50), "{counts:?}");
        assert_ne!(
            agent_seed(Path::new("/a")),
            agent_seed(Path::new("/b")),
            "two agents of one host differ"
        );
        let servers = Servers::new(list(&["http://a", "http://b", "http://c"]), 4).unwrap();
        assert_eq!(servers.current(), (1, "http://b".to_string()));
    }

    #[test]
    fn unreachable_moves_to_the_next_and_wraps() {
        let s = Servers::new(list(&["http://a", "http://b", "http://c"]), 1).unwrap();
        s.unreachable(1, "refused");
        assert_eq!(s.current().1, "http://c");
        s.unreachable(2, "refused");
        assert_eq!(s.current().1, "http://a");
        s.unreachable(0, "refused");
        assert_eq!(s.current().1, "http://b");
    }

    #[test]
    fn concurrent_failures_of_one_server_move_once() {
        let s = Servers::new(list(&["http://a", "http://b", "http://c"]), 0).unwrap();
        let (seen, _) = s.current();
        // Three calls in flight on `a` all fail: only the first moves the agent on.
        s.unreachable(seen, "reset");
        s.unreachable(seen, "reset");
        s.unreachable(seen, "reset");
        assert_eq!(s.current().1, "http://b");
    }

    #[test]
    fn a_failover_is_announced_once_when_a_server_answers() {
        let s = Servers::new(list(&["http://a", "http://b", "http://c"]), 0).unwrap();
        assert_eq!(s.answered(0), None, "no failover yet");
        s.unreachable(0, "connection refused");
        // `b` is down too: still nothing to announce until someone answers.
        s.unreachable(1, "timed out");
        assert_eq!(s.answered(1), None, "b is not current any more");
        let f = s.answered(2).expect("c answered");
        assert_eq!(
            f.to_string(),
            "control plane http://a unreachable (connection refused); using http://c"
        );
        assert_eq!(s.answered(2), None, "announced once");
    }

    #[test]
    fn coming_back_to_the_same_server_says_so() {
        let s = Servers::new(list(&["http://a", "http://b"]), 0).unwrap();
        s.unreachable(0, "reset");
        s.unreachable(1, "refused");
        let f = s.answered(0).expect("a answered");
        assert_eq!(f.from, f.to);
        assert!(f.to_string().contains("answers again"), "{f}");
    }

    #[test]
    fn a_single_server_never_moves() {
        let s = Servers::new(list(&["http://a"]), 0).unwrap();
        s.unreachable(0, "refused");
        assert_eq!(s.current(), (0, "http://a".to_string()));
        assert_eq!(s.answered(0), None, "nothing to announce");
    }
}
