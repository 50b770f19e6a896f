//! The admin listener, on its own port off the public shards (default 127.0.0.1:9090), behind a
//! bearer token (all but the command center's page and assets). Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/` | the command center: a live page of all the figures below (no token to load it; its script asks for one) |
//! | `GET /admin/stress-stats` | the 24 counters, the gauges, rates over the last interval, each feed's state |
//! | `POST /admin/stress-reset` | zeroes the counters |
//! | `GET /admin/system-mode` | the tuning profile in force and its settings |
//! | `POST /admin/system-mode?mode=NAME` | puts another profile in force, at once |
//! | `GET /admin/cluster-stats` | every live node's snapshot and their sums, from Redis (`cluster`) |
//! | `POST /admin/keys/reload` | re-reads the keys file (as SIGHUP does) |
//! | `POST /admin/tls/reload` | re-reads the HTTPS certificate and key (as SIGHUP does) |
//! | `GET /admin/reports/usage?month=2026-11[&key=K][&format=csv]` | every key's usage for a month, from the ledger |
//! | `GET /metrics` | Prometheus text: counters, gauges, request latency histogram |

mod center;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::clock::Now;
use crate::counters::stats::{stress_stats_json, StatsWindow};
use crate::state::Shared;

/// What the admin handlers share.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub stats: Arc<StatsWindow>,
    pub metrics: metrics::Metrics,
    pub token: Option<String>,
    /// With `cluster.redis_url`: the node's Redis, for `/admin/cluster-stats`.
    pub cluster: Option<Arc<crate::cluster::redis::Redis>>,
}

/// Why the admin listener refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin listener on {0} is not loopback and has no token: set admin.token or PRICEBEAST_ADMIN_TOKEN (or pass --danger-admin-without-token)")]
    NoToken(SocketAddr),
}

/// Refuses a non-loopback admin address without a token, unless the operator said otherwise.
pub fn check_exposure(addr: SocketAddr, token: Option<&str>, danger_without_token: bool) -> Result<(), AdminError> {
    if token.is_none() && !addr.ip().is_loopback() && !danger_without_token {
        return Err(AdminError::NoToken(addr));
    }
    Ok(())
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/admin/stress-stats", get(stress_stats))
        .route("/admin/stress-reset", post(stress_reset))
        .route("/admin/system-mode", get(system_mode).post(switch_mode))
        .route("/admin/cluster-stats", get(cluster_stats))
        .route("/admin/keys/reload", post(keys_reload))
        .route("/admin/tls/reload", post(tls_reload))
        .route("/admin/reports/usage", get(usage_report))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), require_token))
        // After the token layer, so outside it: the page holds no data.
        .merge(center::routes())
        .with_state(state)
}

async fn require_token(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                json_body(r#"{"error":"unauthorized","message":"admin token required"}"#.into()),
            )
                .into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_body(text: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], text)
}

async fn stress_stats(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    json_body(stress_stats_doc(&state).to_string())
}

/// Every node's live nodes' snapshots and their sums, from Redis in one round trip.
async fn cluster_stats(State(state): State<Arc<AdminState>>) -> Response {
    let Some(redis) = &state.cluster else {
        let body = r#"{"error":"not_found","message":"cluster mode is off: set cluster.redis_url"}"#;
        return (StatusCode::NOT_FOUND, json_body(body.into())).into_response();
    };
    match crate::cluster::stats::read(redis, state.shared.config.cluster.stats_ttl_s).await {
        Ok(doc) => json_body(doc.to_string()).into_response(),
        Err(e) => {
            let body = serde_json::json!({"error": "cluster_unavailable", "message": e.to_string()}).to_string();
            (StatusCode::SERVICE_UNAVAILABLE, json_body(body)).into_response()
        }
    }
}

/// This node's `/admin/stress-stats` document: also what it publishes to the cluster.
pub fn stress_stats_doc(state: &AdminState) -> serde_json::Value {
    let now_ms = Now::read().unix_ms;
    let uptime_s = now_ms.saturating_sub(state.shared.started_ms) / 1000;
    let book = &state.shared.book;
    let feeds = state
        .shared
        .feeds
        .iter()
        .map(|(venue, stats)| {
            let mut reading = serde_json::json!(stats.read(now_ms));
            // The book's verdicts on the venue's prices, beside what its connections saw.
            if let (Some(fields), Some(column)) = (reading.as_object_mut(), book.venue(venue)) {
                let quality = book.quality(column);
                fields.insert("prices_not_positive".into(), quality.prices_not_positive.into());
                fields.insert("prices_outliers".into(), quality.prices_outliers.into());
            }
            (venue.clone(), reading)
        })
        .collect();
    let mut doc = stress_stats_json(
        &state.shared.node,
        uptime_s,
        &state.shared.counters.snapshot(),
        &state.stats.derived(),
        feeds,
    );
    let shared = &state.shared;
    doc["mode"] = serde_json::Value::String(shared.tuning.active().name.clone());
    doc["governor"] = serde_json::json!({
        "enabled": shared.tuning.governor(),
        "shed_above_us": shared.config.governor.shed_above_us,
        "shedding_shards": shared.governors.shedding(),
        "shards": shared.governors.take(),
    });
    doc
}

