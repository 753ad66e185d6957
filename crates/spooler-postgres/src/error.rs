//! Maps sqlx and PostgreSQL errors to spooler's backend-neutral [`StoreError`] kinds.

use spooler_core::StoreError;

/// SQLSTATE classes and codes that mean "try again later": connection exceptions (class 08),
/// operator intervention (57: statement timeout, admin shutdown, cannot connect now) and
/// insufficient resources (53: too many connections).
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57") || code.starts_with("53")
}

/// How often a statement is run again after a row it touched moved partition under it.
const MOVED_RETRIES: u32 = 5;

/// Runs a one-statement operation again when PostgreSQL reports a serialization failure. Under
/// READ COMMITTED that happens when a row the statement was about to lock or update was moved to
/// the other partition of `jobs` (a job finished, was cancelled or retried) by a transaction that
/// committed meanwhile; run again, the statement sees the row where it is now.
pub(crate) async fn again_if_moved<T, F, Fut>(mut run: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match run().await {
            Err(e) if tries < MOVED_RETRIES && is_serialization_failure(&e) => tries += 1,
            other => return other,
        }
    }
}

fn is_serialization_failure(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40001")
}

/// Converts a sqlx error into a [`StoreError`]. The messages come from the server or the socket and
/// never contain the connection URL, so no password can leak through them.
pub(crate) fn map(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = match db.constraint() {
                Some(constraint) => format!("{} (constraint {constraint})", db.message()),
                None => db.message().to_string(),
            };
            match code.as_str() {
                "23505" => StoreError::UniqueViolation { message },
                "40001" | "40P01" => StoreError::SerializationFailure { message },
                c if is_unavailable_code(c) => StoreError::Unavailable {
                    message: format!("{message} (SQLSTATE {c})"),
                },
                c => StoreError::Database {
                    message: format!("{message} (SQLSTATE {c})"),
                },
            }
        }
        sqlx::Error::Io(e) => StoreError::Unavailable {
            message: format!("connection to PostgreSQL failed: {e}"),
        },
        sqlx::Error::Tls(e) => StoreError::Unavailable {
            message: format!("TLS error talking to PostgreSQL: {e}"),
        },
        sqlx::Error::PoolTimedOut => StoreError::Unavailable {
            message: "timed out waiting for a PostgreSQL connection (is the server up, or the pool too small?)".into(),
        },
        sqlx::Error::PoolClosed => StoreError::Unavailable {
            message: "the connection pool is closed".into(),
        },
        sqlx::Error::WorkerCrashed => StoreError::Unavailable {
            message: "the connection's background worker stopped".into(),
        },
        sqlx::Error::Protocol(m) => StoreError::Unavailable {
            message: format!("protocol error talking to PostgreSQL: {m}"),
        },
        sqlx::Error::ColumnDecode { index, source } => StoreError::Decode {
            id: 0,
            message: format!("column {index}: {source}"),
        },
        other => StoreError::Database {
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_transient() {
        let e = map(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        assert!(e.is_transient(), "{e}");
        assert!(map(sqlx::Error::PoolTimedOut).is_transient());
    }

    #[test]
    fn unavailable_codes() {
        for code in ["08006", "57014", "57P01", "53300"] {
            assert!(is_unavailable_code(code), "{code}");
        }
        assert!(!is_unavailable_code("23505"));
    }
}
