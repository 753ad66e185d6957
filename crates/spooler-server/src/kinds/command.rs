//! The `command` kind: run an allowed program; its exit code and output tails are the result.

use super::{Args, tail};
use async_trait::async_trait;
use serde_json::{Value, json};
use spooler::{Handler, JobContext, JobError, format_duration};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

pub(crate) const ARGS: &[&str] = &["program", "args", "env", "timeout"];
pub(crate) const REQUIRED: &[&str] = &["program"];
/// Bytes of stdout and of stderr kept.
const TAIL: usize = 2048;

/// Runs programs named in the config's `[commands] allow` list, and no others, with the server's
/// environment minus its `SPOOLER_*` variables, plus the job's `env`.
#[derive(Debug, Clone)]
pub struct CommandKind {
    allow: Vec<String>,
}

impl CommandKind {
    /// A kind that may run exactly the programs in `allow` (as written there).
    pub fn new(allow: Vec<String>) -> Self {
        Self { allow }
    }
}

/// Reads a stream to its end, keeping only the last `TAIL` bytes.
async fn read_tail(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * TAIL {
                    kept.drain(..kept.len() - TAIL);
                }
            }
        }
    }
}

fn text_tail(bytes: &[u8]) -> String {
    tail(&String::from_utf8_lossy(bytes), TAIL).to_string()
}

#[async_trait]
impl Handler for CommandKind {
    async fn run(&self, args: Value, _ctx: JobContext) -> Result<Option<Value>, JobError> {
        let a = Args::new("command", &args, ARGS)?;
        let program = a.required_str("program")?;
        if !self.allow.iter().any(|p| p == program) {
            return Err(JobError::fail(format!(
                "command job: program \"{program}\" is not allowed (add it to [commands] allow in the config)"
            )));
        }
        let argv = a.string_list("args")?;
        let env = a.string_map("env")?;
        let timeout = a.duration("timeout", Duration::from_secs(60))?;

        let mut command = Command::new(program);
        // The server's own settings (its token, the store URL and its password) are not the
        // program's business: it inherits the rest of the environment, plus the job's `env`.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPOOLER_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(&argv)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| JobError::retry(format!("cannot start {program}: {e}")))?;
        let stdout = tokio::spawn(read_tail(child.stdout.take().expect("piped stdout")));
        let stderr = tokio::spawn(read_tail(child.stderr.take().expect("piped stderr")));
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return Err(JobError::retry(format!("waiting for {program}: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                stdout.abort();
                stderr.abort();
                return Err(JobError::retry(format!(
                    "{program} timed out after {} and was killed",
                    format_duration(timeout)
                )));
            }
        };
        let stdout_tail = text_tail(&stdout.await.unwrap_or_default());
        let stderr_tail = text_tail(&stderr.await.unwrap_or_default());
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => format!("was killed ({status})"),
            };
            let output = if stderr_tail.trim().is_empty() {
                &stdout_tail
            } else {
                &stderr_tail
            };
            return Err(JobError::retry(format!(
                "{program} {how}: {}",
                tail(output.trim_end(), 500)
            )));
        }
        Ok(Some(json!({
            "exit_code": status.code(),
            "stdout_tail": stdout_tail,
            "stderr_tail": stderr_tail,
        })))
    }
}
