//! Unique jobs within a period: a queue's `unique = { by = ["kind", "args"], period = "1h" }`
//! makes an enqueue of a job whose kind and args (and, if asked, queue) match one enqueued within
//! the period answer that job instead of inserting another.
//!
//! The rule is a queue setting ([`QueueSettings::unique`]), applied by every store's insert. The
//! key a job is matched by is made once, here ([`UniquePeriod::key`]); a store holds it in its key
//! ledger (the table spill replays use) until the period ends, claimed in the transaction that
//! inserts the job, so concurrent enqueues of one job in any number of processes make one job.
//! A key is free again once its period passed or its job was deleted. A job with its own
//! `unique_key` is deduplicated by that key alone.
//!
//! [`QueueSettings::unique`]: crate::store::QueueSettings::unique

use crate::job::NewJob;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// What makes two jobs the same, and for how long after the first was enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniquePeriod {
    /// Jobs match when these fields are equal.
    pub by: UniqueBy,
    /// How long after a job was enqueued another like it is answered with it.
    #[serde(with = "crate::job::millis", rename = "period_ms")]
    pub period: Duration,
}

/// The fields two jobs must share to be the same job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueBy {
    /// The kind.
    pub kind: bool,
    /// The arguments (as JSON values: object keys in any order are equal).
    pub args: bool,
    /// The queue.
    pub queue: bool,
}

impl UniqueBy {
    /// From the names `unique.by` lists: `"kind"`, `"args"`, `"queue"`; at least one.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut by = Self {
            kind: false,
            args: false,
            queue: false,
        };
        for name in names {
            match name.as_str() {
                "kind" => by.kind = true,
                "args" => by.args = true,
                "queue" => by.queue = true,
                other => {
                    return Err(format!(
                        "\"{other}\" is not a field jobs can be unique by (expected \"kind\", \"args\" or \"queue\")"
                    ));
                }
            }
        }
        if !(by.kind || by.args || by.queue) {
            return Err("name at least one of \"kind\", \"args\" and \"queue\"".into());
        }
        Ok(by)
    }
}

impl UniquePeriod {
    /// The ledger key `job` is matched by: a digest of the fields [`UniqueBy`] names, so large
    /// arguments make a short key. Equal for jobs whose fields are equal as JSON.
    pub fn key(&self, job: &NewJob) -> String {
        // Each field is written with its length, so no value can pass for a field boundary.
        let mut text = String::from("spooler-unique-v1");
        let mut field = |name: &str, value: &str| {
            text.push_str(&format!("\0{name}\0{}\0{value}", value.len()));
        };
        if self.by.kind {
            field("kind", &job.kind);
        }
        if self.by.queue {
            field("queue", &job.queue);
        }
        if self.by.args {
            let mut args = String::new();
            canonical(&job.args, &mut args);
            field("args", &args);
        }
        let digest = Sha256::digest(text.as_bytes());
        let mut key = String::with_capacity(7 + 64);
        key.push_str("unique:");
        for byte in digest {
            key.push_str(&format!("{byte:02x}"));
        }
        key
    }

    /// Until when a key claimed at `now` holds.
    pub fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        TimeDelta::from_std(self.period)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The ledger key `job` is held by, and its queue's period, when its queue (with `settings`) makes
/// jobs unique within a period and the job has no `unique_key` of its own.
pub fn period_key(
    settings: Option<&crate::store::QueueSettings>,
    job: &NewJob,
) -> Option<(String, UniquePeriod)> {
    if job.unique_key.is_some() {
        return None;
    }
    let period = settings?.unique?;
    Some((period.key(job), period))
}

/// `v` as JSON with every object's keys sorted, whatever order the map keeps them in.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn period(by: &[&str]) -> UniquePeriod {
        UniquePeriod {
            by: UniqueBy::parse(&by.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
            period: Duration::from_secs(3600),
        }
    }

    #[test]
    fn jobs_equal_in_the_named_fields_share_a_key() {
        let p = period(&["kind", "args"]);
        let a = NewJob::new(
            "mail",
            json!({"to": "a@example.com", "n": [1, {"x": 1, "y": 2}]}),
        );
        let same = NewJob::new(
            "mail",
            json!({"n": [1, {"y": 2, "x": 1}], "to": "a@example.com"}),
        )
        .queue("other");
        assert_eq!(p.key(&a), p.key(&same), "key order and queue do not matter");
        assert!(p.key(&a).starts_with("unique:"));
        assert_eq!(p.key(&a).len(), 7 + 64);
        let other_args = NewJob::new("mail", json!({"to": "b@example.com"}));
        let other_kind = NewJob::new("sms", a.args.clone());
        assert_ne!(p.key(&a), p.key(&other_args));
        assert_ne!(p.key(&a), p.key(&other_kind));
        let with_queue = period(&["kind", "args", "queue"]);
        assert_ne!(with_queue.key(&a), with_queue.key(&same));
        // Field boundaries cannot be forged by the values.
        let k = period(&["kind", "queue"]);
        assert_ne!(
            k.key(&NewJob::new("a\0queue\0b", json!(null))),
            k.key(&NewJob::new("a", json!(null)).queue("b"))
        );
    }

    #[test]
    fn unique_by_names_known_fields_only() {
        assert!(UniqueBy::parse(&["kind".into(), "args".into()]).is_ok());
        assert!(
            UniqueBy::parse(&["priority".into()])
                .unwrap_err()
                .contains("priority")
        );
        assert!(UniqueBy::parse(&[]).is_err());
        let p = period(&["kind"]);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(p.until(now), now + TimeDelta::hours(1));
    }
}
