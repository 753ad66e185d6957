//! Parsing `sqlite:` URLs into a database file path or an in-memory database.

use spooler_core::StoreError;
use std::path::PathBuf;

/// Where a `sqlite:` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteTarget {
    /// A private in-memory database (`sqlite::memory:`, `sqlite://:memory:`), gone when the store is dropped.
    Memory,
    /// A database file; relative paths are relative to the current directory.
    File(PathBuf),
}

/// Parses `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` or `sqlite://:memory:`.
///
/// `sqlite:///abs/path.db` names an absolute path. Anything else is [`StoreError::UnsupportedUrl`].
pub fn parse_url(url: &str) -> Result<SqliteTarget, StoreError> {
    let unsupported = || StoreError::UnsupportedUrl {
        url: url.to_string(),
    };
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(unsupported)?;
    match rest {
        "" => Err(unsupported()),
        ":memory:" => Ok(SqliteTarget::Memory),
        path => Ok(SqliteTarget::File(PathBuf::from(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(
            parse_url("sqlite://jobs.db").unwrap(),
            SqliteTarget::File("jobs.db".into())
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/jobs.db").unwrap(),
            SqliteTarget::File("/var/lib/jobs.db".into())
        );
        assert_eq!(
            parse_url("sqlite:data/jobs.db").unwrap(),
            SqliteTarget::File("data/jobs.db".into())
        );
        assert_eq!(parse_url("sqlite::memory:").unwrap(), SqliteTarget::Memory);
        assert_eq!(
            parse_url("sqlite://:memory:").unwrap(),
            SqliteTarget::Memory
        );
    }

    #[test]
    fn other_schemes_are_unsupported() {
        for url in [
            "postgres://db/jobs",
            "jobs.db",
            "sqlite://",
            "sqlite:",
            "mysql:x",
        ] {
            match parse_url(url) {
                Err(StoreError::UnsupportedUrl { url: u }) => assert_eq!(u, url),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
