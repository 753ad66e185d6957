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

/// What a caller of the dashboard may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Nothing: the login form.
    None,
    /// See every page, act on nothing (the read-only token).
    Read,
    /// See and act.
    Full,
}

/// The session cookie's value for this server at `access` (`Read` or `Full`).
pub(crate) fn session_value(state: &AppState, access: Access) -> String {
    let what = match access {
        Access::Read => "spooler dashboard read session",
        _ => "spooler dashboard session",
    };
    mac(&key(state), what)
}

/// The CSRF field of every form.
pub(crate) fn csrf(state: &AppState) -> String {
    mac(&key(state), "spooler dashboard csrf")
}

/// What a request may do: everything when no token is configured; else what its session cookie
/// (or a bearer token, for scripts) allows.
pub(crate) fn access(state: &AppState, headers: &HeaderMap) -> Access {
    let Some(token) = &state.inner.options.token else {
        return Access::Full;
    };
    let read_token = state.inner.options.read_token.as_deref();
    let cookies: Vec<&str> = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .collect();
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim());
    let cookie_is = |access| {
        let expected = session_value(state, access);
        cookies
            .iter()
            .any(|c| same(c.as_bytes(), expected.as_bytes()))
    };
    if cookie_is(Access::Full) || bearer.is_some_and(|b| same(b.as_bytes(), token.as_bytes())) {
        Access::Full
    } else if read_token.is_some()
        && (cookie_is(Access::Read)
            || bearer
                .zip(read_token)
                .is_some_and(|(b, r)| same(b.as_bytes(), r.as_bytes())))
    {
        Access::Read
    } else {
        Access::None
    }
}

/// What a login with `given` grants.
pub(crate) fn login_access(state: &AppState, given: &str) -> Access {
    let options = &state.inner.options;
    if options
        .token
        .as_deref()
        .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
    {
        Access::Full
    } else if options
        .read_token
        .as_deref()
        .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
    {
        Access::Read
    } else {
        Access::None
    }
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
