//! The job server's built-in job kinds, as [`spooler::Handler`]s: `http`, `tcp`, `command`, `file`,
//! and the diagnostic `noop` and `sleep`.
//!
//! Bad arguments (a missing `url`, a wrong type, an unknown argument) fail the job at once without a
//! retry ([`JobError::Fail`]), naming the argument. Network and process failures are retried on the
//! queue's policy, naming what they concern (URL and status, host:port, program, path).

mod command;
mod diag;
mod file;
mod http;
mod net;
mod tcp;

pub use command::CommandKind;
pub use diag::{NoopKind, SleepKind};
pub use file::{FileAllow, FileKind};
pub use http::{HttpKind, SigningSecret};
pub use net::NetPolicy;
pub use tcp::TcpKind;

use serde_json::{Map, Value};
use spooler::{Handler, JobError, parse_duration};
use std::sync::Arc;
use std::time::Duration;

/// Names of the built-in kinds.
pub const BUILTIN_KINDS: &[&str] = &["http", "tcp", "command", "file", "noop", "sleep"];

/// Every built-in kind with its handler. `allowed_commands` is the `[commands] allow` list of the
/// config: the only programs the `command` kind may run; `file_allow`, the `[file] allow`
/// directories the `file` kind may write under; `http_signing`, the key `http` deliveries are
/// signed with; `net`, where `http` and `tcp` jobs may go.
pub fn builtin(
    allowed_commands: Vec<String>,
    file_allow: FileAllow,
    http_signing: Option<SigningSecret>,
    net: NetPolicy,
) -> Vec<(&'static str, Arc<dyn Handler>)> {
    vec![
        (
            "http",
            Arc::new(HttpKind::with_net(net.clone()).signing(http_signing)) as Arc<dyn Handler>,
        ),
        ("tcp", Arc::new(TcpKind::new(net))),
        ("command", Arc::new(CommandKind::new(allowed_commands))),
        ("file", Arc::new(FileKind::new(file_allow))),
        ("noop", Arc::new(NoopKind)),
        ("sleep", Arc::new(SleepKind)),
    ]
}

/// Checks a built-in kind's arguments when it is enqueued, so a mistake (`"uri"` for `"url"`, a
/// missing `address`, a `file` path outside `[file] allow`) is answered at once instead of failing
/// later: the arguments are an object of known names, the required ones present as strings.
/// Kinds that are not built in pass.
pub fn check_args(
    kind: &str,
    args: &Value,
    file_allow: &FileAllow,
    net: &NetPolicy,
) -> Result<(), String> {
    let (name, known, required): (&'static str, &[&str], &[&str]) = match kind {
        "http" => ("http", http::ARGS, http::REQUIRED),
        "tcp" => ("tcp", tcp::ARGS, tcp::REQUIRED),
        "command" => ("command", command::ARGS, command::REQUIRED),
        "file" => ("file", file::ARGS, file::REQUIRED),
        "sleep" => ("sleep", diag::SLEEP_ARGS, diag::SLEEP_ARGS),
        _ => return Ok(()),
    };
    let message = |e: JobError| match e {
        JobError::Fail(m) | JobError::Retry(m) | JobError::Cancel(m) => m,
        JobError::Snooze(_) => e.to_string(),
    };
    let a = Args::new(name, args, known).map_err(message)?;
    for key in required {
        if name == "sleep" {
            a.duration(key, Duration::ZERO).map_err(message)?;
            if a.get(key).is_none() {
                return Err(format!("sleep job: argument \"{key}\" is required"));
            }
            continue;
        }
        let value = a.required_str(key).map_err(message)?;
        net::check_target(net, name, key, value)?;
        if name == "file" {
            file_allow
                .check(value)
                .map_err(|e| format!("file job: argument \"path\": {e}"))?;
        }
    }
    Ok(())
}

