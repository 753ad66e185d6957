//! The `file` kind: append one line to a file and fsync it, a durable local sink.

use super::Args;
use async_trait::async_trait;
use serde_json::{Value, json};
use spooler::{Handler, JobContext, JobError};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub(crate) const ARGS: &[&str] = &["path", "payload"];
pub(crate) const REQUIRED: &[&str] = &["path"];

/// Appends the `payload` argument (a string as is, other JSON as its text) or, without one, the
/// job's whole args as JSON, as one line. A string payload holding a line break is written as a
/// JSON string so that each job stays one line. Lines from concurrent jobs never interleave.
/// Only paths under the allowed directories are written ([`FileKind::new`]).
///
/// A `file` job reached by a route (the spill at the end of a chain) writes instead the message it
/// carries, [`crate::replay::spill_line`]: what `spooler replay` needs to send it back to the start of its chain.
/// Its args hold the original's beside the route's `path`, so only `path` is read.
#[derive(Debug, Clone, Default)]
pub struct FileKind {
    locks: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
    allow: FileAllow,
}

/// The directories the `file` kind may write under (the config's `[file] allow`); by default the
/// working directory. A path with a `..` part is refused outright, so the rule is lexical and
/// cannot be walked around.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAllow {
    dirs: Vec<PathBuf>,
}

impl FileAllow {
    /// Paths under `dirs` (relative ones are taken from the working directory); none given means
    /// the working directory.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The path to write for `path`, or why it may not be written.
    pub fn check(&self, path: &str) -> Result<PathBuf, String> {
        let given = Path::new(path);
        if given
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!(
                "\"{path}\" has a \"..\" part; give a path under an allowed directory"
            ));
        }
        let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
        let full = cwd.join(given);
        let dirs: Vec<PathBuf> = if self.dirs.is_empty() {
            vec![cwd.clone()]
        } else {
            self.dirs.iter().map(|d| cwd.join(d)).collect()
        };
        if dirs.iter().any(|d| full.starts_with(d) && full != *d) {
            Ok(full)
        } else {
            Err(format!(
                "\"{path}\" is not under an allowed directory ({}; set [file] allow in the config)",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

impl FileKind {
    /// A `file` kind writing only under `allow`.
    pub fn new(allow: FileAllow) -> Self {
        Self {
            locks: Arc::default(),
            allow,
        }
    }

    fn lock_for(&self, path: &Path) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .expect("file locks")
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }
}

#[async_trait]
impl Handler for FileKind {
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Option<Value>, JobError> {
        let spill = crate::replay::spill_line(ctx.job());
        let a = match spill {
            Some(_) => Args::among("file", &args)?,
            None => Args::new("file", &args, ARGS)?,
        };
        let path = self
            .allow
            .check(a.required_str("path")?)
            .map_err(|e| JobError::fail(format!("file job: argument \"path\": {e}")))?;
        let mut line = match (spill, a.get("payload")) {
            (Some(spill), _) => spill.to_string(),
            (None, Some(Value::String(s))) if s.contains(['\n', '\r']) => {
                Value::String(s.clone()).to_string()
            }
            (None, Some(Value::String(s))) => s.clone(),
            (None, Some(other)) => other.to_string(),
            (None, None) => args.to_string(),
        };
        line.push('\n');
        let lock = self.lock_for(&path);
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().expect("file lock");
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(line.as_bytes())?;
            file.sync_data()?;
            Ok::<_, std::io::Error>(line.len())
        })
        .await
        .map_err(|e| JobError::retry(format!("appending to {shown}: {e}")))?
        .map(|bytes| Some(json!({ "path": shown, "bytes": bytes })))
        .map_err(|e| JobError::retry(format!("appending to {shown}: {e}")))
    }
}
