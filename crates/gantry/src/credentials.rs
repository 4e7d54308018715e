//! The credentials files Gantry writes on first start and the CLI reads: an AWS
//! shared-credentials file (`<data-dir>/credentials`, profile `gantry`, mode 0600) and the
//! agents' join token (`<data-dir>/agent-token`, mode 0600).
//!
//! The CLI finds credentials as the AWS CLI does (environment, then the shared credentials
//! file and profile), and falls back to the local data directory's file so that `gantry ps`
//! next to a `gantry dev` works with nothing exported.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const CREDENTIALS_FILE: &str = "credentials";
pub const TOKEN_FILE: &str = "agent-token";
pub const PROFILE: &str = "gantry";

/// An access key (and session token, for temporary credentials).
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Writes `contents` to `path` readable by its owner only (0600), replacing it atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn render_profile(profile: &str, access_key_id: &str, secret: &str) -> String {
    format!(
        "# Written by Gantry: the administrator's access key. Keep it secret.\n[{profile}]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret}\n"
    )
}

/// One profile of an AWS shared-credentials file (INI: `[profile]` then `key = value`).
pub fn read_profile(path: &Path, profile: &str) -> Option<Credentials> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_profile(&text, profile)
}

fn parse_profile(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Credentials for the CLI: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN`); else the profile `AWS_PROFILE` (or `default`) of
/// `AWS_SHARED_CREDENTIALS_FILE` (or `~/.aws/credentials`); else the `gantry` profile of
/// `<GANTRY_DATA_DIR or .gantry>/credentials`.
pub fn resolve() -> Option<Credentials> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
        });
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    if let Some(c) = file.and_then(|f| read_profile(&f, &profile)) {
        return Some(c);
    }
    let data_dir = env("GANTRY_DATA_DIR").unwrap_or_else(|| ".gantry".into());
    read_profile(&Path::new(&data_dir).join(CREDENTIALS_FILE), PROFILE)
}

/// The region requests are signed for: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
pub fn region() -> String {
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_as_the_aws_cli_reads_them() {
        let text = "[default]\naws_access_key_id=A\naws_secret_access_key=B\n\n# c\n[gantry]\naws_access_key_id = C\naws_secret_access_key = D\naws_session_token = E\n";
        let d = parse_profile(text, "default").expect("default");
        assert_eq!(
            (d.access_key_id.as_str(), d.secret_access_key.as_str()),
            ("A", "B")
        );
        assert!(d.session_token.is_none());
        let g = parse_profile(text, "gantry").expect("gantry");
        assert_eq!(g.session_token.as_deref(), Some("E"));
        assert!(parse_profile(text, "other").is_none());
    }

    #[test]
    fn written_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CREDENTIALS_FILE);
        write_private(&path, &render_profile(PROFILE, "AKIA1", "s3cr3t")).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = read_profile(&path, PROFILE).expect("profile");
        assert_eq!(c.access_key_id, "AKIA1");
    }
}
