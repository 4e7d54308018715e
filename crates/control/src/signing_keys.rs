//! SigV4 signing keys derived today, by access key: what `auth.rs` verifies with. Below the
//! plane (which holds one) and `auth.rs` (which uses it), so neither imports the other for it.

use crate::state::iam::AccessKeyRecord;
use gantry_auth::sigv4;
use std::collections::HashMap;

/// SigV4 signing keys by access key, for the day, region and service they were derived for:
/// the HMAC chain that derives one is a fifth of a verification and changes once a day.
/// Bounded (cleared when full); a key's secret never changes, and a deleted key is refused
/// before its entry is looked at.
#[derive(Default)]
pub struct SigningKeys {
    keys: std::sync::Mutex<HashMap<String, (String, [u8; 32])>>,
}

const SIGNING_KEYS_MAX: usize = 16_384;

impl SigningKeys {
    pub fn get(&self, key: &AccessKeyRecord, claim: &sigv4::Claim) -> [u8; 32] {
        let scope = format!("{}/{}/{}", claim.scope_date, claim.region, claim.service);
        if let Ok(keys) = self.keys.lock() {
            if let Some((s, k)) = keys.get(&key.access_key_id) {
                if *s == scope {
                    return *k;
                }
            }
        }
        let derived = sigv4::signing_key(
            &key.secret_access_key,
            &claim.scope_date,
            &claim.region,
            &claim.service,
        );
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= SIGNING_KEYS_MAX {
                keys.clear();
            }
            keys.insert(key.access_key_id.clone(), (scope, derived));
        }
        derived
    }
}
