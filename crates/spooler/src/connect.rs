//! Opening a store from a URL: the only place in the library that names a backend, by URL scheme.

use crate::Error;
use spooler_core::{Clock, Store, StoreError};
use std::sync::Arc;

/// How [`connect_with`] opens a store.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The clock the store reads instead of its own (for tests); `None`, the default, is the
    /// database's clock on Postgres and the system's on SQLite.
    pub clock: Option<Arc<dyn Clock>>,
    /// Apply pending migrations after opening (default true).
    pub migrate: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            clock: None,
            migrate: true,
        }
    }
}

/// The backend a URL's scheme names, when this build has it.
enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

#[cfg_attr(
    not(all(feature = "sqlite", feature = "postgres")),
    allow(unreachable_code)
)]
fn backend(url: &str) -> Result<Backend, Error> {
    Ok(match url.split(':').next().unwrap_or_default() {
        #[cfg(feature = "sqlite")]
        "sqlite" => Backend::Sqlite,
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Backend::Postgres,
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => return Err(feature_off("sqlite")),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => return Err(feature_off("postgres")),
        _ => {
            return Err(StoreError::UnsupportedUrl {
                url: spooler_core::error::redact_url(url),
            }
            .into());
        }
    })
}

/// Opens and migrates the store a URL names: `sqlite://path`, `sqlite::memory:` or `postgres://…`.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, Error> {
    connect_with(url, ConnectOptions::default()).await
}

/// Opens the store a URL names, with options.
#[cfg_attr(
    not(all(feature = "sqlite", feature = "postgres")),
    allow(unreachable_code, unused_variables)
)]
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Arc<dyn Store>, Error> {
    let store: Arc<dyn Store> = match backend(url)? {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            let mut opts = spooler_sqlite::SqliteOptions::default();
            if let Some(clock) = &options.clock {
                opts.clock = clock.clone();
            }
            Arc::new(spooler_sqlite::SqliteStore::open_with(url, opts)?)
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            let opts = spooler_postgres::PgOptions {
                clock: options.clock.clone(),
                ..Default::default()
            };
            Arc::new(spooler_postgres::PgStore::connect_with(url, opts).await?)
        }
    };
    if options.migrate {
        store.migrate().await?;
    }
    Ok(store)
}

/// The SQL that creates or upgrades the schema of the store a URL names, past version `after`
/// (0: from nothing), recording each migration as [`Store::migrate`] would: for users who run
/// migrations with their own tool. Connects to nothing.
#[cfg_attr(
    not(all(feature = "sqlite", feature = "postgres")),
    allow(unreachable_code, unused_variables)
)]
pub fn migration_script(url: &str, after: i64) -> Result<String, Error> {
    Ok(match backend(url)? {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => spooler_sqlite::SqliteStore::migration_script(after),
        #[cfg(feature = "postgres")]
        Backend::Postgres => spooler_postgres::PgStore::migration_script(url, after)?,
    })
}

#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn feature_off(backend: &'static str) -> Error {
    StoreError::NotSupported {
        what: "this URL scheme (enable the spooler crate feature of the same name)",
        backend,
    }
    .into()
}
