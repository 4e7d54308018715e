//! How the agent (and the Gantry CLI) trust a control plane served over TLS: the system's
//! roots by default, a CA file (`--ca-cert`), or a pinned certificate fingerprint
//! (`--tls-fingerprint`, what `gantry server` prints for its self-signed certificate) — then
//! exactly that certificate is accepted, whatever its issuer or names. Several fingerprints
//! (comma-separated) pin several certificates, any of which is accepted: control-plane
//! replicas that each made their own self-signed certificate.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// What to trust when the server URL is `https://`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsTrust {
    /// SHA-256s of the server certificates (DER) to accept, hex with or without colons; an
    /// entry may itself be a comma-separated list. Empty: no pinning.
    pub fingerprints: Vec<String>,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// `AB:CD:…` or `abcd…` as 64 lowercase hex digits, if it is a SHA-256.
pub fn normalise_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

#[derive(Debug)]
struct Pinned {
    /// Normalised (see [`normalise_fingerprint`]); any of them is accepted.
    sha256: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = gantry_auth::sigv4::sha256_hex(end_entity.as_ref());
        if self
            .sha256
            .iter()
            .any(|pin| gantry_auth::sigv4::constant_time_eq(got.as_bytes(), pin.as_bytes()))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate (SHA-256 {got}) is not the pinned one ({}): check --tls-fingerprint against what `gantry server` printed",
                self.sha256.join(" or ")
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

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
        let sha256 = pins;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { sha256, provider }))
            .with_no_client_auth();
        builder = builder.use_preconfigured_tls(config);
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

    fn pinned(pins: &[String]) -> Pinned {
        Pinned {
            sha256: pins.to_vec(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    fn verify(verifier: &Pinned, cert: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(
            &CertificateDer::from(cert.to_vec()),
            &[],
            &ServerName::try_from("replica.example").unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn any_of_several_pinned_certificates_is_accepted() {
        // The verifier hashes the certificate's DER bytes: any bytes stand for a certificate.
        let (a, b, c) = (b"replica a", b"replica b", b"someone else");
        let pins = [a, b].map(|cert| gantry_auth::sigv4::sha256_hex(cert));
        let both = pinned(&pins);
        assert!(verify(&both, a).is_ok());
        assert!(verify(&both, b).is_ok());
        let refused = verify(&both, c).expect_err("an unpinned certificate");
        assert!(
            refused.to_string().contains("not the pinned one"),
            "{refused}"
        );
        assert!(verify(&pinned(&pins[..1]), b).is_err(), "only a pinned");
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
