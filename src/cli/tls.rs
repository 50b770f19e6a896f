//! `pricebeast tls self-signed`: a certificate and key for trying HTTPS, not for production.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed ECDSA P-256 certificate (cert.pem) and its key (key.pem) into DIR.
    SelfSigned(SelfSignedArgs),
}

#[derive(Debug, clap::Args)]
pub struct SelfSignedArgs {
    /// The directory to write cert.pem and key.pem into (made if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Names the certificate is for (DNS names or IP addresses); repeat for more.
    #[arg(long = "name", value_name = "NAME", default_values = ["localhost", "127.0.0.1", "::1"])]
    pub names: Vec<String>,
    /// Days from now until it expires.
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Replace cert.pem and key.pem if DIR already has them.
    #[arg(long)]
    pub force: bool,
}

pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::SelfSigned(args) => {
            let (cert, key) = self_signed(&args.out, &args.names, args.days, args.force)?;
            println!("wrote {} and {}", cert.display(), key.display());
            println!(
                "serve it: set [tls] cert_file = {:?}, key_file = {:?} and server.https = \"0.0.0.0:8443\"",
                cert.display().to_string(),
                key.display().to_string()
            );
            Ok(())
        }
    }
}

/// Writes `DIR/cert.pem` and `DIR/key.pem` (the key readable by its owner only); returns their paths.
pub fn self_signed(dir: &Path, names: &[String], days: u32, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert_pem, key_pem) = generate(names, days)?;
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() && !force {
            anyhow::bail!("{} exists (--force replaces it)", path.display());
        }
    }
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// A self-signed ECDSA P-256 certificate for `names`, valid from an hour ago for `days`: (cert PEM, key PEM).
pub fn generate(names: &[String], days: u32) -> anyhow::Result<(String, String)> {
    let now = std::time::SystemTime::now();
    let common_name = names.first().map(String::as_str).unwrap_or("pricebeast");
    generate_between(
        names,
        common_name,
        now - std::time::Duration::from_secs(3600),
        now + std::time::Duration::from_secs(u64::from(days) * 86_400),
    )
}

/// A self-signed ECDSA P-256 certificate for `names` with `common_name` as its subject, valid
/// from `not_before` to `not_after` (either may be past, for tests of refusal): (cert PEM, key PEM).
pub fn generate_between(
    names: &[String],
    common_name: &str,
    not_before: std::time::SystemTime,
    not_after: std::time::SystemTime,
) -> anyhow::Result<(String, String)> {
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("the certificate's names")?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("making a P-256 key")?;
    let cert = params.self_signed(&key).context("signing the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}
