//! The store's integration tests: one suite, instantiated for SQLite and for
//! PostgreSQL (the loopback cluster `scripts/services.sh start` runs).

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod cases;
mod fixture;
mod writer;

/// Instantiates every named case once per backend. Each test gets its own
/// database (a fresh SQLite file, or a fresh PostgreSQL database), so tests
/// run in parallel.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::fixture::Db::sqlite().await;
                    crate::cases::$case(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::fixture::Db::postgres().await;
                    crate::cases::$case(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

suite!(
    opening_twice_migrates_once_and_keeps_data,
    api_keys_are_found_by_hash_listed_and_revoked,
    duplicate_key_names_are_refused,
    touching_a_key_is_throttled_to_once_a_minute,
    sessions_start_end_and_list_active_first_by_recency,
    audit_batches_are_idempotent_on_id,
    audit_records_round_trip_every_field,
    audit_filters_narrow_by_every_field,
    audit_target_globs_match_literally_outside_wildcards,
    audit_filter_injection_attempts_match_nothing_and_break_nothing,
    audit_queries_return_the_most_recent_in_time_order_and_cap_the_limit,
    purges_delete_only_what_is_older,
    latest_health_reports_are_one_per_upstream,
    the_first_pin_wins_a_race_between_replicas,
    a_changed_definition_waits_for_approval,
    approval_with_a_stale_hash_changes_nothing,
    audit_writer_batches_records_into_the_store,
    audit_writer_spools_while_the_store_is_down_and_replays_exactly_once,
    audit_writer_replays_a_spool_left_by_an_earlier_run,
    audit_writer_drops_only_past_the_spool_cap_and_counts_it,
);
