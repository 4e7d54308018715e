//! The machine-wide map from an endpoint id to the agent that serves it.
//!
//! Every Gantry agent of this user on this machine serves its own tasks' endpoints on a
//! loopback port of its own, and only one process can listen on `169.254.170.2:80`: the one
//! that does (the front, [`super::front`]) looks each request's id up here. One file per id,
//! `<dir>/<id>`, holding the owner's loopback address (`127.0.0.1:PORT`); written when a task's
//! endpoints open and removed when the task is cleaned up. The directory is private (mode
//! 0700): an id is what a container presents to get its task's credentials, so other users
//! must not list them. Files hold no secret themselves.
//!
//! Where: `/run/gantry/task-endpoints` (root, or anyone who may write there), else
//! `$XDG_RUNTIME_DIR/gantry/task-endpoints`, else `<temp dir>/gantry-<uid>/task-endpoints`.
//! Every process tries them in the same order, so the processes of one user agree.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first place tried: shared by every process of a root-run machine.
pub const SYSTEM_DIR: &str = "/run/gantry/task-endpoints";

/// An endpoint id: 32 lowercase hex digits (128 bits).
pub fn is_endpoint_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The registry directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    dir: PathBuf,
}

/// The effective user id of this process (the owner of `/proc/self`).
fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

impl Registry {
    /// The registry every process of this user on this machine uses (see the module doc).
    pub fn system() -> io::Result<Registry> {
        let uid = own_uid();
        let mut candidates = vec![PathBuf::from(SYSTEM_DIR)];
        if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            candidates.push(PathBuf::from(x).join("gantry").join("task-endpoints"));
        }
        candidates.push(
            std::env::temp_dir()
                .join(format!("gantry-{}", uid.unwrap_or(0)))
                .join("task-endpoints"),
        );
        let mut last = io::Error::other("no place for the task endpoints' registry");
        for dir in candidates {
            match Registry::open(&dir) {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The registry in `dir`, created (mode 0700) when missing. Refused when the directory,
    /// or its parent, belongs to another user: whoever owns them could read or replace the
    /// entries.
    pub fn open(dir: &Path) -> io::Result<Registry> {
        let refuse = |why: &str| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} {why}", dir.display()),
            ))
        };
        // Without our own uid nothing below can be checked: refuse rather than trust.
        let Some(uid) = own_uid() else {
            return refuse("cannot be checked (no /proc/self)");
        };
        std::fs::create_dir_all(dir)?;
        // Neither the directory nor its parent may be a symbolic link (someone else's link in
        // a shared directory such as /tmp could point them anywhere), and both must be ours
        // (the parent may be root's, as /run is). Checked before anything is changed.
        let not_link = |p: &Path| {
            std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink() && m.is_dir())
        };
        let owned_by =
            |p: &Path, who: u32| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == who);
        let parent_ok = dir
            .parent()
            .is_none_or(|p| not_link(p) && (owned_by(p, uid) || owned_by(p, 0)));
        if !not_link(dir) || !parent_ok {
            return refuse("or its parent is a symbolic link or not a directory");
        }
        if !owned_by(dir, uid) {
            return refuse("belongs to another user");
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        // Writable? (A read-only /run answers here rather than at the first task.)
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        std::fs::write(&probe, b"")?;
        let _ = std::fs::remove_file(&probe);
        Ok(Registry {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        // Only ids name files: nothing a request carries can walk out of the directory.
        is_endpoint_id(id).then(|| self.dir.join(id))
    }

    /// Says that `owner` serves `id` (replacing any earlier owner: an agent that restarted
    /// serves on a new port).
    pub fn register(&self, id: &str, owner: SocketAddr) -> io::Result<()> {
        let Some(path) = self.path(id) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an endpoint id",
            ));
        };
        let tmp = self.dir.join(format!(".{id}.{}.tmp", std::process::id()));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(owner.to_string().as_bytes())?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Forgets `id` (nothing happens if it is not registered).
    pub fn unregister(&self, id: &str) {
        if let Some(path) = self.path(id) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(registry = %self.dir.display(), "cannot remove a task endpoint's registration: {}", e.kind())
                }
            }
        }
    }

    /// Who serves `id`, if anyone registered it.
    pub fn lookup(&self, id: &str) -> Option<SocketAddr> {
        let path = self.path(id)?;
        let text = std::fs::read_to_string(path).ok()?;
        text.trim().parse().ok()
    }

    /// Removes the entries whose owner no longer listens (an agent killed before it could
    /// clean up): a refused loopback connection means nobody is there. An entry of an agent
    /// that listens but no longer knows the id is harmless (it answers "not found").
    pub async fn sweep_dead(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut owners: std::collections::HashMap<SocketAddr, bool> = Default::default();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_endpoint_id(&name) {
                continue;
            }
            let Some(owner) = self.lookup(&name) else {
                continue;
            };
            let alive = match owners.get(&owner) {
                Some(a) => *a,
                None => {
                    let a = !matches!(
                        tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::net::TcpStream::connect(owner)
                        )
                        .await,
                        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused
                    );
                    owners.insert(owner, a);
                    a
                }
            };
            if !alive {
                self.unregister(&name);
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        assert!(is_endpoint_id(ID));
        assert!(!is_endpoint_id(&ID.to_uppercase()));
        assert!(!is_endpoint_id(&ID[1..]));
        assert!(!is_endpoint_id("../../../../etc/passwd00000000000"));
        assert!(!is_endpoint_id(""));
    }

    #[test]
    fn registers_looks_up_and_forgets_in_a_private_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("gantry").join("task-endpoints");
        let r = Registry::open(&dir).expect("registry");
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(r.lookup(ID), None);
        let a: SocketAddr = "127.0.0.1:4321".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:4322".parse().expect("addr");
        r.register(ID, a).expect("register");
        assert_eq!(r.lookup(ID), Some(a));
        let file_mode = std::fs::metadata(dir.join(ID))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
        // A restarted owner takes the id over.
        r.register(ID, b).expect("register again");
        assert_eq!(r.lookup(ID), Some(b));
        // Anything but an id is refused and never read.
        assert!(r.register("../x", a).is_err());
        assert_eq!(r.lookup("../task-endpoints/x"), None);
        r.unregister(ID);
        assert_eq!(r.lookup(ID), None);
        r.unregister(ID);
        // Only the registrations remain (no temporary files, no probe).
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0);
    }

    #[tokio::test]
    async fn sweeping_removes_entries_whose_owner_is_gone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = Registry::open(tmp.path()).expect("registry");
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let other = "fedcba9876543210fedcba9876543210";
        r.register(ID, live.local_addr().expect("addr"))
            .expect("register");
        r.register(other, dead).expect("register");
        assert_eq!(r.sweep_dead().await, 1);
        assert!(r.lookup(ID).is_some());
        assert_eq!(r.lookup(other), None);
    }
}
