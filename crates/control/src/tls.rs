//! TLS for the API and the agent channel (rustls): a certificate given by the operator
//! (`--tls-cert` / `--tls-key`, PEM), or a self-signed one generated on first start and kept
//! in `<data-dir>/tls/`, whose SHA-256 fingerprint agents and the CLI pin. Serving is a plain
//! accept loop: TLS handshake, then hyper (HTTP/1.1 and HTTP/2) over the same axum router as
//! plain HTTP, with the peer's address as `ConnectInfo` (policies read `aws:SourceIp`).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A loaded certificate and key, ready to serve.
pub struct TlsIdentity {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), as `AB:CD:…`.
    pub fingerprint: String,
    /// The PEM file of the certificate (what `AWS_CA_BUNDLE` may point at when self-signed).
    pub cert_path: PathBuf,
    pub self_signed: bool,
}

/// `AB:CD:…` of the SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    let hex = gantry_auth::sigv4::sha256_hex(der).to_uppercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load(cert_path: &Path, key_path: &Path, self_signed: bool) -> Result<TlsIdentity, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "the certificate {} is not valid PEM: {e}",
                cert_path.display()
            )
        })?;
    let Some(leaf) = certs.first() else {
        return Err(format!("{} holds no certificate", cert_path.display()));
    };
    let fingerprint = fingerprint(leaf.as_ref());
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("cannot read the private key {}: {e}", key_path.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsIdentity {
        config: Arc::new(config),
        fingerprint,
        cert_path: cert_path.to_path_buf(),
        self_signed,
    })
}

/// The operator's certificate and key (PEM files).
pub fn from_files(cert: &Path, key: &Path) -> Result<TlsIdentity, String> {
    load(cert, key, false)
}

/// The self-signed certificate in `dir` (`cert.pem`, `key.pem`), created on first use for
/// `names` (DNS names and IP addresses the server is reached at) and kept: agents pin its
/// fingerprint, so it must survive restarts.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<TlsIdentity, String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let generated = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| format!("cannot generate a TLS certificate: {e}"))?;
        write_private(&key_path, &generated.signing_key.serialize_pem())?;
        std::fs::write(&cert_path, generated.cert.pem())
            .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    }
    load(&cert_path, &key_path, true)
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Accepts TLS connections on `listener` and serves `app` on them until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    identity: &TlsIdentity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake does not hold a task for ever.
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let service =
                app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
            let service = TowerToHyperService::new(service);
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// The names a self-signed certificate should carry for a server listening on `listen`:
/// localhost, the loopback addresses, the listen address itself and this host's name.
pub fn default_names(listen: &SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile_dir();
        let first = self_signed(&dir, &["localhost".to_string()]).expect("generate");
        let again = self_signed(&dir, &["localhost".to_string()]).expect("load");
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("c.pem"), "not a certificate").expect("write");
        let e = from_files(&dir.join("c.pem"), &dir.join("k.pem"))
            .err()
            .expect("refused");
        assert!(e.contains("c.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("gantry-tls-test-{}", uuid::Uuid::new_v4()))
    }
}
