//! The service manager's notifications (systemd's `sd_notify`): `READY=1` once the process serves,
//! `WATCHDOG=1` while its runtime lives, a `STATUS=` line when a reload is applied and
//! `STOPPING=1` on the way out. Without `NOTIFY_SOCKET` in the environment each is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;

/// Tells the service manager the process is ready, with a one-line status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager the process is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Gives the service manager a one-line status (`systemctl status` shows it).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// When the service manager asked for a watchdog (`WatchdogSec=`), pings it at half the interval
/// from a task of the async runtime, so a wedged runtime stops the pings and gets restarted.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let every = (interval / 2).max(Duration::from_millis(100));
    tracing::debug!(?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        let socket = std::env::var("NOTIFY_SOCKET").unwrap_or_default();
        tracing::warn!(
            socket,
            "cannot notify the service manager at NOTIFY_SOCKET={socket}: {e}"
        );
    }
}
