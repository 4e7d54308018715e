//! Trusting exactly the certificates whose SHA-256 fingerprints are pinned, whatever their
//! issuer or names: what `gantry server` prints for its self-signed certificate, which agents,
//! the Gantry CLI and other control-plane replicas pin.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

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
        let got = crate::sigv4::sha256_hex(end_entity.as_ref());
        if self
            .sha256
            .iter()
            .any(|pin| crate::sigv4::constant_time_eq(got.as_bytes(), pin.as_bytes()))
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

/// A TLS client configuration that accepts exactly the certificates of `pins` (normalised
/// fingerprints, see [`normalise_fingerprint`]).
pub fn client_config(pins: Vec<String>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha256: pins,
                provider,
            }))
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let pins = [a, b].map(|cert| crate::sigv4::sha256_hex(cert));
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
}
