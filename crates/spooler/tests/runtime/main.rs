//! The runtime suite: enqueue → work → retry → complete, run on every backend (SQLite always;
//! Postgres when `SPOOLER_TEST_POSTGRES` is set, as CI does).

mod support;

mod claims;
mod failures;
mod faults;
mod lifecycle;
mod schedules;
mod shutdown;
mod spans;
#[cfg(feature = "otel")]
mod trace_context;
#[cfg(feature = "postgres")]
mod transactional;

/// Generates one test per backend for each named case: `sqlite::case` and `postgres::case`.
macro_rules! on_every_backend {
    ($module:ident: $($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::support::Backend::sqlite().await;
                    super::$case(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = crate::support::Backend::postgres().await else {
                        return;
                    };
                    super::$case(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;
