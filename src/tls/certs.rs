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
        return Err(file_error(cert_file, format!("the certificate expired at {}", crate::clock::rfc3339(not_after))));
    }
    if now < not_before {
        return Err(file_error(
            cert_file,
            format!("the certificate is not valid before {}", crate::clock::rfc3339(not_before)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;
    use std::time::{Duration, SystemTime};

    /// A self-signed P-256 pair for `name`, valid from `not_before` to `not_after`: (cert PEM, key PEM).
    fn pair(name: &str, not_before: SystemTime, not_after: SystemTime) -> (String, String) {
        crate::cli::tls::generate_between(&[name.to_owned()], name, not_before, not_after).expect("a test pair")
    }

    fn valid(name: &str) -> (String, String) {
        let now = SystemTime::now();
        pair(name, now - Duration::from_secs(3600), now + Duration::from_secs(30 * 86_400))
    }

    /// Writes a pair into a fresh directory; returns it (kept alive by the caller) and the paths.
    fn write(cert: &str, key: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert).expect("write cert");
        std::fs::write(&key_file, key).expect("write key");
        (dir, cert_file, key_file)
    }

    fn refusal(cert_file: &Path, key_file: &Path) -> String {
        match Certs::open(cert_file, key_file) {
            Ok(_) => panic!("the pair loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_valid_pair_loads_with_its_subject_and_expiry() {
        let (cert, key) = valid("prices.example");
        let (_dir, cert_file, key_file) = write(&cert, &key);
        let certs = Certs::open(&cert_file, &key_file).expect("loads");
        let identity = certs.current();
        assert!(identity.subject.contains("prices.example"), "{}", identity.subject);
        let in_30_days = Now::read().unix_ms as i64 / 1000 + 30 * 86_400;
        assert!((identity.not_after_unix_s - in_30_days).abs() < 60, "{}", identity.not_after_unix_s);
        assert_eq!(identity.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn an_expired_certificate_is_refused_naming_the_file() {
        let now = SystemTime::now();
        let (cert, key) = pair("old.example", now - Duration::from_secs(90 * 86_400), now - Duration::from_secs(60));
        let (_dir, cert_file, key_file) = write(&cert, &key);
        let error = refusal(&cert_file, &key_file);
        assert!(error.contains("expired") && error.contains(&cert_file.display().to_string()), "{error}");
    }

    #[test]
    fn a_certificate_not_valid_yet_is_refused() {
        let now = SystemTime::now();
        let (cert, key) =
            pair("soon.example", now + Duration::from_secs(86_400), now + Duration::from_secs(9 * 86_400));
        let (_dir, cert_file, key_file) = write(&cert, &key);
        assert!(refusal(&cert_file, &key_file).contains("not valid before"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_key_file() {
        let (cert, _) = valid("a.example");
        let (_, other_key) = valid("b.example");
        let (_dir, cert_file, key_file) = write(&cert, &other_key);
        let error = refusal(&cert_file, &key_file);
        assert!(error.contains(&key_file.display().to_string()) && error.contains("not the one of"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let (cert, key) = valid("a.example");
        let (dir, cert_file, key_file) = write(&cert, &key);
        let missing = dir.path().join("nowhere.pem");
        let error = refusal(&missing, &key_file);
        assert!(error.contains(&missing.display().to_string()), "{error}");
        let error = refusal(&cert_file, &missing);
        assert!(error.contains(&missing.display().to_string()), "{error}");
    }

    #[test]
    fn garbage_is_refused_as_not_pem() {
        let (cert, key) = valid("a.example");
        let (_dir, cert_file, key_file) = write("this is not a certificate\n", &key);
        let error = refusal(&cert_file, &key_file);
        assert!(error.contains("no CERTIFICATE block") && error.contains(&cert_file.display().to_string()), "{error}");
        let (_dir, cert_file, key_file) =
            write(&cert, "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n");
        let error = refusal(&cert_file, &key_file);
        assert!(error.contains(&key_file.display().to_string()), "{error}");
        // A CERTIFICATE block whose contents are not a certificate.
        let (_dir, cert_file, key_file) = write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", &key);
        assert!(refusal(&cert_file, &key_file).contains("does not parse"));
    }

    #[test]
    fn a_failed_reload_keeps_the_pair_in_use() {
        let (cert, key) = valid("first.example");
        let (_dir, cert_file, key_file) = write(&cert, &key);
        let certs = Certs::open(&cert_file, &key_file).expect("loads");
        let before = certs.server_config();
        // A renewal caught between the key and the chain: the new key, the old certificate.
        let (_, new_key) = valid("second.example");
        std::fs::write(&key_file, new_key).expect("write key");
        assert!(certs.reload().is_err());
        assert!(Arc::ptr_eq(&before, &certs.server_config()));
        assert!(certs.current().subject.contains("first.example"));
    }

    #[test]
    fn a_good_reload_swaps_the_pair_and_keeps_the_ticket_keys() {
        let (cert, key) = valid("first.example");
        let (_dir, cert_file, key_file) = write(&cert, &key);
        let certs = Certs::open(&cert_file, &key_file).expect("loads");
        let before = certs.server_config();
        let (cert, key) = valid("second.example");
        std::fs::write(&key_file, key).expect("write key");
        std::fs::write(&cert_file, cert).expect("write cert");
        let identity = certs.reload().expect("reloads");
        assert!(identity.subject.contains("second.example"), "{}", identity.subject);
        let after = certs.server_config();
        assert!(!Arc::ptr_eq(&before, &after));
        // Tickets issued before the reload still decrypt after it: the same ticketer.
        assert_eq!(Arc::as_ptr(&before.ticketer).cast::<u8>(), Arc::as_ptr(&after.ticketer).cast::<u8>());
        assert_eq!(Arc::as_ptr(&before.session_storage).cast::<u8>(), Arc::as_ptr(&after.session_storage).cast::<u8>());
    }
}
