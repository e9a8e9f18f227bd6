//! The admin API under `/admin`: what an operator needs without a shell on
//! the gateway's host. Every route needs an identity with the `admin` scope
//! (API key or JWT; the anonymous identity never has it).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /admin/upstreams` | status, breaker, health, offer counts per upstream |
//! | `POST /admin/upstreams/{name}/breaker/reset` | closes a breaker by hand |
//! | `GET /admin/sessions` | open sessions: id, identity, client, version, idle time |
//! | `DELETE /admin/sessions/{id}` | ends a session |
//! | `GET /admin/audit?...` | audit records (filters as `switchboard audit`) |
//! | `GET /admin/pins` | changed tool definitions waiting for approval, with diffs |
//! | `POST /admin/pins/approve` | `{"tool": NAME, "hash": H?}` approves one |

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{middleware, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::state::Shared;

type App = Arc<Shared>;

pub(crate) fn router(shared: App) -> Router<App> {
    Router::new()
        .route("/admin/upstreams", get(upstreams))
        .route("/admin/upstreams/{name}/breaker/reset", post(reset_breaker))
        .route("/admin/sessions", get(sessions))
        .route("/admin/sessions/{id}", delete(end_session))
        .route("/admin/audit", get(audit))
        .route("/admin/pins", get(pins))
        .route("/admin/pins/approve", post(approve))
        .route_layer(middleware::from_fn(require_admin))
        .route_layer(middleware::from_fn_with_state(
            shared,
            crate::authn::authenticate,
        ))
}

/// Refuses callers without the `admin` scope (403, with the RFC 6750
/// `insufficient_scope` code).
async fn require_admin(request: axum::extract::Request, next: middleware::Next) -> Response {
    match crate::authn::current_caller() {
        Some(c) if c.is_admin() => next.run(request).await,
        Some(c) => problem(
            StatusCode::FORBIDDEN,
            format!(
                "{} lacks the admin scope; the admin API needs a key created with --scopes admin",
                c.principal()
            ),
        ),
        None => problem(StatusCode::UNAUTHORIZED, "no credentials".to_owned()),
    }
}

fn problem(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn upstreams(State(shared): State<App>) -> Response {
    let list: Vec<Value> = shared
        .report()
        .into_iter()
        .map(|u| {
            json!({
                "name": u.name,
                "transport": u.transport,
                "status": u.status.name(),
                "error": u.status.error(),
                "breaker": u.breaker,
                "health_score": u.health_score,
                "restarts": u.restarts,
                "tools": u.tools,
                "prompts": u.prompts,
                "resources": u.resources,
            })
        })
        .collect();
    Json(json!({ "upstreams": list })).into_response()
}

async fn reset_breaker(State(shared): State<App>, Path(name): Path<String>) -> Response {
    if shared.reset_breaker(&name) {
        Json(json!({ "upstream": name, "breaker": "closed" })).into_response()
    } else {
        problem(StatusCode::NOT_FOUND, format!("no upstream named {name:?}"))
    }
}

async fn sessions(State(shared): State<App>) -> Response {
    let list: Vec<Value> = shared
        .sessions
        .all()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id.as_ref(),
                "identity": s.identity().map(|i| i.principal()),
                "client": s.client().map(|(n, v)| json!({ "name": n, "version": v })),
                "protocolVersion": s.init().map(|i| i.protocol_version),
                "idleSeconds": s.idle_for().as_secs(),
            })
        })
        .collect();
    Json(json!({ "sessions": list })).into_response()
}

async fn end_session(State(shared): State<App>, Path(id): Path<String>) -> Response {
    if shared.end_session(&id).await {
        tracing::info!(session = id, "session ended by an operator");
        StatusCode::NO_CONTENT.into_response()
    } else {
        problem(StatusCode::NOT_FOUND, format!("no session {id:?}"))
    }
}

/// Filters of `GET /admin/audit`; every value is bound as a query parameter
/// by the store, never spliced into SQL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    identity: Option<String>,
    session: Option<String>,
    upstream: Option<String>,
    tool: Option<String>,
    method: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
}

async fn audit(
    State(shared): State<App>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("bad filter: {e}; filters are since, until, identity, session, upstream, tool, method, outcome, limit")),
    };
    let Some(store) = &shared.store else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no store is configured".to_owned(),
        );
    };
    match filter_of(q) {
        Ok(filter) => match store.query_audit(&filter).await {
            Ok(records) => Json(json!({ "records": records })).into_response(),
            Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, format!("audit store: {e}")),
        },
        Err(message) => problem(StatusCode::BAD_REQUEST, message),
    }
}

/// The store filter of a query; every value stays a bound parameter.
fn filter_of(q: AuditQuery) -> Result<switchboard_store::AuditFilter, String> {
    let now = chrono::Utc::now();
    let time = |v: Option<String>, field: &str| {
        v.map(|t| switchboard_store::parse_time(&t, now).map_err(|e| format!("{field}: {e}")))
            .transpose()
    };
    Ok(switchboard_store::AuditFilter {
        since: time(q.since, "since")?,
        until: time(q.until, "until")?,
        identity: q.identity,
        session_id: q.session,
        upstream: q.upstream,
        target: q.tool,
        method: q.method,
        outcome: q
            .outcome
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| format!("outcome: {e}"))?,
        limit: q.limit,
    })
}

async fn pins(State(shared): State<App>) -> Response {
    let sep = &shared.server.separator;
    let pending: Vec<Value> = shared
        .pins
        .pending()
        .into_iter()
        .map(|(key, pin, waiting, changes)| {
            json!({
                "tool": key.replacen('/', sep, 1),
                "pinnedHash": pin.hash,
                "pendingHash": waiting.hash,
                "changes": changes,
            })
        })
        .collect();
    Json(json!({
        "policy": format!("{:?}", shared.pinning).to_lowercase(),
        "pinned": shared.pins.len(),
        "pending": pending,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    tool: String,
    hash: Option<String>,
}

async fn approve(
    State(shared): State<App>,
    body: Result<Json<Approve>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(a) = match body {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("{e}; send {{\"tool\": NAME, \"hash\": PENDING_HASH}}"),
            )
        }
    };
    match shared.approve_pin(&a.tool, a.hash.as_deref()).await {
        Ok(key) => {
            let mut r =
                switchboard_store::AuditRecord::new("pin_approved", switchboard_store::Outcome::Ok);
            r.identity = crate::authn::current_caller().map(|c| c.principal());
            r.target = Some(a.tool.clone());
            shared.audit(r);
            Json(json!({ "approved": key.replacen('/', &shared.server.separator, 1) }))
                .into_response()
        }
        Err(e) => problem(StatusCode::NOT_FOUND, e),
    }
}
