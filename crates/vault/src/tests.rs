use super::*;

fn keyring_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("keys").join("master.key")
}

#[test]
fn seals_and_opens_with_the_same_record_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open_or_create(&keyring_path(&dir)).unwrap();
    let sealed = vault.seal(b"hunter2", b"secret-a/v1").unwrap();
    assert!(!sealed.ciphertext.contains("hunter2"));
    assert_eq!(
        vault.open(&sealed, b"secret-a/v1").unwrap().as_str(),
        Some("hunter2")
    );
    // Moved to another record, the ciphertext does not open.
    assert_eq!(
        vault.open(&sealed, b"secret-b/v1").unwrap_err(),
        VaultError::Corrupt
    );
    // Two seals of one value differ (fresh data key and nonce).
    let again = vault.seal(b"hunter2", b"secret-a/v1").unwrap();
    assert_ne!(again.ciphertext, sealed.ciphertext);
    assert_ne!(again.data_key, sealed.data_key);
}

#[test]
fn tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open_or_create(&keyring_path(&dir)).unwrap();
    let mut sealed = vault.seal(b"value", b"r").unwrap();
    let mut raw = B64.decode(&sealed.ciphertext).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    sealed.ciphertext = B64.encode(raw);
    assert_eq!(vault.open(&sealed, b"r").unwrap_err(), VaultError::Corrupt);
}

#[test]
fn the_keyring_file_is_private_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = keyring_path(&dir);
    let vault = Vault::open_or_create(&path).unwrap();
    let sealed = vault.seal(b"persisted", b"r").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let reopened = Vault::open_or_create(&path).unwrap();
    assert_eq!(reopened.primary(), vault.primary());
    assert_eq!(
        reopened.open(&sealed, b"r").unwrap().as_bytes(),
        b"persisted"
    );
}

#[cfg(unix)]
#[test]
fn a_readable_keyring_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = keyring_path(&dir);
    Vault::open_or_create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Vault::open_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn rotation_rewraps_without_touching_values_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = keyring_path(&dir);
    let vault = Vault::open_or_create(&path).unwrap();
    let old_id = vault.primary();
    let sealed = vault.seal(b"rotate me", b"r").unwrap();

    let new_id = vault.begin_rotation().unwrap();
    assert_ne!(new_id, old_id);
    // Mid-rotation both keys open, and the file holds both (a restart now loses nothing).
    assert_eq!(vault.open(&sealed, b"r").unwrap().as_bytes(), b"rotate me");
    assert_eq!(Vault::open_or_create(&path).unwrap().status().keys.len(), 2);
    assert!(vault.needs_rewrap(&sealed));
    let rewrapped = vault.rewrap(&sealed).unwrap();
    assert_eq!(rewrapped.master_key, new_id);
    assert_eq!(rewrapped.ciphertext, sealed.ciphertext);
    assert!(!vault.needs_rewrap(&rewrapped));

    assert_eq!(vault.finish_rotation().unwrap(), vec![old_id.clone()]);
    assert_eq!(
        vault.open(&rewrapped, b"r").unwrap().as_bytes(),
        b"rotate me"
    );
    assert_eq!(
        vault.open(&sealed, b"r").unwrap_err(),
        VaultError::UnknownMasterKey(old_id)
    );
    let reopened = Vault::open_or_create(&path).unwrap();
    assert_eq!(reopened.status().keys, vec![new_id]);
    assert_eq!(
        reopened.open(&rewrapped, b"r").unwrap().as_bytes(),
        b"rotate me"
    );
}

#[test]
fn keys_from_the_environment_open_with_any_and_seal_with_the_first() {
    let old = B64.encode([7u8; 32]);
    let new = B64.encode([9u8; 32]);
    let before = Vault::from_env(&old).unwrap();
    let sealed = before.seal(b"env", b"r").unwrap();
    let after = Vault::from_env(&format!("{new},{old}")).unwrap();
    assert_eq!(after.open(&sealed, b"r").unwrap().as_bytes(), b"env");
    assert!(after.needs_rewrap(&sealed));
    let rewrapped = after.rewrap(&sealed).unwrap();
    assert_eq!(after.begin_rotation().unwrap(), after.primary());
    assert_eq!(
        after.finish_rotation().unwrap(),
        vec![sealed.master_key.clone()]
    );
    assert_eq!(after.open(&rewrapped, b"r").unwrap().as_bytes(), b"env");
    assert!(Vault::from_env("not base64!").is_err());
    assert!(Vault::from_env(&B64.encode([1u8; 16])).is_err());
}

#[test]
fn debug_output_never_shows_a_value() {
    let vault = Vault::from_env(&B64.encode([3u8; 32])).unwrap();
    let sealed = vault.seal(b"topsecret", b"r").unwrap();
    let opened = vault.open(&sealed, b"r").unwrap();
    assert!(!format!("{opened:?} {sealed:?} {vault:?}").contains("topsecret"));
}
