//! Conformance: Leadership, the worker registry, migrations and wake-ups.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::store::*;
use chrono::TimeDelta;
use std::time::Duration;

pub async fn leader_election_and_takeover(h: Harness) {
    let elect = |holder: &str| LeaderElect {
        name: "maintenance".into(),
        holder: holder.into(),
        ttl: Duration::from_secs(10),
    };
    assert!(h.store().leader_try_elect(&elect("a")).await.unwrap());
    assert!(!h.store().leader_try_elect(&elect("b")).await.unwrap());
    h.clock.advance(Duration::from_secs(5));
    assert!(
        h.store().leader_try_elect(&elect("a")).await.unwrap(),
        "renewal"
    );
    h.clock.advance(Duration::from_secs(6));
    assert!(
        !h.store().leader_try_elect(&elect("b")).await.unwrap(),
        "renewed lease holds"
    );
    h.clock.advance(Duration::from_secs(5));
    assert!(
        h.store().leader_try_elect(&elect("b")).await.unwrap(),
        "takeover after ttl"
    );
    assert!(!h.store().leader_try_elect(&elect("a")).await.unwrap());
    h.store().leader_resign("maintenance", "a").await.unwrap();
    assert!(
        !h.store().leader_try_elect(&elect("a")).await.unwrap(),
        "a cannot resign b"
    );
    h.store().leader_resign("maintenance", "b").await.unwrap();
    assert!(
        h.store().leader_try_elect(&elect("a")).await.unwrap(),
        "resigned at once"
    );
}

pub async fn worker_registry(h: Harness) {
    let mut info = WorkerInfo {
        id: "w-1".into(),
        host: "host-a".into(),
        pid: 42,
        version: "1.2.3".into(),
        queues: [("default".to_string(), 10)].into_iter().collect(),
        kinds: vec!["a".into(), "b".into()],
        running: 3,
        started_at: h.now(),
        last_seen_at: h.now(),
    };
    h.store().worker_heartbeat(&info).await.unwrap();
    h.clock.advance(Duration::from_secs(5));
    info.running = 4;
    h.store().worker_heartbeat(&info).await.unwrap();
    let listed = h
        .store()
        .worker_list(h.now() - TimeDelta::seconds(1))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].running, 4);
    assert_eq!(listed[0].last_seen_at, h.now());
    assert_eq!(listed[0].kinds, info.kinds);
    assert_eq!(listed[0].version, "1.2.3");
    assert_eq!(listed[0].queues, info.queues);
    h.clock.advance(Duration::from_secs(60));
    assert!(
        h.store()
            .worker_list(h.now() - TimeDelta::seconds(30))
            .await
            .unwrap()
            .is_empty()
    );
    h.store().worker_remove("w-1").await.unwrap();
    assert!(
        h.store()
            .worker_list(h.now() - TimeDelta::days(1))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn migrate_is_idempotent(h: Harness) {
    h.store().migrate().await.unwrap();
    h.store().migrate().await.unwrap();
    let j = insert(&h, job("k")).await;
    assert_eq!(get(&h, j.id).await.id, j.id);
}

pub async fn subscribe_hears_own_inserts(h: Harness) {
    let mut rx = h.store().subscribe();
    insert(&h, job("k").queue("wake")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a wake-up within 5s");
        match got {
            Ok(w) if w.queue == "wake" => break,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(e) => panic!("subscription closed: {e}"),
        }
    }
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_coordination {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "coordination"; leader_election_and_takeover, worker_registry, migrate_is_idempotent, subscribe_hears_own_inserts);
    };
}
