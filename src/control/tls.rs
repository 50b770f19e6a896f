//! Certificate reloads: on SIGHUP, on `POST /admin/tls/reload`, and when either file changes
//! (`tls.reload_poll_ms`). A pair that fails to load is logged and refused; the one in use stays,
//! and connections already open are never touched either way (each keeps the keys it was made
//! with).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::control::{Every, Stop};
use crate::state::Shared;
use crate::tls::certs::{CertError, Certs, Identity};

/// Reads the pair again; the one in use stays on failure. `None` when HTTPS is off.
pub fn reload(shared: &Shared, why: &str) -> Option<Result<Arc<Identity>, CertError>> {
    let certs = shared.tls.as_ref()?;
    Some(reload_certs(certs, why))
}

fn reload_certs(certs: &Certs, why: &str) -> Result<Arc<Identity>, CertError> {
    match certs.reload() {
        Ok(identity) => {
            tracing::info!(
                subject = %identity.subject,
                not_after = %crate::clock::rfc3339(identity.not_after_unix_s),
                "HTTPS certificate reloaded ({why})"
            );
            Ok(identity)
        }
        Err(e) => {
            let serving = certs.current();
            tracing::warn!(
                serving = %serving.subject,
                serving_not_after = %crate::clock::rfc3339(serving.not_after_unix_s),
                "HTTPS certificate reload ({why}) refused, the certificate in use stays: {e}"
            );
            Err(e)
        }
    }
}

/// What identifies a version of a file without reading it: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads the pair whenever either file's modification time or length changes. A change that
/// fails to load (a renewal tool between writing the key and the chain) is not retried until the
/// files change again, so it is logged once, not every poll.
pub async fn poll(shared: Arc<Shared>, stop: Stop) {
    let Some(certs) = shared.tls.clone() else { return };
    let stamps = |certs: &Certs| (stamp(&certs.cert_file), stamp(&certs.key_file));
    let mut last = stamps(&certs);
    let mut every = Every::new(Duration::from_millis(shared.config.tls.reload_poll_ms), stop);
    while every.tick().await {
        let now = stamps(&certs);
        if now != last {
            last = now;
            let _ = reload_certs(&certs, "certificate files changed");
        }
    }
}
