//! The SQL shared by both backends.
//!
//! Both schemas use the same column names and types that map alike (BIGINT
//! microseconds for times, TEXT for JSON), and the statements below use only
//! syntax both engines accept (`$N` parameters, `ON CONFLICT`, `RETURNING`).
//! `sql_backend!` instantiates the one implementation for each sqlx driver,
//! so the two backends cannot drift apart.

use chrono::{DateTime, Utc};

use crate::error::StoreError;

/// Writes of `last_used` closer together than this are skipped.
pub(crate) const TOUCH_GRANULARITY_US: i64 = 60_000_000;

/// Rows per multi-row INSERT; 14 parameters each stays far below both
/// engines' parameter limits.
pub(crate) const INSERT_CHUNK: usize = 500;

pub(crate) fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn time(v: i64, what: &'static str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::Corrupt {
        what,
        detail: format!("timestamp {v} is out of range"),
    })
}

pub(crate) fn opt_time(
    v: Option<i64>,
    what: &'static str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    v.map(|v| time(v, what)).transpose()
}

pub(crate) fn json(text: &str, what: &'static str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// A glob (`*`, `?`) as a LIKE pattern with `!` as the escape character, so
/// `%`, `_` and `!` in the input match themselves.
pub(crate) fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 8);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '!' => {
                out.push('!');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

macro_rules! sql_backend {
    ($db:ty, $name:literal) => {
        use async_trait::async_trait;
        use chrono::{DateTime, Utc};
        use sqlx::{Pool, QueryBuilder, Row};

        use crate::error::StoreError;
        use crate::model::*;
        use crate::sql::*;
        use crate::store::Store;

        type Db = $db;
        type DbRow = <Db as sqlx::Database>::Row;

        const KEY_COLUMNS: &str =
            "id, name, key_hash, key_prefix, scopes, created_us, last_used_us, revoked_us";
        const SESSION_COLUMNS: &str =
            "id, identity, client_name, client_version, protocol_version, started_us, ended_us";
        const AUDIT_COLUMNS: &str = "id, time_us, identity, session_id, client_name, client_version, method, upstream, target, arguments_digest, arguments, duration_ms, outcome, error";
        const PIN_COLUMNS: &str = "tool, hash, definition, first_seen_us, approved_us, pending_hash, pending_definition, pending_since_us";

        #[derive(Debug, Clone)]
        pub(crate) struct Backend {
            pool: Pool<Db>,
        }

        impl Backend {
            pub(crate) fn new(pool: Pool<Db>) -> Self {
                Self { pool }
            }
        }

        fn api_key(row: &DbRow) -> Result<ApiKeyRecord, StoreError> {
            let scopes: String = row.try_get("scopes")?;
            Ok(ApiKeyRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                key_hash: row.try_get("key_hash")?,
                key_prefix: row.try_get("key_prefix")?,
                scopes: serde_json::from_str(&scopes).map_err(|e| StoreError::Corrupt {
                    what: "api key scope list",
                    detail: e.to_string(),
                })?,
                created_at: time(row.try_get("created_us")?, "api key creation time")?,
                last_used_at: opt_time(row.try_get("last_used_us")?, "api key use time")?,
                revoked_at: opt_time(row.try_get("revoked_us")?, "api key revocation time")?,
            })
        }

        fn session(row: &DbRow) -> Result<SessionInfo, StoreError> {
            Ok(SessionInfo {
                session: SessionRecord {
                    id: row.try_get("id")?,
                    identity: row.try_get("identity")?,
                    client_name: row.try_get("client_name")?,
                    client_version: row.try_get("client_version")?,
                    protocol_version: row.try_get("protocol_version")?,
                    started_at: time(row.try_get("started_us")?, "session start")?,
                },
                ended_at: opt_time(row.try_get("ended_us")?, "session end")?,
            })
        }

        fn audit(row: &DbRow) -> Result<AuditRecord, StoreError> {
            let outcome: String = row.try_get("outcome")?;
            let arguments: Option<String> = row.try_get("arguments")?;
            let duration: Option<i64> = row.try_get("duration_ms")?;
            Ok(AuditRecord {
                id: row.try_get("id")?,
                time: time(row.try_get("time_us")?, "audit time")?,
                identity: row.try_get("identity")?,
                session_id: row.try_get("session_id")?,
                client_name: row.try_get("client_name")?,
                client_version: row.try_get("client_version")?,
                method: row.try_get("method")?,
                upstream: row.try_get("upstream")?,
                target: row.try_get("target")?,
                arguments_digest: row.try_get("arguments_digest")?,
                arguments: arguments
                    .map(|a| json(&a, "audit arguments"))
                    .transpose()?,
                duration_ms: duration.map(|d| u64::try_from(d).unwrap_or(0)),
                outcome: outcome.parse().map_err(|e: UnknownOutcome| StoreError::Corrupt {
                    what: "audit outcome",
                    detail: e.to_string(),
                })?,
                error: row.try_get("error")?,
            })
        }

        fn health(row: &DbRow) -> Result<HealthReport, StoreError> {
            let detail: String = row.try_get("detail")?;
            Ok(HealthReport {
                time: time(row.try_get("time_us")?, "health report time")?,
                upstream: row.try_get("upstream")?,
                status: row.try_get("status")?,
                detail: json(&detail, "health report detail")?,
            })
        }

        fn pin(row: &DbRow) -> Result<PinRecord, StoreError> {
            let definition: String = row.try_get("definition")?;
            let pending_hash: Option<String> = row.try_get("pending_hash")?;
            let pending_definition: Option<String> = row.try_get("pending_definition")?;
            let pending_since: Option<i64> = row.try_get("pending_since_us")?;
            let pending = match (pending_hash, pending_definition, pending_since) {
                (Some(hash), Some(definition), Some(since)) => Some(PendingChange {
                    hash,
                    definition: json(&definition, "pending tool definition")?,
                    since: time(since, "pending change time")?,
                }),
                _ => None,
            };
            Ok(PinRecord {
                tool: row.try_get("tool")?,
                hash: row.try_get("hash")?,
                definition: json(&definition, "pinned tool definition")?,
                first_seen: time(row.try_get("first_seen_us")?, "pin time")?,
                approved_at: opt_time(row.try_get("approved_us")?, "pin approval time")?,
                pending,
            })
        }

        fn text(v: &serde_json::Value) -> String {
            v.to_string()
        }

        #[async_trait]
        impl Store for Backend {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKeyRecord, StoreError> {
                let scopes = serde_json::Value::from(key.scopes.clone()).to_string();
                let sql = format!(
                    "INSERT INTO api_keys (name, key_hash, key_prefix, scopes, created_us) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING {KEY_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(&key.name)
                    .bind(&key.key_hash)
                    .bind(&key.key_prefix)
                    .bind(scopes)
                    .bind(us(Utc::now()))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match e.as_database_error() {
                        Some(d) if d.is_unique_violation() => {
                            StoreError::DuplicateKeyName(key.name.clone())
                        }
                        _ => StoreError::Query(e),
                    })?;
                api_key(&row)
            }

            async fn find_api_key_by_hash(
                &self,
                key_hash: &str,
            ) -> Result<Option<ApiKeyRecord>, StoreError> {
                let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1");
                sqlx::query(&sql)
                    .bind(key_hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(api_key)
                    .transpose()
            }

            async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
                let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id");
                sqlx::query(&sql)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(api_key)
                    .collect()
            }

            async fn revoke_api_key(&self, name: &str) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE api_keys SET revoked_us = $1 WHERE name = $2 AND revoked_us IS NULL",
                )
                .bind(us(Utc::now()))
                .bind(name)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_api_key_used(
                &self,
                id: i64,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let at = us(at);
                sqlx::query(
                    "UPDATE api_keys SET last_used_us = $1 \
                     WHERE id = $2 AND (last_used_us IS NULL OR last_used_us < $3)",
                )
                .bind(at)
                .bind(id)
                .bind(at.saturating_sub(TOUCH_GRANULARITY_US))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_session_start(&self, s: SessionRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO sessions (id, identity, client_name, client_version, protocol_version, started_us) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&s.id)
                .bind(&s.identity)
                .bind(&s.client_name)
                .bind(&s.client_version)
                .bind(&s.protocol_version)
                .bind(us(s.started_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_session_end(
                &self,
                id: &str,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE sessions SET ended_us = $1 WHERE id = $2 AND ended_us IS NULL")
                    .bind(us(at))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_sessions(
                &self,
                active_only: bool,
                limit: u32,
            ) -> Result<Vec<SessionInfo>, StoreError> {
                let filter = if active_only { "WHERE ended_us IS NULL" } else { "" };
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions {filter} \
                     ORDER BY started_us DESC, id DESC LIMIT $1"
                );
                sqlx::query(&sql)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(session)
                    .collect()
            }

            async fn purge_sessions_ended_before(
                &self,
                before: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE ended_us < $1")
                    .bind(us(before))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn append_audit(&self, records: &[AuditRecord]) -> Result<u64, StoreError> {
                if records.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.pool.begin().await?;
                let mut inserted = 0;
                for chunk in records.chunks(INSERT_CHUNK) {
                    let mut q: QueryBuilder<Db> = QueryBuilder::new(format!(
                        "INSERT INTO audit_log ({AUDIT_COLUMNS}) "
                    ));
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.id.clone())
                            .push_bind(us(r.time))
                            .push_bind(r.identity.clone())
                            .push_bind(r.session_id.clone())
                            .push_bind(r.client_name.clone())
                            .push_bind(r.client_version.clone())
                            .push_bind(r.method.clone())
                            .push_bind(r.upstream.clone())
                            .push_bind(r.target.clone())
                            .push_bind(r.arguments_digest.clone())
                            .push_bind(r.arguments.as_ref().map(text))
                            .push_bind(r.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)))
                            .push_bind(r.outcome.as_str())
                            .push_bind(r.error.clone());
                    });
                    q.push(" ON CONFLICT (id) DO NOTHING");
                    inserted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(inserted)
            }

            async fn query_audit(
                &self,
                f: &AuditFilter,
            ) -> Result<Vec<AuditRecord>, StoreError> {
                // Values are only ever bound; the SQL text is fixed fragments.
                let mut q: QueryBuilder<Db> =
                    QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
                if let Some(t) = f.since {
                    q.push(" AND time_us >= ").push_bind(us(t));
                }
                if let Some(t) = f.until {
                    q.push(" AND time_us < ").push_bind(us(t));
                }
                if let Some(v) = &f.identity {
                    q.push(" AND identity = ").push_bind(v.clone());
                }
                if let Some(v) = &f.session_id {
                    q.push(" AND session_id = ").push_bind(v.clone());
                }
                if let Some(v) = &f.upstream {
                    q.push(" AND upstream = ").push_bind(v.clone());
                }
                if let Some(v) = &f.method {
                    q.push(" AND method = ").push_bind(v.clone());
                }
                if let Some(v) = f.outcome {
                    q.push(" AND outcome = ").push_bind(v.as_str());
                }
                if let Some(v) = &f.target {
                    if is_glob(v) {
                        q.push(" AND target LIKE ")
                            .push_bind(like_pattern(v))
                            .push(" ESCAPE '!'");
                    } else {
                        q.push(" AND target = ").push_bind(v.clone());
                    }
                }
                let limit = f
                    .limit
                    .unwrap_or(MAX_AUDIT_QUERY_LIMIT)
                    .min(MAX_AUDIT_QUERY_LIMIT);
                q.push(" ORDER BY time_us DESC, id DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let mut out = q
                    .build()
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(audit)
                    .collect::<Result<Vec<_>, _>>()?;
                out.reverse();
                Ok(out)
            }

            async fn purge_audit_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM audit_log WHERE time_us < $1")
                    .bind(us(before))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn insert_health_report(&self, r: HealthReport) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO health_reports (time_us, upstream, status, detail) VALUES ($1, $2, $3, $4)",
                )
                .bind(us(r.time))
                .bind(&r.upstream)
                .bind(&r.status)
                .bind(text(&r.detail))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn latest_health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
                sqlx::query(
                    "SELECT time_us, upstream, status, detail FROM health_reports \
                     WHERE id IN (SELECT MAX(id) FROM health_reports GROUP BY upstream) \
                     ORDER BY upstream",
                )
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(health)
                .collect()
            }

            async fn purge_health_reports_before(
                &self,
                before: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM health_reports WHERE time_us < $1")
                    .bind(us(before))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn get_pin(&self, tool: &str) -> Result<Option<PinRecord>, StoreError> {
                let sql = format!("SELECT {PIN_COLUMNS} FROM tool_pins WHERE tool = $1");
                sqlx::query(&sql)
                    .bind(tool)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(pin)
                    .transpose()
            }

            async fn list_pins(&self) -> Result<Vec<PinRecord>, StoreError> {
                let sql = format!("SELECT {PIN_COLUMNS} FROM tool_pins ORDER BY tool");
                sqlx::query(&sql)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(pin)
                    .collect()
            }

            async fn insert_pin_if_absent(&self, p: NewPin) -> Result<PinRecord, StoreError> {
                sqlx::query(
                    "INSERT INTO tool_pins (tool, hash, definition, first_seen_us) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (tool) DO NOTHING",
                )
                .bind(&p.tool)
                .bind(&p.hash)
                .bind(text(&p.definition))
                .bind(us(p.first_seen))
                .execute(&self.pool)
                .await?;
                self.get_pin(&p.tool).await?.ok_or_else(|| StoreError::Corrupt {
                    what: "tool pin",
                    detail: format!("the pin of {:?} vanished right after it was written", p.tool),
                })
            }

            async fn record_pending_change(
                &self,
                tool: &str,
                hash: &str,
                definition: &serde_json::Value,
                at: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE tool_pins SET \
                       pending_hash = CASE WHEN hash = $2 THEN NULL ELSE $2 END, \
                       pending_definition = CASE WHEN hash = $2 THEN NULL ELSE $3 END, \
                       pending_since_us = CASE WHEN hash = $2 THEN NULL \
                                               WHEN pending_hash = $2 THEN pending_since_us \
                                               ELSE $4 END \
                     WHERE tool = $1",
                )
                .bind(tool)
                .bind(hash)
                .bind(text(definition))
                .bind(us(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn approve_pin(
                &self,
                tool: &str,
                expected_hash: Option<&str>,
                at: DateTime<Utc>,
            ) -> Result<Option<PinRecord>, StoreError> {
                let sql = format!(
                    "UPDATE tool_pins SET hash = pending_hash, definition = pending_definition, \
                       approved_us = $1, pending_hash = NULL, pending_definition = NULL, \
                       pending_since_us = NULL \
                     WHERE tool = $2 AND pending_hash IS NOT NULL \
                       AND ($3 IS NULL OR pending_hash = $3) \
                     RETURNING {PIN_COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(us(at))
                    .bind(tool)
                    .bind(expected_hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(pin)
                    .transpose()
            }
        }
    };
}

pub(crate) use sql_backend;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns_with_literals_escaped() {
        let cases = [
            ("github__*", "github!_!_%"),
            ("a?c", "a_c"),
            ("100%", "100!%"),
            ("x!y", "x!!y"),
            ("plain", "plain"),
        ];
        for (glob, like) in cases {
            assert_eq!(like_pattern(glob), like, "{glob}");
        }
        assert!(is_glob("a*") && is_glob("a?") && !is_glob("a_b%"));
    }
}
