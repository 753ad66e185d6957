//! Connect-time helpers: spooler's own URL parameters (`schema`, and libpq's `connect_timeout`
//! beside a `statement_timeout`), the check of a schema name, and the message of a failed connect.
//! TLS (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) is read from the URL by sqlx, with libpq's
//! names and its default (`prefer`).

use spooler_core::{StoreError, StoreResult};
use std::time::Duration;

/// The URL parameters spooler reads itself (sqlx reads the rest).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UrlParams {
    /// `schema=NAME`.
    pub(crate) schema: Option<String>,
    /// `connect_timeout=SECONDS` (libpq's), or a duration (`"500ms"`).
    pub(crate) connect_timeout: Option<Duration>,
    /// `statement_timeout=MILLISECONDS` (as PostgreSQL reads the setting), or a duration (`"30s"`).
    pub(crate) statement_timeout: Option<Duration>,
}

/// Splits spooler's own parameters off a URL: returns the URL without them, and them.
pub(crate) fn take_params(url: &str) -> StoreResult<(String, UrlParams)> {
    let mut params = UrlParams::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), params));
    };
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "schema" => params.schema = Some(value.to_string()),
            "connect_timeout" => {
                params.connect_timeout = Some(timeout_param(
                    "connect_timeout",
                    value,
                    Duration::from_secs(1),
                )?)
            }
            "statement_timeout" => {
                params.statement_timeout = Some(timeout_param(
                    "statement_timeout",
                    value,
                    Duration::from_millis(1),
                )?)
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, params))
}

/// A timeout parameter: a whole number of `unit`s, or a duration with its unit.
fn timeout_param(key: &'static str, value: &str, unit: Duration) -> StoreResult<Duration> {
    let invalid = |why: &str| StoreError::InvalidInput {
        field: key,
        message: format!("{key}={value} in the PostgreSQL URL: {why}"),
    };
    let d = match value.parse::<u32>() {
        Ok(n) => unit * n,
        Err(_) => spooler_core::parse_duration(value).map_err(|e| invalid(&e))?,
    };
    if d.is_zero() {
        return Err(invalid("must be longer than zero"));
    }
    Ok(d)
}

/// Fails unless `schema` is a name [`PgOptions::schema`](crate::PgOptions::schema) allows.
pub(crate) fn validate_schema(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && schema.len() <= 50;
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            field: "schema",
            message: format!(
                "\"{schema}\" is not a valid schema name (use letters, digits and _, at most 50 bytes, not starting with a digit)"
            ),
        })
    }
}

/// The cause of a failed connect and, when known, the fix.
pub(crate) fn connect_message(
    err: &sqlx::Error,
    endpoint: &str,
    user: &str,
    database: &str,
    ssl_mode: sqlx::postgres::PgSslMode,
) -> String {
    use sqlx::postgres::PgSslMode;
    // A refused certificate comes back as an I/O error carrying rustls' own.
    let tls = match err {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(e) => e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    };
    if tls {
        let e = err;
        let fix = match ssl_mode {
            PgSslMode::VerifyFull => {
                "sslmode=verify-full: the server's certificate must name the host in the URL and chain to sslrootcert (or a public CA)"
            }
            PgSslMode::VerifyCa => {
                "sslmode=verify-ca: the server's certificate must chain to sslrootcert (or a public CA)"
            }
            _ => "check sslmode, sslrootcert, sslcert and sslkey in the URL",
        };
        return format!("TLS to PostgreSQL at {endpoint} failed: {e} ({fix})");
    }
    if let sqlx::Error::Database(db) = err {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let fix = match code.as_str() {
            "28P01" | "28000" => {
                format!(" (check the user \"{user}\" and its password in the URL)")
            }
            "3D000" => format!(" (create it: createdb -h HOST -p PORT {database})"),
            "53300" => {
                " (too many connections: lower max_connections or raise the server's)".into()
            }
            _ => String::new(),
        };
        return format!("PostgreSQL at {endpoint} refused: {}{fix}", db.message());
    }
    format!(
        "cannot reach PostgreSQL at {endpoint}: {err} (is the server running and accepting TCP connections on {endpoint}? check the host and port in the URL)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(name: &str) -> UrlParams {
        UrlParams {
            schema: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn spoolers_params_are_split_off() {
        assert_eq!(
            take_params("postgres://u@h:5432/db?schema=t1").unwrap(),
            ("postgres://u@h:5432/db".to_string(), schema("t1"))
        );
        assert_eq!(
            take_params("postgres://u@h/db?sslmode=disable&schema=t1&application_name=x").unwrap(),
            (
                "postgres://u@h/db?sslmode=disable&application_name=x".to_string(),
                schema("t1")
            )
        );
        assert_eq!(
            take_params("postgres://u@h/db").unwrap(),
            ("postgres://u@h/db".to_string(), UrlParams::default())
        );
        let (url, p) = take_params(
            "postgres://u@h/db?connect_timeout=3&sslmode=require&statement_timeout=1500",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        assert_eq!(p.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(p.statement_timeout, Some(Duration::from_millis(1500)));
        let (_, p) =
            take_params("postgres://h/db?connect_timeout=500ms&statement_timeout=2m").unwrap();
        assert_eq!(p.connect_timeout, Some(Duration::from_millis(500)));
        assert_eq!(p.statement_timeout, Some(Duration::from_secs(120)));
        for bad in [
            "connect_timeout=soon",
            "statement_timeout=0",
            "connect_timeout=",
        ] {
            let err = take_params(&format!("postgres://h/db?{bad}")).unwrap_err();
            assert!(
                err.to_string().contains(bad.split('=').next().unwrap()),
                "{err}"
            );
        }
    }

    #[test]
    fn schema_names_are_identifiers() {
        assert!(validate_schema("spooler").is_ok());
        assert!(validate_schema("t_1").is_ok());
        for bad in ["", "1a", "a-b", "a\"b", "a;drop", &"x".repeat(51)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
