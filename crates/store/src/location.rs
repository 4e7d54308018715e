//! Where the store is: `--store sqlite:PATH` or `--store etcd://HOST:PORT,HOST:PORT[/NAMESPACE]`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::{EtcdConfig, EtcdStore, KvStore, SqliteStore, StoreResult};

/// A store as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// One SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// An etcd cluster: its members and the namespace Gantry's keys live under.
    Etcd(EtcdConfig),
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(
                    "sqlite: needs a file path, as in sqlite:/var/lib/gantry/state.db".into(),
                );
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("etcd://") {
            let (hosts, namespace) = match rest.split_once('/') {
                Some((hosts, ns)) if !ns.trim_matches('/').is_empty() => {
                    (hosts, format!("{}/", ns.trim_matches('/')))
                }
                Some((hosts, _)) => (hosts, EtcdConfig::DEFAULT_NAMESPACE.to_string()),
                None => (rest, EtcdConfig::DEFAULT_NAMESPACE.to_string()),
            };
            let mut endpoints = Vec::new();
            for host in hosts.split(',') {
                let host = host.trim();
                let port_ok = host
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(format!(
                        "{host:?} is not HOST:PORT; name each etcd member's client address, as in etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379"
                    ));
                }
                endpoints.push(host.to_string());
            }
            let mut config = EtcdConfig::new(endpoints);
            config.namespace = namespace;
            return Ok(StoreLocation::Etcd(config));
        }
        Err(format!(
            "{s:?} is not a store: use sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]"
        ))
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreLocation::Etcd(config) => write!(
                f,
                "etcd://{}/{}",
                config.endpoints.join(","),
                config.namespace.trim_end_matches('/')
            ),
        }
    }
}

/// Opens the store at `location`; an etcd cluster must answer (within its request timeout).
pub async fn open(location: &StoreLocation) -> StoreResult<Arc<dyn KvStore>> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        StoreLocation::Etcd(config) => {
            let store = EtcdStore::connect(config).await?;
            store.revision().await?;
            Arc::new(store)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_says_what_is_wrong() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreLocation>(),
            Ok(StoreLocation::Sqlite("/tmp/x.db".into()))
        );
        let StoreLocation::Etcd(c) = "etcd://127.0.0.1:2379,10.0.0.2:2379"
            .parse::<StoreLocation>()
            .unwrap()
        else {
            panic!("etcd")
        };
        assert_eq!(c.endpoints, ["127.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(c.namespace, "gantry/");
        let StoreLocation::Etcd(c) = "etcd://h:1/prod/eu".parse::<StoreLocation>().unwrap() else {
            panic!("etcd")
        };
        assert_eq!(c.namespace, "prod/eu/");
        assert_eq!(StoreLocation::Etcd(c).to_string(), "etcd://h:1/prod/eu");
        assert!("etcd://h"
            .parse::<StoreLocation>()
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!("etcd://h:99999".parse::<StoreLocation>().is_err());
        assert!("postgres://x"
            .parse::<StoreLocation>()
            .unwrap_err()
            .contains("sqlite:PATH"));
        assert!("sqlite:".parse::<StoreLocation>().is_err());
    }
}
