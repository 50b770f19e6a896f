//! Client-side TLS for pricebeast's own clients (`pricebeast query`, the stress client, tests):
//! one rustls configuration from the trust the user chose, and the server name a certificate
//! must carry. The ring provider is named explicitly, so the client never depends on which
//! provider the process happens to have installed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The only application protocol pricebeast's listeners speak (HTTP/1.1, and WebSocket upgrades
/// over it); offered so that the server confirms it at the handshake.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Which certificates a client accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The Mozilla root store shipped in `webpki-roots` (a certificate from a public CA).
    WebpkiRoots,
    /// Only certificates that chain to one in this PEM file (a private CA, or a self-signed
    /// certificate trusted as its own root).
    CaFile(PathBuf),
    /// Any certificate at all, for any name: the connection is encrypted but not authenticated.
    /// The handshake's signatures are still checked, so the peer must hold the key of the
    /// certificate it sent.
    DangerAcceptInvalidCerts,
}

impl Trust {
    /// The trust the command-line flags ask for (`--ca-file`, `--danger-accept-invalid-certs`;
    /// clap keeps the two apart). Neither: the webpki roots.
    pub fn from_flags(ca_file: Option<&Path>, danger_accept_invalid_certs: bool) -> Self {
        match (ca_file, danger_accept_invalid_certs) {
            (_, true) => Trust::DangerAcceptInvalidCerts,
            (Some(path), false) => Trust::CaFile(path.to_owned()),
            (None, false) => Trust::WebpkiRoots,
        }
    }
}

/// How a client's configuration is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub trust: Trust,
    /// Keep tickets and session IDs to resume later connections. Off in the stress client, so a
    /// new connection costs the server a full handshake each time.
    pub resume_sessions: bool,
}

impl TlsOptions {
    pub fn new(trust: Trust) -> Self {
        Self { trust, resume_sessions: true }
    }
}

/// Why a client's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// The CA file could not be read (missing, a directory, no permission).
    #[error("reading the CA file {}: {error}", .path.display())]
    CaFileUnreadable { path: PathBuf, error: io::Error },
    /// The CA file holds no `BEGIN CERTIFICATE` block (not PEM, or a key instead).
    #[error("the CA file {} holds no PEM certificate", .path.display())]
    CaFileEmpty { path: PathBuf },
    /// A block of the CA file is not valid PEM, or not a certificate a trust anchor can be
    /// made of.
    #[error("the CA file {}: {reason}", .path.display())]
    CaFileInvalid { path: PathBuf, reason: String },
    /// rustls refused the configuration (a provider without the protocol versions asked).
    #[error("the TLS client configuration: {0}")]
    Config(rustls::Error),
    /// The host is neither a DNS name nor an IP address.
    #[error("{host:?} is not a DNS name or IP address a certificate could be checked against")]
    ServerName { host: String },
}

/// TLS to one server: the configuration, and the name the server's certificate must carry.
#[derive(Clone, Debug)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl TlsClient {
    /// A configuration from `options` for the server at `host_port` (`HOST:PORT`).
    pub fn new(options: &TlsOptions, host_port: &str) -> Result<Self, TlsClientError> {
        Ok(Self { config: client_config(options)?, server_name: server_name(host_port)? })
    }
}

