//! The backend-independent cases; `main.rs` runs each against both backends.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use switchboard_store::*;

use crate::fixture::Db;

pub(crate) use crate::writer::{
    audit_writer_batches_records_into_the_store,
    audit_writer_drops_only_past_the_spool_cap_and_counts_it,
    audit_writer_replays_a_spool_left_by_an_earlier_run,
    audit_writer_spools_while_the_store_is_down_and_replays_exactly_once,
};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn key(name: &str, hash: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        key_hash: hash.into(),
        key_prefix: format!("sb_{}", &hash[..4]),
        scopes: vec!["web__*".into(), "!web__delete_*".into()],
    }
}

pub(crate) fn record(secs: i64, identity: &str, target: &str, outcome: Outcome) -> AuditRecord {
    let mut r = AuditRecord::new(method::TOOLS_CALL, outcome);
    r.time = t(secs);
    r.identity = Some(identity.into());
    r.session_id = Some(format!("s-{identity}"));
    r.upstream = target.split("__").next().map(str::to_owned);
    r.target = Some(target.into());
    r.duration_ms = Some(12);
    r
}

pub(crate) async fn opening_twice_migrates_once_and_keeps_data(db: &Db) {
    db.store
        .insert_api_key(key("ci", "aaaa1111"))
        .await
        .unwrap();
    let again = db.reopen().await;
    again.ping().await.unwrap();
    assert_eq!(again.list_api_keys().await.unwrap().len(), 1);
    assert_eq!(again.backend(), db.store.backend());
}

pub(crate) async fn api_keys_are_found_by_hash_listed_and_revoked(db: &Db) {
    let s = &db.store;
    let a = s.insert_api_key(key("alice", "hash-alice")).await.unwrap();
    s.insert_api_key(key("bob", "hash-bob")).await.unwrap();
    assert_eq!(a.name, "alice");
    assert_eq!(a.scopes, vec!["web__*", "!web__delete_*"]);
    assert!(a.revoked_at.is_none() && a.last_used_at.is_none());

    let found = s.find_api_key_by_hash("hash-alice").await.unwrap().unwrap();
    assert_eq!(found, a);
    assert!(s
        .find_api_key_by_hash("hash-nobody")
        .await
        .unwrap()
        .is_none());

    assert!(s.revoke_api_key("alice").await.unwrap());
    assert!(!s.revoke_api_key("alice").await.unwrap(), "already revoked");
    assert!(!s.revoke_api_key("nobody").await.unwrap());
    let revoked = s.find_api_key_by_hash("hash-alice").await.unwrap().unwrap();
    assert!(
        revoked.revoked_at.is_some(),
        "revoked keys are still found, marked"
    );

    let names: Vec<_> = s
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.name, k.revoked_at.is_some()))
        .collect();
    assert_eq!(names, vec![("alice".into(), true), ("bob".into(), false)]);
}

