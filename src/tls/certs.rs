//! The server's certificate: read from PEM files into a rustls configuration that every shard's
//! handshakes share, and replaced whole when the files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Session IDs kept for TLS 1.2 clients that resume without tickets (about 200 bytes each).
const SESSION_CACHE_ENTRIES: usize = 4096;

/// Why a certificate was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("{0}")]
    Invalid(String),
}

/// A loaded certificate and the handshake configuration built on it.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// The leaf's notAfter, Unix seconds.
    pub not_after_unix_s: i64,
    /// The leaf's subject, for logs and the admin answer.
    pub subject: String,
}

/// The process's certificate, swapped whole on reload. The ticket keys and the session cache
/// outlive a reload, so clients resume across one.
pub struct Certs {
    current: ArcSwap<Identity>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl Certs {
    /// Loads the pair; fails as `load` does.
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Self, CertError> {
        let ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| CertError::Invalid(format!("ticket keys: {e}")))?;
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        let identity = load(cert_file, key_file, &ticketer, &sessions)?;
        Ok(Self {
            current: ArcSwap::from_pointee(identity),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            ticketer,
            sessions,
        })
    }

    /// The configuration for a handshake starting now.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<Identity> {
        self.current.load_full()
    }

    /// Reads the files again and, if the new pair loads, serves it from the next handshake on.
    /// On failure the old pair stays.
    pub fn reload(&self) -> Result<Arc<Identity>, CertError> {
        let identity = Arc::new(load(&self.cert_file, &self.key_file, &self.ticketer, &self.sessions)?);
        self.current.store(Arc::clone(&identity));
        Ok(identity)
    }
}

/// Reads and checks a certificate chain and key: both parse, the key is the certificate's,
/// and the leaf is valid now.
fn load(
    cert_file: &Path,
    key_file: &Path,
    ticketer: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<Identity, CertError> {
    let file_error = |path: &Path, problem: String| CertError::File { path: path.display().to_string(), problem };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| file_error(cert_file, pem_problem(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert_file, pem_problem(&e)))?;
    let Some(leaf) = chain.first() else {
        return Err(file_error(cert_file, "no CERTIFICATE block".into()));
    };
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_error(key_file, pem_problem(&e)))?;
    let (not_before, not_after, subject) = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => {
            (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp(), cert.subject().to_string())
        }
        Err(e) => return Err(file_error(cert_file, format!("the first certificate does not parse: {e}"))),
    };
    let now = crate::clock::Now::read().unix_ms as i64 / 1000;
    if now > not_after {
        return Err(file_error(cert_file, format!("the certificate expired at {} (Unix seconds)", not_after)));
    }
    if now < not_before {
        return Err(file_error(
            cert_file,
            format!("the certificate is not valid before {} (Unix seconds)", not_before),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| CertError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                file_error(key_file, format!("the key is not the one of {}", cert_file.display()))
            }
            e => file_error(key_file, e.to_string()),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The record layer after the handshake is ours (`tls::session`).
    config.enable_secret_extraction = true;
    config.ticketer = Arc::clone(ticketer);
    config.session_storage = Arc::clone(sessions);
    Ok(Identity { config: Arc::new(config), not_after_unix_s: not_after, subject })
}

fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind".into(),
        other => format!("not PEM: {other:?}"),
    }
}
