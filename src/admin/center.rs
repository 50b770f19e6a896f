//! The command center: one page, its script and its style, shipped inside the binary and served
//! by the admin listener without the token (they hold no data; the script asks for the token and
//! sends it on every data call). The Content-Security-Policy keeps the page to this listener:
//! nothing inline, nothing from anywhere else.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("center/index.html");
const SCRIPT: &str = include_str!("center/center.js");
const STYLE: &str = include_str!("center/center.css");

/// Everything the page may load comes from this listener; `data:` only for the blank favicon.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes, to be mounted outside the token check.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        // Relative, so that the page still works behind a proxy that mounts the listener elsewhere.
        .route("/admin", get(|| async { Redirect::permanent("admin/") }))
        .route("/admin/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/admin/center.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/admin/center.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}