/// A client configuration: TLS 1.3 and 1.2 with ring, ALPN `http/1.1`, the trust in `options`.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsClientError::Config)?;
    let mut config = match &options.trust {
        Trust::WebpkiRoots => {
            let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => builder.with_root_certificates(roots_from_file(path)?).with_no_client_auth(),
        Trust::DangerAcceptInvalidCerts => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(&provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    if !options.resume_sessions {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// The host part of `HOST:PORT` (`[::1]:8443` gives `::1`); a string without a port is taken
/// whole.
pub fn host_of(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match host_port.rsplit_once(':') {
        // A bare IPv6 address has colons of its own and no port.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    }
}

/// The name a certificate must carry for `host` (a DNS name or an IP address, as in
/// `HOST:PORT`; the port, if any, is dropped).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsClientError> {
    let host = host_of(host);
    ServerName::try_from(host.to_owned()).map_err(|_| TlsClientError::ServerName { host: host.to_owned() })
}

/// Every certificate in the PEM file at `path`, as trust anchors.
fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsClientError> {
    let pem = std::fs::read(path).map_err(|error| TlsClientError::CaFileUnreadable { path: path.to_owned(), error })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let invalid = |reason: String| TlsClientError::CaFileInvalid { path: path.to_owned(), reason };
        let cert = cert.map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| invalid(format!("a certificate that is no trust anchor: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsClientError::CaFileEmpty { path: path.to_owned() });
    }
    Ok(roots)
}

/// `--danger-accept-invalid-certs`: any chain, any name, any date. The signatures of the
/// handshake are verified all the same, with the provider's algorithms, so a peer that sends
/// someone else's certificate without its key still fails.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        Self { algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    /// A self-signed certificate for `names`: (cert PEM, key PEM).
    fn certificate(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        crate::cli::tls::generate(&names, 2).expect("a test certificate")
    }

    fn server_config(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert PEM")];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("the pair");
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        Arc::new(config)
    }

    /// Runs a handshake between `client` (for `name`) and `server` in memory, then one
    /// application byte each way; the client's error, if any.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<rustls::ServerConfig>,
        name: &str,
    ) -> Result<rustls::ClientConnection, rustls::Error> {
        let mut client = rustls::ClientConnection::new(client, server_name(name).expect("a name"))?;
        let mut server = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).expect("to memory");
            server.read_tls(&mut wire.as_slice()).expect("from memory");
            // The server's error reaches the client as an alert, read below.
            let _ = server.process_new_packets();
            let mut wire = Vec::new();
            server.write_tls(&mut wire).expect("to memory");
            client.read_tls(&mut wire.as_slice()).expect("from memory");
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                client.writer().write_all(b"?").expect("to the buffer");
                let mut wire = Vec::new();
                client.write_tls(&mut wire).expect("to memory");
                server.read_tls(&mut wire.as_slice()).expect("from memory");
                server.process_new_packets().expect("the byte");
                let mut byte = [0u8; 1];
                server.reader().read_exact(&mut byte).expect("one byte");
                assert_eq!(&byte, b"?");
                return Ok(client);
            }
        }
        panic!("the handshake did not finish in ten flights");
    }

    fn write_temp(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writing a test file");
        path
    }

    #[test]
    fn host_of_drops_the_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_of("localhost:8443"), "localhost");
        assert_eq!(host_of("localhost"), "localhost");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("prices.example.com:443"), "prices.example.com");
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert_eq!(server_name("127.0.0.1:8443").expect("an IP"), ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(server_name("[::1]:8443").expect("an IP"), ServerName::from(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let dns = server_name("prices.example.com:443").expect("a name");
        assert!(matches!(dns, ServerName::DnsName(ref n) if n.as_ref() == "prices.example.com"), "{dns:?}");
        for bad in ["", "bad name:443", "under_score!:1"] {
            let err = server_name(bad).expect_err(bad);
            assert!(matches!(err, TlsClientError::ServerName { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn trust_follows_the_flags() {
        let path = Path::new("ca.pem");
        assert_eq!(Trust::from_flags(None, false), Trust::WebpkiRoots);
        assert_eq!(Trust::from_flags(Some(path), false), Trust::CaFile(path.to_owned()));
        assert_eq!(Trust::from_flags(None, true), Trust::DangerAcceptInvalidCerts);
    }

    #[test]
    fn a_ca_file_trusts_its_certificates_and_no_other() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (cert, key) = certificate(&["localhost", "127.0.0.1"]);
        let (other, _) = certificate(&["localhost"]);
        let server = server_config(&cert, &key);
        // Two certificates in one file: both become anchors, so the server's second is trusted.
        let ca = write_temp(dir.path(), "ca.pem", &format!("{other}{cert}"));
        let client = client_config(&TlsOptions::new(Trust::CaFile(ca))).expect("a config");
        assert_eq!(client.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let conn = handshake(Arc::clone(&client), Arc::clone(&server), "127.0.0.1:8443").expect("trusted");
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        handshake(Arc::clone(&client), Arc::clone(&server), "localhost").expect("trusted by name too");
        // The certificate is not for this name.
        let err = handshake(Arc::clone(&client), Arc::clone(&server), "prices.example.com").expect_err("wrong name");
        assert!(err.to_string().contains("certificate"), "{err}");
        // Another certificate's file: the server's is signed by no anchor.
        let wrong = write_temp(dir.path(), "other.pem", &other);
        let client = client_config(&TlsOptions::new(Trust::CaFile(wrong))).expect("a config");
        let err = handshake(client, server, "127.0.0.1").expect_err("untrusted");
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
    }

    #[test]
    fn a_bad_ca_file_names_its_path() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (_, key) = certificate(&["localhost"]);
        let missing = dir.path().join("missing.pem");
        let not_pem = write_temp(dir.path(), "notes.txt", "not a certificate\n");
        let key_only = write_temp(dir.path(), "key.pem", &key);
        let broken =
            write_temp(dir.path(), "broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        for (path, kind) in [(&missing, "unreadable"), (&not_pem, "empty"), (&key_only, "empty"), (&broken, "invalid")]
        {
            let err = client_config(&TlsOptions::new(Trust::CaFile(path.clone()))).expect_err("refused");
            let matched = match kind {
                "unreadable" => matches!(err, TlsClientError::CaFileUnreadable { .. }),
                "empty" => matches!(err, TlsClientError::CaFileEmpty { .. }),
                _ => matches!(err, TlsClientError::CaFileInvalid { .. }),
            };
            assert!(matched, "{}: {err}", path.display());
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        }
    }

    #[test]
    fn danger_accepts_any_certificate_but_checks_the_handshake() {
        let (cert, key) = certificate(&["localhost"]);
        let server = server_config(&cert, &key);
        let client = client_config(&TlsOptions::new(Trust::DangerAcceptInvalidCerts)).expect("a config");
        // Self-signed, and for another name: accepted.
        handshake(Arc::clone(&client), Arc::clone(&server), "prices.example.com").expect("accepted");
        // A server presenting a certificate whose key it does not hold fails the signature check.
        let (_, other_key) = certificate(&["localhost"]);
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert PEM")];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(other_key.as_bytes()).expect("key PEM");
        let signer = rustls::crypto::ring::default_provider().key_provider.load_private_key(key).expect("a key");
        let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
        let mut impostor =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Fixed(certified)));
        impostor.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        let err = handshake(client, Arc::new(impostor), "localhost").expect_err("a bad signature");
        assert_eq!(err, rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature));
    }

    #[test]
    fn the_webpki_roots_refuse_a_self_signed_certificate() {
        let (cert, key) = certificate(&["localhost"]);
        let client = client_config(&TlsOptions::new(Trust::WebpkiRoots)).expect("a config");
        let err = handshake(client, server_config(&cert, &key), "localhost").expect_err("untrusted");
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
    }

    /// A server that presents one certificate whatever the client asks (its key need not match).
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }
}
