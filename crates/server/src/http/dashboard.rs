//! The dashboard: plain ES modules and one stylesheet (`crates/server/dashboard/`), built
//! into the binary and served by the admin listener. It is a client of `/api/v1` like any
//! other; nothing here knows a token or an account.
//!
//! Every asset is served under `/assets/{version}/`, where the version is a digest of all
//! of them: the modules import each other by relative paths, so one fingerprint for the
//! whole set keeps those paths as written and still changes whenever any file does.
//! Assets are cached for a year; the page itself never is. The page's
//! `Content-Security-Policy` allows scripts and styles from this origin only: no inline
//! script or style, no `eval`, no framing.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

use super::error::ApiError;
use super::AppState;
use tessera_core::ErrorCode;

/// The pages a browser may load directly (a reload, a bookmark): each is the one page,
/// which routes on its path.
const PAGES: [&str; 10] = [
    "/",
    "/sign-in",
    "/tokens",
    "/tokens/{id}",
    "/audit",
    "/accounts",
    "/roles",
    "/gateway",
    "/webhooks",
    "/settings",
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

macro_rules! assets {
    ($($file:literal),* $(,)?) => {
        [$(($file, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/", $file)) as &[u8])),*]
    };
}

/// Every file of the dashboard, by its path under `dashboard/`.
static ASSETS: [(&str, &[u8]); 15] = assets![
    "style.css",
    "app.js",
    "api.js",
    "dom.js",
    "format.js",
    "pages/signin.js",
    "pages/tokens.js",
    "pages/token_dialogs.js",
    "pages/token.js",
    "pages/audit.js",
    "pages/accounts.js",
    "pages/roles.js",
    "pages/settings.js",
    "pages/gateway.js",
    "pages/webhooks.js",
];

const INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/index.html"));

/// The digest of every asset: the `{version}` in their paths.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut digest = Sha256::new();
    for (path, bytes) in &ASSETS {
        digest.update(path.as_bytes());
        digest.update((bytes.len() as u64).to_be_bytes());
        digest.update(bytes);
    }
    hex::encode(&digest.finalize()[..8])
});

/// The page, pointing at this build's assets.
static PAGE: LazyLock<String> = LazyLock::new(|| INDEX.replace("{{assets}}", &assets_base()));

fn assets_base() -> String {
    format!("/assets/{}", *VERSION)
}

/// The dashboard's routes: its pages and its assets.
pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for page in PAGES {
        router = router.route(page, axum::routing::get(page_response));
    }
    router.route("/assets/{version}/{*file}", axum::routing::get(asset))
}

async fn page_response() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|(path, _)| *path == file);
    let Some((path, bytes)) = found.filter(|_| version == *VERSION) else {
        return ApiError::code(ErrorCode::NotFound).into_response();
    };
    let content_type = if path.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/javascript; charset=utf-8"
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        *bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_this_builds_assets() {
        assert!(PAGE.contains(&format!("{}/app.js", assets_base())));
        assert!(PAGE.contains(&format!("{}/style.css", assets_base())));
        assert!(!PAGE.contains("{{"));
    }

    /// Every module a module imports is served: a file added to `dashboard/` and
    /// imported, but missing from [`ASSETS`], would break the page. (Every `from '…'`
    /// counts, so an import written over several lines is seen too.)
    #[test]
    fn every_imported_module_is_an_asset() {
        let mut seen = 0;
        for (path, bytes) in &ASSETS {
            let text = std::str::from_utf8(bytes).unwrap();
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            for quote in ['\'', '"'] {
                for rest in text.split(&format!(" from {quote}")).skip(1) {
                    let target = rest.split(quote).next().unwrap();
                    let resolved = resolve(dir, target);
                    assert!(
                        ASSETS.iter().any(|(p, _)| *p == resolved),
                        "{path} imports {target} ({resolved}), which is not served"
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= ASSETS.len() - 1, "only {seen} imports found");
    }

    fn resolve(dir: &str, target: &str) -> String {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for piece in target.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }
}