/// Reads a kind's arguments, failing (without retry) with messages that name the argument.
pub(crate) struct Args<'a> {
    kind: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    /// Checks `args` is an object with only `known` keys.
    pub(crate) fn new(
        kind: &'static str,
        args: &'a Value,
        known: &[&str],
    ) -> Result<Self, JobError> {
        let map = args.as_object().ok_or_else(|| {
            JobError::fail(format!(
                "{kind} job: args must be an object (with {}), not {}",
                known.join(", "),
                crate::wire::type_name(args)
            ))
        })?;
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(JobError::fail(format!(
                "{kind} job: unknown argument \"{key}\" (accepted: {})",
                known.join(", ")
            )));
        }
        Ok(Self { kind, map })
    }

    /// Like [`Args::new`], but any other argument is let through (a routed job carries the
    /// original's beside its own).
    pub(crate) fn among(kind: &'static str, args: &'a Value) -> Result<Self, JobError> {
        let map = args.as_object().ok_or_else(|| {
            JobError::fail(format!(
                "{kind} job: args must be an object, not {}",
                crate::wire::type_name(args)
            ))
        })?;
        Ok(Self { kind, map })
    }

    pub(crate) fn wrong(&self, key: &str, expected: &str) -> JobError {
        let got = self.map.get(key).map_or("nothing", crate::wire::type_name);
        JobError::fail(format!(
            "{} job: argument \"{key}\" must be {expected}, not {got}",
            self.kind
        ))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn required_str(&self, key: &str) -> Result<&'a str, JobError> {
        match self.get(key) {
            None => Err(JobError::fail(format!(
                "{} job: argument \"{key}\" is required",
                self.kind
            ))),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, JobError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, JobError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    /// A duration: a string like `"5s"` or a number of seconds.
    pub(crate) fn duration(&self, key: &str, default: Duration) -> Result<Duration, JobError> {
        let d = match self.get(key) {
            None => return Ok(default),
            Some(Value::String(s)) => parse_duration(s).map_err(|e| {
                JobError::fail(format!("{} job: argument \"{key}\": {e}", self.kind))
            })?,
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e10)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| self.wrong(key, "a duration like \"5s\""))?,
            Some(_) => return Err(self.wrong(key, "a duration like \"5s\"")),
        };
        if d.is_zero() {
            return Err(JobError::fail(format!(
                "{} job: argument \"{key}\" must be greater than zero",
                self.kind
            )));
        }
        Ok(d)
    }

    /// An object whose values are all strings (headers, env).
    pub(crate) fn string_map(&self, key: &str) -> Result<Vec<(String, String)>, JobError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(JobError::fail(format!(
                        "{} job: argument \"{key}.{k}\" must be a string, not {}",
                        self.kind,
                        crate::wire::type_name(v)
                    ))),
                })
                .collect(),
            Some(_) => Err(self.wrong(key, "an object of strings")),
        }
    }

    /// An array of strings.
    pub(crate) fn string_list(&self, key: &str) -> Result<Vec<String>, JobError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.wrong(key, "an array of strings"))
                })
                .collect(),
            Some(_) => Err(self.wrong(key, "an array of strings")),
        }
    }
}

/// At most `max` bytes of `text` from its start, cut on a character boundary.
pub(crate) fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// At most `max` bytes of `text` from its end, cut on a character boundary.
pub(crate) fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_args_fail_without_retry_naming_the_argument() {
        let args = json!({"url": 5});
        let a = Args::new("http", &args, &["url"]).unwrap();
        match a.required_str("url") {
            Err(JobError::Fail(m)) => assert!(m.contains("\"url\""), "{m}"),
            other => panic!("{other:?}"),
        }
        match Args::new("http", &json!({"ur": "x"}), &["url"]) {
            Err(JobError::Fail(m)) => assert!(m.contains("\"ur\""), "{m}"),
            _ => panic!("unknown argument accepted"),
        }
    }

    #[test]
    fn head_and_tail_cut_on_characters() {
        assert_eq!(head("héllo", 2), "h");
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
