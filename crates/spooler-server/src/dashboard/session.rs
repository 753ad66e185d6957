//! Who may see and steer the dashboard: with a token configured, a login form sets an HttpOnly,
//! SameSite=Strict session cookie derived from the token; every form carries a CSRF field derived
//! from the session, checked on each POST. Without a token (a loopback listener) pages are open,
//! and forms still carry the field, keyed by a secret of this process.

use crate::state::AppState;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "spooler_session";

/// How long a login lasts, in seconds.
pub(crate) const SESSION_SECONDS: u64 = 12 * 3600;

fn mac(key: &[u8], what: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(what.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key sessions and CSRF fields are derived from: the token when one is set (so a login
/// outlives a restart and ends when the token changes), else this process's secret.
fn key(state: &AppState) -> Vec<u8> {
    match &state.inner.options.token {
        Some(token) => token.as_bytes().to_vec(),
        None => state.inner.dashboard_secret.to_vec(),
    }
}

/// The session cookie's value for this server.
pub(crate) fn session_value(state: &AppState) -> String {
    mac(&key(state), "spooler dashboard session")
}

/// The CSRF field of every form.
pub(crate) fn csrf(state: &AppState) -> String {
    mac(&key(state), "spooler dashboard csrf")
}

/// Whether a request may see the dashboard: no token is configured, or its session cookie (or a
/// bearer token, for scripts) is right.
pub(crate) fn allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.inner.options.token else {
        return true;
    };
    let expected = session_value(state);
    let cookie_ok = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same(value.as_bytes(), expected.as_bytes()));
    let bearer_ok = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, given)| {
            scheme.eq_ignore_ascii_case("bearer") && same(given.trim().as_bytes(), token.as_bytes())
        });
    cookie_ok || bearer_ok
}

/// Whether `given` is the server's token.
pub(crate) fn token_is(state: &AppState, given: &str) -> bool {
    state
        .inner
        .options
        .token
        .as_deref()
        .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
}

/// Whether a form's CSRF field is right.
pub(crate) fn csrf_ok(state: &AppState, given: &str) -> bool {
    same(given.as_bytes(), csrf(state).as_bytes())
}

/// Equal, compared in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
