//! The loop every background service runs: one pass per interval until told to stop; a stop asked
//! during a pass ends it there (each store call is atomic, so nothing is left half-written).

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// Runs `pass` every `interval` (the first at once) until `stop` turns true.
pub(crate) async fn every<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = pass() => {}
            _ = stop.changed() => return,
        }
    }
}
