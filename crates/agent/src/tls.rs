//! How the agent (and the Gantry CLI) trust a control plane served over TLS: the system's
//! roots by default, a CA file (`--ca-cert`), or a pinned certificate fingerprint
//! (`--tls-fingerprint`, what `gantry server` prints for its self-signed certificate) — then
//! exactly that certificate is accepted, whatever its issuer or names. Several fingerprints
//! (comma-separated) pin several certificates, any of which is accepted: control-plane
//! replicas that each made their own self-signed certificate.

use std::path::PathBuf;

/// What to trust when the server URL is `https://`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsTrust {
    /// SHA-256s of the server certificates (DER) to accept, hex with or without colons; an
    /// entry may itself be a comma-separated list. Empty: no pinning.
    pub fingerprints: Vec<String>,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

pub use gantry_auth::pinning::normalise_fingerprint;

/// Applies `trust` to an HTTP client being built.
pub fn configure(
    builder: reqwest::ClientBuilder,
    trust: &TlsTrust,
) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = builder;
    let pins = trust
        .fingerprints
        .iter()
        .flat_map(|f| f.split(','))
        .filter(|f| !f.trim().is_empty())
        .map(|fp| {
            normalise_fingerprint(fp).ok_or_else(|| {
                format!("'{fp}' is not a SHA-256 fingerprint (64 hex digits, colons allowed; several comma-separated)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !pins.is_empty() {
        builder = builder.use_preconfigured_tls(gantry_auth::pinning::client_config(pins)?);
    } else if let Some(path) = &trust.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_in_either_form() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(normalise_fingerprint(&colons), Some("ab".repeat(32)));
        assert_eq!(
            normalise_fingerprint(&"0f".repeat(32)),
            Some("0f".repeat(32))
        );
        assert_eq!(normalise_fingerprint("abc"), None);
        assert_eq!(normalise_fingerprint(&"zz".repeat(32)), None);
        assert!(configure(
            reqwest::Client::builder(),
            &TlsTrust {
                fingerprints: vec!["nope".into()],
                ca_file: None
            }
        )
        .is_err());
        let one_bad_of_two = format!("{},nope", "ab".repeat(32));
        assert!(configure(
            reqwest::Client::builder(),
            &TlsTrust {
                fingerprints: vec![one_bad_of_two],
                ca_file: None
            }
        )
        .is_err());
    }

    #[test]
    fn comma_separated_pins_build_a_client() {
        let list = format!("{},{}", "ab".repeat(32), "CD:".repeat(31) + "CD");
        assert!(configure(
            reqwest::Client::builder(),
            &TlsTrust {
                fingerprints: vec![list],
                ca_file: None
            }
        )
        .is_ok());
    }
}