async fn system_mode(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    json_body(state.shared.tuning.json().to_string())
}

#[derive(Debug, serde::Deserialize)]
struct ModeQuery {
    mode: Option<String>,
}

/// Puts the named profile in force and answers as `GET` does; 400 `unknown_mode` names the
/// known ones.
async fn switch_mode(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<ModeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let known = || state.shared.tuning.profiles().names().collect::<Vec<_>>();
    let Some(name) = query.ok().and_then(|Query(q)| q.mode).filter(|m| !m.is_empty()) else {
        let body = serde_json::json!({
            "error": "bad_request",
            "message": "name the profile: POST /admin/system-mode?mode=NAME",
            "modes": known(),
        });
        return (StatusCode::BAD_REQUEST, json_body(body.to_string())).into_response();
    };
    match crate::control::profile::switch(&state.shared, &name, "admin") {
        Ok(_) => json_body(state.shared.tuning.json().to_string()).into_response(),
        Err(e) => {
            let body = serde_json::json!({"error": "unknown_mode", "message": e.to_string(), "modes": known()});
            (StatusCode::BAD_REQUEST, json_body(body.to_string())).into_response()
        }
    }
}

async fn stress_reset(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    state.shared.counters.reset();
    state.stats.restart(&state.shared.counters, Now::read().unix_ms);
    json_body(r#"{"reset":true}"#.into())
}

async fn keys_reload(State(state): State<Arc<AdminState>>) -> Response {
    match crate::control::keys::reload(&state.shared, "admin") {
        Ok(count) => json_body(format!(r#"{{"reloaded":true,"keys":{count}}}"#)).into_response(),
        Err(e) => {
            let body = serde_json::json!({"error": "bad_request", "message": e.to_string()}).to_string();
            (StatusCode::BAD_REQUEST, json_body(body)).into_response()
        }
    }
}

/// 200 with the certificate now served; 422 with why the new pair was refused and the one still
/// served; 404 when HTTPS is off.
async fn tls_reload(State(state): State<Arc<AdminState>>) -> Response {
    let described = |identity: &crate::tls::certs::Identity| {
        serde_json::json!({
            "subject": identity.subject,
            "not_after": crate::clock::rfc3339(identity.not_after_unix_s),
            "not_after_unix_s": identity.not_after_unix_s,
        })
    };
    match crate::control::tls::reload(&state.shared, "admin") {
        None => {
            let body = r#"{"error":"not_found","message":"HTTPS is off (server.https): no certificate to reload"}"#;
            (StatusCode::NOT_FOUND, json_body(body.into())).into_response()
        }
        Some(Ok(identity)) => {
            let mut body = described(&identity);
            body["reloaded"] = serde_json::Value::Bool(true);
            json_body(body.to_string()).into_response()
        }
        Some(Err(e)) => {
            let serving = state.shared.tls.as_ref().map(|certs| described(&certs.current()));
            let body = serde_json::json!({
                "error": "tls_reload_failed",
                "message": e.to_string(),
                "serving": serving,
            });
            (StatusCode::UNPROCESSABLE_ENTITY, json_body(body.to_string())).into_response()
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct UsageReportQuery {
    month: Option<String>,
    key: Option<String>,
    format: Option<String>,
}

/// Every key's usage for a month (default: this one), JSON or CSV, read from the ledger here on
/// the control plane.
async fn usage_report(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<UsageReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |message: &str| {
        let body = serde_json::json!({"error": "bad_request", "message": message}).to_string();
        (StatusCode::BAD_REQUEST, json_body(body)).into_response()
    };
    let Ok(Query(query)) = query else { return bad("the query takes month=YYYY-MM, key=NAME and format=json|csv") };
    let month = match query.month.as_deref() {
        None => crate::clock::Month::of_unix_ms(Now::read().unix_ms),
        Some(text) => match crate::clock::Month::parse(text) {
            Some(month) => month,
            None => return bad("month must be YYYY-MM"),
        },
    };
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return bad("format must be json or csv"),
    };
    let Some(ledger) = &state.shared.ledger else { return bad("no usage ledger") };
    state.shared.counters.control().inc(crate::counters::Counter::UsageReportRequests);
    match crate::usage::ledger::service::month_report(ledger, month, query.key.as_deref()).await {
        Ok(keys) if csv => {
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], crate::usage::ledger::report::month_csv(&keys))
                .into_response()
        }
        Ok(keys) => json_body(crate::usage::ledger::report::month_json(month, &keys)).into_response(),
        Err(e) => {
            let status = match e {
                crate::usage::ledger::LedgerError::NoLedger => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let body = serde_json::json!({"error": "unavailable", "message": e.to_string()}).to_string();
            (status, json_body(body)).into_response()
        }
    }
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_rules() {
        let public: SocketAddr = "0.0.0.0:9090".parse().expect("literal");
        let loopback: SocketAddr = "127.0.0.1:9090".parse().expect("literal");
        assert!(check_exposure(loopback, None, false).is_ok());
        assert!(check_exposure(public, None, false).is_err());
        assert!(check_exposure(public, Some("t"), false).is_ok());
        assert!(check_exposure(public, None, true).is_ok());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
    }
}
