//! The keys file: one TOML table per key, holding its name, tier, limits and SHA-256, never the
//! key itself. `pricebeast keys` edits it; the server reads it at start and on every reload.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::keys::secret::KeyHash;

/// A key's tier: public keys are rate limited and capped, partner keys only counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Public,
    Partner,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Public => "public",
            Tier::Partner => "partner",
        }
    }
}

/// One key as written in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub name: String,
    pub tier: Tier,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cap: Option<u64>,
    #[serde(default)]
    pub created_unix_s: u64,
    #[serde(default)]
    pub revoked: bool,
    /// A public key a load test uses: while a profile sets `stress_qps` and `stress_burst`, those
    /// are its limits instead of `qps` and `burst` (its monthly cap stays its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stress: bool,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyRecord>,
}

/// A checked key: what the server builds its table from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedKey {
    pub name: String,
    pub tier: Tier,
    pub hash: KeyHash,
    /// Public keys only: (qps, burst, monthly cap).
    pub limits: Option<(u32, u32, u64)>,
    pub revoked: bool,
    /// Its QPS and burst follow the active profile's stress limits.
    pub stress: bool,
}

/// Why a keys file was refused. Each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: key {name:?}: {problem}")]
    Key { path: String, name: String, problem: String },
}

impl KeysFile {
    /// Reads `path`; a missing file is an empty key set (a new installation has no keys yet).
    pub fn load(path: &Path) -> Result<Self, KeysFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(error) => return Err(KeysFileError::Io { path: path.display().to_string(), error }),
        };
        toml::from_str(&text)
            .map_err(|e| KeysFileError::Syntax { path: path.display().to_string(), message: e.to_string() })
    }

    /// Writes the file atomically (a temporary beside it, then a rename), so a server reloading
    /// at the same moment reads either the old or the new file, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), KeysFileError> {
        let io = |error| KeysFileError::Io { path: path.display().to_string(), error };
        let mut text = String::from("# pricebeast keys: SHA-256 hashes only. Edit with `pricebeast keys`.\n\n");
        text.push_str(&toml::to_string(self).map_err(|e| io(std::io::Error::other(e)))?);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Checks every record: unique names, valid hashes, limits on public keys only.
    pub fn parse(&self, path: &Path) -> Result<Vec<ParsedKey>, KeysFileError> {
        let mut parsed: Vec<ParsedKey> = Vec::with_capacity(self.keys.len());
        for record in &self.keys {
            let fail = |problem: &str| KeysFileError::Key {
                path: path.display().to_string(),
                name: record.name.clone(),
                problem: problem.to_owned(),
            };
            if !valid_name(&record.name) {
                return Err(fail("name must be 1 to 64 of A-Z a-z 0-9 - _ ."));
            }
            if parsed.iter().any(|k| k.name == record.name) {
                return Err(fail("name is used twice"));
            }
            let mut hash = KeyHash::default();
            if record.sha256.len() != 64 || hex::decode_to_slice(&record.sha256, &mut hash).is_err() {
                return Err(fail("sha256 must be 64 hex digits"));
            }
            if parsed.iter().any(|k| k.hash == hash) {
                return Err(fail("the same key is listed twice"));
            }
            let limits = match (record.tier, record.qps, record.burst, record.monthly_cap) {
                (Tier::Public, Some(qps), Some(burst), Some(cap)) if qps > 0 && burst > 0 && cap > 0 => {
                    Some((qps, burst, cap))
                }
                (Tier::Public, ..) => return Err(fail("public keys need qps, burst and monthly_cap, each at least 1")),
                (Tier::Partner, None, None, None) => None,
                (Tier::Partner, ..) => {
                    return Err(fail("partner keys are never limited: remove qps, burst, monthly_cap"))
                }
            };
            if record.stress && record.tier != Tier::Public {
                return Err(fail("stress = true marks public keys (a partner key has no limits to change)"));
            }
            parsed.push(ParsedKey {
                name: record.name.clone(),
                tier: record.tier,
                hash,
                limits,
                revoked: record.revoked,
                stress: record.stress,
            });
        }
        Ok(parsed)
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, tier: Tier) -> KeyRecord {
        KeyRecord {
            name: name.into(),
            tier,
            sha256: hex::encode(crate::keys::secret::hash(name.as_bytes())),
            qps: (tier == Tier::Public).then_some(10),
            burst: (tier == Tier::Public).then_some(20),
            monthly_cap: (tier == Tier::Public).then_some(1000),
            created_unix_s: 1,
            revoked: false,
            stress: false,
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.toml");
        let file = KeysFile { keys: vec![record("alice", Tier::Public), record("acme", Tier::Partner)] };
        file.save(&path).expect("saved");
        let loaded = KeysFile::load(&path).expect("loaded");
        assert_eq!(loaded, file);
        let parsed = loaded.parse(&path).expect("valid");
        assert_eq!(parsed[0].limits, Some((10, 20, 1000)));
        assert_eq!(parsed[1].limits, None);
    }

    #[test]
    fn a_missing_file_is_an_empty_set() {
        let loaded = KeysFile::load(Path::new("/nonexistent/keys.toml")).expect("empty");
        assert!(loaded.keys.is_empty());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let path = Path::new("k.toml");
        let mut partner = record("acme", Tier::Partner);
        partner.qps = Some(5);
        let err = KeysFile { keys: vec![partner] }.parse(path).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "k.toml: key \"acme\": partner keys are never limited: remove qps, burst, monthly_cap"
        );
        let mut public = record("bob", Tier::Public);
        public.qps = Some(0);
        assert!(KeysFile { keys: vec![public] }.parse(path).is_err());
        let dup = KeysFile { keys: vec![record("a", Tier::Partner), record("a", Tier::Partner)] };
        assert!(dup.parse(path).expect_err("dup").to_string().contains("used twice"));
        let syntax = toml::from_str::<KeysFile>("[[key]]\nname = 1\n").expect_err("bad type");
        assert!(syntax.to_string().contains("line 2"), "{syntax}");
    }
}
