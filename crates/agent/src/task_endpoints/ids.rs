//! Endpoint ids: 128 bits that a container presents in its endpoint's path, derived from a
//! secret key of the agent's (kept in its data directory, mode 0600) and the task ARN (and
//! container name): unguessable without the key, and the same after an agent restart, so a
//! restarted agent serves its adopted containers at the URIs already in their environment
//! without reading their environment back from Docker.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The key's file in the agent's data directory.
pub const KEY_FILE: &str = "task-endpoints.key";

/// The agent's id key. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdKey([u8; 32]);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl IdKey {
    /// A new random key.
    pub fn random() -> IdKey {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        IdKey(k)
    }

    /// The key kept in `data_dir` ([`KEY_FILE`]), created on first use.
    pub fn load_or_create(data_dir: &Path) -> io::Result<IdKey> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return unhex(&text).map(IdKey).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is not 64 hex digits; remove it to start over (containers running now lose their endpoints)",
                            path.display()
                        ),
                    )
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = IdKey::random();
        let tmp = data_dir.join(format!(".{KEY_FILE}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(hex(&key.0).as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(key)
    }

    fn derive(&self, parts: &[&str]) -> String {
        let mut input: Vec<&[u8]> = vec![b"gantry-task-endpoint-v1"];
        for p in parts {
            input.push(b"\0");
            input.push(p.as_bytes());
        }
        let mac = gantry_auth::sigv4::hmac_sha256(&self.0, &input);
        hex(&mac[..16])
    }

    /// The id of a task's credentials endpoint.
    pub fn credentials_id(&self, task_arn: &str) -> String {
        self.derive(&["credentials", task_arn])
    }

    /// The id of one container's metadata endpoint.
    pub fn metadata_id(&self, task_arn: &str, container: &str) -> String {
        self.derive(&["metadata", task_arn, container])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task_endpoints::registry::is_endpoint_id;

    #[test]
    fn ids_are_stable_per_key_and_distinct_per_task_and_container() {
        let k = IdKey::random();
        let t = "arn:aws:ecs:us-east-1:000000000000:task/c/0123";
        let id = k.credentials_id(t);
        assert!(is_endpoint_id(&id), "{id}");
        assert_eq!(id, k.credentials_id(t));
        assert_ne!(
            id,
            k.credentials_id("arn:aws:ecs:us-east-1:000000000000:task/c/0124")
        );
        assert_ne!(id, k.metadata_id(t, "app"));
        assert_ne!(k.metadata_id(t, "app"), k.metadata_id(t, "sidecar"));
        assert_ne!(id, IdKey::random().credentials_id(t), "another agent's key");
        assert_eq!(format!("{k:?}"), "IdKey(..)");
    }

    #[test]
    fn the_key_survives_a_restart_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = IdKey::load_or_create(dir.path()).expect("create");
        let b = IdKey::load_or_create(dir.path()).expect("load");
        assert_eq!(a, b);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), "not hex").expect("write");
        assert!(IdKey::load_or_create(dir.path()).is_err());
    }
}