pub(crate) async fn duplicate_key_names_are_refused(db: &Db) {
    db.store.insert_api_key(key("ci", "hash-1")).await.unwrap();
    let err = db
        .store
        .insert_api_key(key("ci", "hash-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateKeyName(ref n) if n == "ci"),
        "{err}"
    );
    assert!(err.to_string().contains("\"ci\""));
    assert_eq!(db.store.list_api_keys().await.unwrap().len(), 1);
}

pub(crate) async fn touching_a_key_is_throttled_to_once_a_minute(db: &Db) {
    let k = db.store.insert_api_key(key("ci", "hash-1")).await.unwrap();
    db.store.touch_api_key_used(k.id, t(0)).await.unwrap();
    db.store.touch_api_key_used(k.id, t(30)).await.unwrap();
    let used = |db: &Db| {
        let s = db.store.clone();
        async move {
            s.find_api_key_by_hash("hash-1")
                .await
                .unwrap()
                .unwrap()
                .last_used_at
        }
    };
    assert_eq!(
        used(db).await,
        Some(t(0)),
        "a touch within a minute is skipped"
    );
    db.store.touch_api_key_used(k.id, t(61)).await.unwrap();
    assert_eq!(used(db).await, Some(t(61)));
}

pub(crate) async fn sessions_start_end_and_list_active_first_by_recency(db: &Db) {
    let s = &db.store;
    for (i, id) in ["s1", "s2", "s3"].iter().enumerate() {
        s.record_session_start(SessionRecord {
            id: (*id).into(),
            identity: Some("alice".into()),
            client_name: Some("claude".into()),
            client_version: Some("1.0".into()),
            protocol_version: Some("2025-06-18".into()),
            started_at: t(i as i64),
        })
        .await
        .unwrap();
    }
    // A repeated start changes nothing.
    s.record_session_start(SessionRecord {
        id: "s1".into(),
        identity: Some("mallory".into()),
        client_name: None,
        client_version: None,
        protocol_version: None,
        started_at: t(99),
    })
    .await
    .unwrap();
    s.record_session_end("s2", t(10)).await.unwrap();
    let all = s.list_sessions(false, 10).await.unwrap();
    let ids: Vec<_> = all.iter().map(|i| i.session.id.as_str()).collect();
    assert_eq!(ids, ["s3", "s2", "s1"]);
    assert_eq!(all[2].session.identity.as_deref(), Some("alice"));
    assert_eq!(all[1].ended_at, Some(t(10)));
    let active: Vec<_> = s
        .list_sessions(true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.session.id)
        .collect();
    assert_eq!(active, ["s3", "s1"]);
    assert_eq!(s.list_sessions(false, 1).await.unwrap().len(), 1);
    assert_eq!(s.purge_sessions_ended_before(t(11)).await.unwrap(), 1);
    assert_eq!(s.list_sessions(false, 10).await.unwrap().len(), 2);
}

pub(crate) async fn audit_batches_are_idempotent_on_id(db: &Db) {
    let batch: Vec<_> = (0..5)
        .map(|i| record(i, "alice", "web__search", Outcome::Ok))
        .collect();
    assert_eq!(db.store.append_audit(&batch).await.unwrap(), 5);
    assert_eq!(
        db.store.append_audit(&batch).await.unwrap(),
        0,
        "a replay stores nothing new"
    );
    let mut more = batch[3..].to_vec();
    more.push(record(9, "bob", "web__fetch", Outcome::Error));
    assert_eq!(db.store.append_audit(&more).await.unwrap(), 1);
    assert_eq!(
        db.store
            .query_audit(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        6
    );
    assert_eq!(db.store.append_audit(&[]).await.unwrap(), 0);
}

pub(crate) async fn audit_records_round_trip_every_field(db: &Db) {
    let mut r = AuditRecord::new(method::RESOURCES_READ, Outcome::Denied);
    r.time = Utc.timestamp_micros(1_800_000_000_123_456).unwrap();
    r.identity = Some("key:ci".into());
    r.session_id = Some("0192-session".into());
    r.client_name = Some("inspector".into());
    r.client_version = Some("0.9.1".into());
    r.upstream = Some("files".into());
    r.target = Some("file:///etc/passwd".into());
    r.arguments_digest = Some("ab".repeat(32));
    r.arguments = Some(json!({"uri": "file:///etc/passwd", "n": [1, 2.5, null, "é"]}));
    r.duration_ms = Some(u64::from(u32::MAX) + 7);
    r.error = Some("scope files__* not granted".into());
    let bare = AuditRecord::new(method::AUTH_FAILED, Outcome::Unauthenticated);
    db.store
        .append_audit(&[r.clone(), bare.clone()])
        .await
        .unwrap();
    let got = db.store.query_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(got.len(), 2);
    let by_id = |id: &str| got.iter().find(|g| g.id == id).unwrap().clone();
    assert_eq!(by_id(&r.id), r, "microsecond times and JSON survive");
    let mut bare_back = by_id(&bare.id);
    // The backends keep microseconds; `Utc::now()` may carry nanoseconds.
    bare_back.time = bare.time;
    assert_eq!(bare_back, bare);
}

pub(crate) async fn audit_filters_narrow_by_every_field(db: &Db) {
    let mut rows = vec![
        record(0, "alice", "web__search", Outcome::Ok),
        record(10, "alice", "web__fetch", Outcome::Error),
        record(20, "bob", "github__push", Outcome::Denied),
        record(30, "bob", "github__list", Outcome::Ok),
    ];
    rows[2].method = method::AUTHZ_DENIED.into();
    db.store.append_audit(&rows).await.unwrap();
    let q = |f: AuditFilter| {
        let s = db.store.clone();
        async move {
            s.query_audit(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.target.unwrap())
                .collect::<Vec<_>>()
        }
    };
    let all = AuditFilter::default;
    assert_eq!(
        q(all()).await,
        ["web__search", "web__fetch", "github__push", "github__list"]
    );
    assert_eq!(
        q(AuditFilter {
            since: Some(t(10)),
            until: Some(t(30)),
            ..all()
        })
        .await,
        ["web__fetch", "github__push"],
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        q(AuditFilter {
            identity: Some("bob".into()),
            ..all()
        })
        .await,
        ["github__push", "github__list"]
    );
    assert_eq!(
        q(AuditFilter {
            session_id: Some("s-alice".into()),
            ..all()
        })
        .await,
        ["web__search", "web__fetch"]
    );
    assert_eq!(
        q(AuditFilter {
            upstream: Some("github".into()),
            ..all()
        })
        .await,
        ["github__push", "github__list"]
    );
    assert_eq!(
        q(AuditFilter {
            target: Some("web__fetch".into()),
            ..all()
        })
        .await,
        ["web__fetch"]
    );
    assert_eq!(
        q(AuditFilter {
            target: Some("github__*".into()),
            ..all()
        })
        .await,
        ["github__push", "github__list"]
    );
    assert_eq!(
        q(AuditFilter {
            target: Some("*__?ush".into()),
            ..all()
        })
        .await,
        ["github__push"]
    );
    assert_eq!(
        q(AuditFilter {
            method: Some(method::AUTHZ_DENIED.into()),
            ..all()
        })
        .await,
        ["github__push"]
    );
    assert_eq!(
        q(AuditFilter {
            outcome: Some(Outcome::Ok),
            ..all()
        })
        .await,
        ["web__search", "github__list"]
    );
    assert_eq!(
        q(AuditFilter {
            identity: Some("alice".into()),
            outcome: Some(Outcome::Error),
            ..all()
        })
        .await,
        ["web__fetch"]
    );
    assert!(
        q(AuditFilter {
            identity: Some("ALICE".into()),
            ..all()
        })
        .await
        .is_empty(),
        "exact match is case-sensitive"
    );
    assert!(
        q(AuditFilter {
            target: Some("WEB__*".into()),
            ..all()
        })
        .await
        .is_empty(),
        "globs are case-sensitive on both backends"
    );
}

pub(crate) async fn audit_target_globs_match_literally_outside_wildcards(db: &Db) {
    let rows = vec![
        record(0, "a", "x__100%_done", Outcome::Ok),
        record(1, "a", "x__100xydone", Outcome::Ok),
        record(2, "a", "x__a!b", Outcome::Ok),
    ];
    db.store.append_audit(&rows).await.unwrap();
    let targets = |glob: &str| {
        let s = db.store.clone();
        let f = AuditFilter {
            target: Some(glob.into()),
            ..AuditFilter::default()
        };
        async move {
            s.query_audit(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.target.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        targets("x__100%_*").await,
        ["x__100%_done"],
        "% and _ are literal in a glob"
    );
    assert_eq!(targets("x__a!*").await, ["x__a!b"]);
}

pub(crate) async fn audit_filter_injection_attempts_match_nothing_and_break_nothing(db: &Db) {
    let rows: Vec<_> = (0..3)
        .map(|i| record(i, "alice", "web__search", Outcome::Ok))
        .collect();
    db.store.append_audit(&rows).await.unwrap();
    let attacks = [
        "x' OR '1'='1",
        "x\" OR \"1\"=\"1",
        "'; DROP TABLE audit_log; --",
        "alice' --",
        "%",
        "*' OR 1=1 --",
        "\\' OR 1=1",
        "x') UNION SELECT id, time_us, identity, session_id, client_name, client_version, method, upstream, target, arguments_digest, arguments, duration_ms, outcome, error FROM audit_log --",
        "$1",
        "?",
    ];
    for attack in attacks {
        for f in [
            AuditFilter {
                identity: Some(attack.into()),
                ..AuditFilter::default()
            },
            AuditFilter {
                session_id: Some(attack.into()),
                ..AuditFilter::default()
            },
            AuditFilter {
                upstream: Some(attack.into()),
                ..AuditFilter::default()
            },
            AuditFilter {
                method: Some(attack.into()),
                ..AuditFilter::default()
            },
            AuditFilter {
                target: Some(format!("{attack}__x")),
                ..AuditFilter::default()
            },
        ] {
            let got = db.store.query_audit(&f).await.unwrap();
            assert!(
                got.is_empty(),
                "{attack:?} in {f:?} matched {} rows",
                got.len()
            );
        }
    }
    // The table and its rows are intact, and a stored hostile value is
    // matched exactly like any other.
    assert_eq!(
        db.store
            .query_audit(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        3
    );
    let mut hostile = record(5, "x' OR '1'='1", "web__search", Outcome::Ok);
    hostile.error = Some("'; DROP TABLE audit_log; --".into());
    db.store.append_audit(&[hostile.clone()]).await.unwrap();
    let f = AuditFilter {
        identity: Some("x' OR '1'='1".into()),
        ..AuditFilter::default()
    };
    let got = db.store.query_audit(&f).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].error, hostile.error);
    assert_eq!(
        db.store
            .query_audit(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        4
    );
}

pub(crate) async fn audit_queries_return_the_most_recent_in_time_order_and_cap_the_limit(db: &Db) {
    let rows: Vec<_> = (0..10)
        .rev()
        .map(|i| record(i, "a", &format!("t__{i}"), Outcome::Ok))
        .collect();
    db.store.append_audit(&rows).await.unwrap();
    let f = AuditFilter {
        limit: Some(3),
        ..AuditFilter::default()
    };
    let got: Vec<_> = db
        .store
        .query_audit(&f)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.target.unwrap())
        .collect();
    assert_eq!(got, ["t__7", "t__8", "t__9"]);
    let f = AuditFilter {
        limit: Some(u32::MAX),
        ..AuditFilter::default()
    };
    assert_eq!(
        db.store.query_audit(&f).await.unwrap().len(),
        10,
        "a huge limit is capped, not an error"
    );
    let f = AuditFilter {
        limit: Some(0),
        ..AuditFilter::default()
    };
    assert!(db.store.query_audit(&f).await.unwrap().is_empty());
}

pub(crate) async fn purges_delete_only_what_is_older(db: &Db) {
    let rows: Vec<_> = (0..6)
        .map(|i| record(i * 10, "a", "t__x", Outcome::Ok))
        .collect();
    db.store.append_audit(&rows).await.unwrap();
    assert_eq!(db.store.purge_audit_before(t(30)).await.unwrap(), 3);
    let left = db.store.query_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        left.iter().map(|r| r.time).collect::<Vec<_>>(),
        [t(30), t(40), t(50)]
    );
    assert_eq!(db.store.purge_audit_before(t(30)).await.unwrap(), 0);
    for i in 0..3 {
        db.store
            .insert_health_report(HealthReport {
                time: t(i * 10),
                upstream: "u".into(),
                status: "up".into(),
                detail: json!({}),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        db.store.purge_health_reports_before(t(15)).await.unwrap(),
        2
    );
    assert_eq!(db.store.latest_health_reports().await.unwrap().len(), 1);
}

pub(crate) async fn latest_health_reports_are_one_per_upstream(db: &Db) {
    let report = |secs, upstream: &str, status: &str| HealthReport {
        time: t(secs),
        upstream: upstream.into(),
        status: status.into(),
        detail: json!({"latency_ms": secs}),
    };
    for r in [
        report(0, "web", "up"),
        report(1, "git", "up"),
        report(2, "web", "down"),
        report(3, "git", "degraded"),
    ] {
        db.store.insert_health_report(r).await.unwrap();
    }
    let latest = db.store.latest_health_reports().await.unwrap();
    assert_eq!(
        latest,
        vec![report(3, "git", "degraded"), report(2, "web", "down")]
    );
}

fn new_pin(tool: &str, hash: &str) -> NewPin {
    NewPin {
        tool: tool.into(),
        hash: hash.into(),
        definition: json!({"name": tool, "description": format!("v {hash}")}),
        first_seen: t(0),
    }
}

pub(crate) async fn the_first_pin_wins_a_race_between_replicas(db: &Db) {
    let replica = db.reopen().await;
    let (a, b) = tokio::join!(
        db.store.insert_pin_if_absent(new_pin("web__search", "h1")),
        replica.insert_pin_if_absent(new_pin("web__search", "h2")),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "both replicas see the same winner");
    assert!(a.hash == "h1" || a.hash == "h2");
    let again = db
        .store
        .insert_pin_if_absent(new_pin("web__search", "h3"))
        .await
        .unwrap();
    assert_eq!(again.hash, a.hash, "an existing pin is never replaced");
    assert_eq!(db.store.get_pin("web__search").await.unwrap(), Some(a));
    assert!(db.store.get_pin("nope").await.unwrap().is_none());
    db.store
        .insert_pin_if_absent(new_pin("a__first", "h"))
        .await
        .unwrap();
    let tools: Vec<_> = db
        .store
        .list_pins()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.tool)
        .collect();
    assert_eq!(tools, ["a__first", "web__search"]);
}

pub(crate) async fn a_changed_definition_waits_for_approval(db: &Db) {
    let s = &db.store;
    s.insert_pin_if_absent(new_pin("web__search", "h1"))
        .await
        .unwrap();
    assert!(
        s.approve_pin("web__search", None, t(1))
            .await
            .unwrap()
            .is_none(),
        "nothing pending"
    );
    let v2 = json!({"name": "web__search", "description": "now also sends your files"});
    assert!(s
        .record_pending_change("web__search", "h2", &v2, t(5))
        .await
        .unwrap());
    assert!(s
        .record_pending_change("web__search", "h2", &v2, t(9))
        .await
        .unwrap());
    let pin = s.get_pin("web__search").await.unwrap().unwrap();
    assert_eq!(pin.hash, "h1", "the pin holds until approval");
    let pending = pin.pending.unwrap();
    assert_eq!(
        (pending.hash.as_str(), pending.since),
        ("h2", t(5)),
        "seeing the same change again keeps its first time"
    );
    assert_eq!(pending.definition, v2);
    assert!(!s
        .record_pending_change("nope", "h", &v2, t(5))
        .await
        .unwrap());

    let approved = s
        .approve_pin("web__search", Some("h2"), t(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.hash, "h2");
    assert_eq!(approved.definition, v2);
    assert_eq!(approved.approved_at, Some(t(20)));
    assert_eq!(approved.first_seen, t(0));
    assert!(approved.pending.is_none());
    assert_eq!(s.get_pin("web__search").await.unwrap(), Some(approved));

    // A change that reverts to the pinned definition clears what was pending.
    s.record_pending_change("web__search", "h3", &json!({}), t(30))
        .await
        .unwrap();
    s.record_pending_change("web__search", "h2", &v2, t(31))
        .await
        .unwrap();
    assert!(s
        .get_pin("web__search")
        .await
        .unwrap()
        .unwrap()
        .pending
        .is_none());
}

pub(crate) async fn approval_with_a_stale_hash_changes_nothing(db: &Db) {
    let s = &db.store;
    s.insert_pin_if_absent(new_pin("t", "h1")).await.unwrap();
    s.record_pending_change("t", "h2", &json!({"v": 2}), t(1))
        .await
        .unwrap();
    // The operator reviewed h2, but the upstream changed again meanwhile.
    s.record_pending_change("t", "h3", &json!({"v": 3}), t(2))
        .await
        .unwrap();
    assert!(s
        .approve_pin("t", Some("h2"), t(3))
        .await
        .unwrap()
        .is_none());
    let pin = s.get_pin("t").await.unwrap().unwrap();
    assert_eq!(pin.hash, "h1");
    assert_eq!(pin.pending.map(|p| p.hash), Some("h3".into()));
}
