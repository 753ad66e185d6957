//! Mapping SQLite errors to spooler's backend-neutral [`StoreError`] kinds, each naming the database.

use rusqlite::ErrorCode;
use spooler_core::StoreError;

/// An error inside a store operation: SQLite's, or one already in spooler's terms.
/// SQLite errors are mapped once, by [`OpError::into_store`], where the database's name is known.
#[derive(Debug)]
pub(crate) enum OpError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Sql(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl OpError {
    /// The error in spooler's terms; `label` names the database (its path or `:memory:`).
    pub(crate) fn into_store(self, label: &str) -> StoreError {
        match self {
            OpError::Sql(e) => map_sql(e, label),
            OpError::Store(e) => e,
        }
    }
}

/// Whether `e` says another connection holds a lock this one waited for (or would have).
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Maps a SQLite error on the database `label` to a [`StoreError`] kind.
pub(crate) fn map_sql(e: rusqlite::Error, label: &str) -> StoreError {
    let (code, extended) = match &e {
        rusqlite::Error::SqliteFailure(f, _) => (Some(f.code), f.extended_code),
        _ => (None, 0),
    };
    let text = e.to_string();
    match code {
        _ if is_busy(&e) => StoreError::Unavailable {
            message: format!(
                "database {label} is locked by another connection and the busy timeout expired: {text}"
            ),
        },
        Some(ErrorCode::ConstraintViolation)
            if extended == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || extended == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::UniqueViolation {
                message: format!("{text} (in {label})"),
            }
        }
        Some(ErrorCode::NotADatabase) => StoreError::Open {
            url: label.to_string(),
            message: format!("file is not a database (is {label} a SQLite database file?)"),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Database {
            message: format!("database {label} is corrupt: {text}"),
        },
        Some(ErrorCode::CannotOpen) => StoreError::Open {
            url: label.to_string(),
            message: text,
        },
        Some(ErrorCode::ReadOnly) => StoreError::Database {
            message: format!(
                "database {label} is read-only: {text} (check the file's and directory's permissions)"
            ),
        },
        Some(ErrorCode::DiskFull) => StoreError::Unavailable {
            message: format!("disk full writing {label}: {text}"),
        },
        _ if text.contains("no such table: spooler_") => StoreError::Database {
            message: format!(
                "store {label} is not migrated ({text}): run `spooler migrate` or call Store::migrate"
            ),
        },
        _ => StoreError::Database {
            message: format!("{text} (in {label})"),
        },
    }
}

/// A copy of `e` for every caller of a batch that failed as a whole (`StoreError` is not `Clone`).
pub(crate) fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { message } => StoreError::Unavailable {
            message: message.clone(),
        },
        StoreError::Open { url, message } => StoreError::Open {
            url: url.clone(),
            message: message.clone(),
        },
        StoreError::UniqueViolation { message } => StoreError::UniqueViolation {
            message: message.clone(),
        },
        StoreError::SerializationFailure { message } => StoreError::SerializationFailure {
            message: message.clone(),
        },
        StoreError::Database { message } => StoreError::Database {
            message: message.clone(),
        },
        other => StoreError::Database {
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32, msg: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(msg.into()))
    }

    #[test]
    fn kinds_name_the_database() {
        match map_sql(
            failure(rusqlite::ffi::SQLITE_BUSY, "database is locked"),
            "/tmp/j.db",
        ) {
            StoreError::Unavailable { message } => assert!(message.contains("/tmp/j.db")),
            other => panic!("{other:?}"),
        }
        match map_sql(
            failure(
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE,
                "UNIQUE constraint failed",
            ),
            "j.db",
        ) {
            StoreError::UniqueViolation { message } => assert!(message.contains("j.db")),
            other => panic!("{other:?}"),
        }
        match map_sql(
            failure(rusqlite::ffi::SQLITE_NOTADB, "file is not a database"),
            "x.db",
        ) {
            StoreError::Open { url, message } => {
                assert_eq!(url, "x.db");
                assert!(message.contains("is x.db a SQLite database file?"));
            }
            other => panic!("{other:?}"),
        }
        match map_sql(failure(1, "no such table: spooler_jobs"), "x.db") {
            StoreError::Database { message } => assert!(message.contains("not migrated")),
            other => panic!("{other:?}"),
        }
    }
}
