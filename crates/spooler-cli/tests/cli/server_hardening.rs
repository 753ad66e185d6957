//! The listener under hostile clients, against the real binary: connections that never finish
//! their headers or body under a descriptor limit, idle keep-alive connections, requests hyper
//! refuses before routing (answered in JSON), and a thousand long polls on one job, measured in
//! CPU ticks.

use crate::server_support::{ServeOptions, Server, spooler, wait_for};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A `spooler serve --no-worker` started through `sh -c 'ulimit -n LIMIT; exec ...'`, so the
/// server runs under that descriptor limit.
struct Limited {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    addr: SocketAddr,
}

impl Limited {
    async fn start(descriptors: u32, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let store = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {descriptors} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_spooler"))
            .args(["serve", "--no-worker", "--store", &store])
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(flags);
        // The same environment as `server_support::spooler()` gives.
        let base = spooler();
        for (k, v) in base.as_std().get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start spooler serve under sh");
        let addr = wait_for(
            "the server to log its address",
            Duration::from_secs(30),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move { listening(&text) }
            },
        )
        .await;
        Self {
            child,
            _dir: dir,
            log,
            addr,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn listening(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        v["message"]
            .as_str()?
            .starts_with("server listening")
            .then(|| v["listen"].as_str()?.parse().ok())?
    })
}

/// `GET /healthz` on a connection of its own; the status, or `None` if it did not answer in time.
fn healthz(addr: SocketAddr, within: Duration) -> Option<u16> {
    let (status, _) = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        within,
    )?;
    Some(status)
}

