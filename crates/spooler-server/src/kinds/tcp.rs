//! The `tcp` kind: connect to `address`, write `payload` (plus a newline), close.

use super::Args;
use async_trait::async_trait;
use serde_json::{Value, json};
use spooler::{Handler, JobContext, JobError, format_duration};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(crate) const REQUIRED: &[&str] = &["address"];
pub(crate) const ARGS: &[&str] = &[
    "address",
    "payload",
    "newline",
    "connect_timeout",
    "write_timeout",
];

/// Delivers a payload over TCP. Errors name host:port and, for timeouts, which one.
#[derive(Debug, Clone, Default)]
pub struct TcpKind {
    net: super::NetPolicy,
}

impl TcpKind {
    /// A kind going only where `net` lets it (checked on each resolved address).
    pub fn new(net: super::NetPolicy) -> Self {
        Self { net }
    }
}

#[async_trait]
impl Handler for TcpKind {
    async fn run(&self, args: Value, _ctx: JobContext) -> Result<Option<Value>, JobError> {
        let a = Args::new("tcp", &args, ARGS)?;
        let address = a.required_str("address")?;
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(JobError::fail(format!(
                    "tcp job: argument \"address\": \"{address}\" must be host:port"
                )));
            }
        }
        let mut payload = match a.get("payload") {
            Some(Value::String(s)) => s.clone().into_bytes(),
            // Any other JSON is sent as its compact text.
            Some(other) => other.to_string().into_bytes(),
            None => {
                return Err(JobError::fail("tcp job: argument \"payload\" is required"));
            }
        };
        if a.opt_bool("newline")?.unwrap_or(true) {
            payload.push(b'\n');
        }
        let connect_timeout = a.duration("connect_timeout", Duration::from_secs(5))?;
        let write_timeout = a.duration("write_timeout", Duration::from_secs(5))?;

        super::net::check_target(&self.net, "tcp", "address", address).map_err(JobError::fail)?;
        let host = super::net::host_of(address);
        let connect = async {
            let resolved: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host(address).await?.collect();
            let addrs = super::net::allowed(&self.net, host, resolved)
                .map_err(|e| std::io::Error::other(super::net::Refused(e)))?;
            TcpStream::connect(&addrs[..]).await
        };
        let mut stream = match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) if e.get_ref().is_some_and(|e| e.is::<super::net::Refused>()) => {
                return Err(JobError::fail(format!(
                    "tcp job: argument \"address\": {e}"
                )));
            }
            Ok(Err(e)) => {
                return Err(JobError::retry(format!("cannot connect to {address}: {e}")));
            }
            Err(_) => {
                return Err(JobError::retry(format!(
                    "cannot connect to {address}: timed out after {} (connect_timeout)",
                    format_duration(connect_timeout)
                )));
            }
        };
        let write = async {
            stream.write_all(&payload).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(())) => Ok(Some(json!({ "bytes": payload.len() }))),
            Ok(Err(e)) => Err(JobError::retry(format!("writing to {address}: {e}"))),
            Err(_) => Err(JobError::retry(format!(
                "writing to {address}: timed out after {} (write_timeout)",
                format_duration(write_timeout)
            ))),
        }
    }
}
