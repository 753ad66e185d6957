//! The `file` kind: append one line to a file and fsync it, a durable local sink.

use super::Args;
use async_trait::async_trait;
use serde_json::{Value, json};
use spooler::{Handler, JobContext, JobError};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const ARGS: &[&str] = &["path", "payload"];

/// Appends the `payload` argument (a string as is, other JSON as its text) or, without one, the
/// job's whole args as JSON, as one line. A string payload holding a line break is written as a
/// JSON string so that each job stays one line. Lines from concurrent jobs never interleave.
#[derive(Debug, Clone, Default)]
pub struct FileKind {
    locks: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
}

impl FileKind {
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
    async fn run(&self, args: Value, _ctx: JobContext) -> Result<Option<Value>, JobError> {
        let a = Args::new("file", &args, ARGS)?;
        let path = PathBuf::from(a.required_str("path")?);
        let mut line = match a.get("payload") {
            Some(Value::String(s)) if s.contains(['\n', '\r']) => {
                Value::String(s.clone()).to_string()
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => args.to_string(),
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