/// Sends `request` on a new connection and reads until the server closes it: the status and the
/// body, or `None` if nothing complete came within `within`.
fn raw(addr: SocketAddr, request: &[u8], within: Duration) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(within)).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Reads from `stream` until the server closes it (EOF or reset); false if it is still open
/// when `until` passes.
fn closed_by_server(stream: &mut TcpStream, until: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_under_a_descriptor_limit_are_closed_and_healthz_answers_again() {
    let timeout = Duration::from_secs(2);
    let mut server = Limited::start(
        256,
        &["--header-read-timeout", "2s", "--body-read-timeout", "2s"],
    )
    .await;
    let addr = server.addr;
    let pid = server.child.id().expect("pid");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "the server runs under 256 descriptors: {limits}"
    );
    assert_eq!(healthz(addr, Duration::from_secs(10)), Some(200));
    let result = tokio::task::spawn_blocking(move || {
        let opened = Instant::now();
        // 250 never finish their headers; 50 send headers and never the body they announce.
        let mut streams: Vec<TcpStream> = (0..300)
            .map(|i| {
                let mut s = TcpStream::connect(addr).expect("connect");
                let partial: &[u8] = if i % 6 == 5 {
                    b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"kind\""
                } else {
                    b"GET /v1/jobs HTTP/1.1\r\nHost: localhost\r\nX-Partial: "
                };
                s.write_all(partial).expect("write");
                s
            })
            .collect();
        // The cap (256 less the 64 kept for the store) serves them in two rounds of the timeout;
        // the bound is generous for a loaded machine, and far below "never".
        let until = opened + timeout * 2 + Duration::from_secs(40);
        let open = streams
            .iter_mut()
            .map(|s| closed_by_server(s, until))
            .filter(|closed| !closed)
            .count();
        let closing = opened.elapsed();
        let answered = healthz(addr, Duration::from_secs(20));
        (open, closing, answered)
    })
    .await
    .unwrap();
    let (open, closing, answered) = result;
    assert_eq!(
        open,
        0,
        "connections still open after {closing:?}; log:\n{}",
        server.log_text()
    );
    assert_eq!(
        answered,
        Some(200),
        "/healthz answers again; log:\n{}",
        server.log_text()
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the same server, not restarted"
    );
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_before_routing_and_late_bodies_are_answered_in_json() {
    let server = Limited::start(1024, &["--body-read-timeout", "1s"]).await;
    let addr = server.addr;
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a malformed request line",
            b"GARBAGE\x01 / HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "parsed",
        ),
        ("a URI of 70,000 bytes", long_uri.into_bytes(), 414, "URI"),
        ("200 headers", many_headers.into_bytes(), 431, "headers"),
        (
            "a body that never comes",
            b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{".to_vec(),
            408,
            "did not arrive within 1s",
        ),
    ];
    let answers = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|(what, request, want, words)| {
                (
                    what,
                    want,
                    words,
                    raw(addr, &request, Duration::from_secs(30)),
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (what, want, words, answer) in answers {
        let (status, body) = answer.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(status, want, "{what}: {body}");
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {body:?}"));
        assert!(
            json["error"].as_str().is_some_and(|m| m.contains(words)),
            "{what}: {json}"
        );
    }
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (in parentheses, which may hold spaces): utime is the 14th
    // field of the line, stime the 15th.
    let rest = &stat[stat.rfind(')').expect("stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100)
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_long_polls_on_one_job_cost_little_cpu() {
    let server = Server::start_with(ServeOptions {
        no_worker: true,
        ..ServeOptions::default()
    })
    .await;
    let job = server
        .enqueue(&json!({"kind": "noop", "delay": "1h"}))
        .await;
    let id = job["id"].as_i64().unwrap();
    let pid = server.pid();
    let addr = server.addr;
    let before = open_descriptors(pid);
    let request = format!("GET /v1/jobs/{id}?wait=60s HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let polls: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(request.as_bytes()).expect("write");
            s
        })
        .collect();
    // Every poll accepted (a descriptor each) before measuring.
    wait_for(
        "the server to accept the 1,000 long polls",
        Duration::from_secs(60),
        || async { (open_descriptors(pid) >= before + 1000).then_some(()) },
    )
    .await;
    // Let the requests be read and their first reads done, then measure a window of CPU time.
    // The measure is the server's own CPU ticks, which a loaded machine does not inflate much.
    let settle = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_ticks = cpu_ticks(pid);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let used = cpu_ticks(pid) - start_ticks;
    let elapsed = start.elapsed();
    let share = used as f64 / clock_ticks_per_second() as f64 / elapsed.as_secs_f64();
    eprintln!(
        "1,000 long polls: {used} ticks in {elapsed:?} = {:.1}% of a core (settling took {} ticks)",
        share * 100.0,
        start_ticks - settle
    );
    assert!(
        share < 0.10,
        "1,000 waiting long polls cost {:.1}% of a core (bound 10%)",
        share * 100.0
    );
    // They are still waiting, and all answer as soon as the job finishes.
    let (status, cancelled) = server
        .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let answered = tokio::task::spawn_blocking(move || {
        polls
            .into_iter()
            .filter(|s| {
                let mut s = s.try_clone().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).contains("\"state\":") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&got);
                text.starts_with("HTTP/1.1 200") && text.contains("\"state\":\"cancelled\"")
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(
        answered, 1000,
        "every long poll answers with the cancelled job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let server = Limited::start(1024, &["--header-read-timeout", "3s"]).await;
    let addr = server.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        // The answer comes on a connection kept alive; then nothing is sent on it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("\"status\":\"ok\"") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return Err(String::from_utf8_lossy(&got).to_string()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let answered = Instant::now();
        let closed = closed_by_server(&mut stream, answered + Duration::from_secs(30));
        Ok((closed, answered.elapsed()))
    })
    .await
    .unwrap();
    let (closed, after) = closed.unwrap_or_else(|text| panic!("no answer to /healthz: {text:?}"));
    assert!(closed, "the idle connection is still open after {after:?}");
    assert!(
        // Half the timeout: the answer may reach this test late on a loaded machine.
        after >= Duration::from_millis(1500),
        "closed by the idle timeout, not at once: {after:?}"
    );
}
