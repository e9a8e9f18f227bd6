//! Governance on the request path: what each caller may see and use
//! (scopes), the audit trail of what it did, and the persistence of tool
//! pins. Kept out of `dispatch` so that method handling reads as routing.
//!
//! Invariants:
//! - Authorization is decided on the upstream and the upstream's own name
//!   (never the exposed, prefixed name), so exposure policies cannot widen a
//!   grant.
//! - Audit records are handed to the writer without waiting: the request
//!   path never blocks on the store.
//! - The store is written off the request path; the in-memory pin book is
//!   what requests consult.

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::{Identity, Target as Grant};
use switchboard_protocol::{to_raw, ErrorObject, RawValue};
use switchboard_store::{AuditRecord, Outcome};

use crate::catalog::Catalog;
use crate::session::Session;
use crate::state::Shared;

/// Health reports older than this are deleted.
const HEALTH_REPORT_RETENTION_DAYS: i64 = 7;

/// Which list a filtered result is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

/// Lists filtered per scope set, reused until the catalog changes: callers
/// of one key repeat the same scopes, and filtering parses the whole list.
/// The value holds its catalog, so the pointer in the key stays unique.
pub(crate) type ListCache =
    moka::sync::Cache<(usize, String, ListKind), (Arc<Catalog>, Arc<RawValue>)>;

pub(crate) fn list_cache() -> ListCache {
    moka::sync::Cache::builder()
        .max_capacity(1024)
        .time_to_idle(Duration::from_secs(600))
        .build()
}

/// The list result this caller may see: everything, or only what its
/// scopes grant.
pub(crate) fn visible_list(
    shared: &Shared,
    catalog: &Arc<Catalog>,
    identity: Option<&Arc<Identity>>,
    kind: ListKind,
) -> Arc<RawValue> {
    let full = match kind {
        ListKind::Tools => &catalog.tools_result,
        ListKind::Prompts => &catalog.prompts_result,
        ListKind::Resources => &catalog.resources_result,
        ListKind::Templates => &catalog.templates_result,
    };
    let Some(identity) = identity else {
        return Arc::from(full.clone());
    };
    let key = (
        Arc::as_ptr(catalog) as usize,
        identity.scopes.to_string(),
        kind,
    );
    if let Some((_, hit)) = shared.lists.get(&key) {
        return hit;
    }
    let (field, item_key) = match kind {
        ListKind::Tools => ("tools", "name"),
        ListKind::Prompts => ("prompts", "name"),
        ListKind::Resources => ("resources", "uri"),
        ListKind::Templates => ("resourceTemplates", "uriTemplate"),
    };
    let mut value: Value = serde_json::from_str(full.get()).unwrap_or_default();
    if let Some(items) = value.get_mut(field).and_then(Value::as_array_mut) {
        items.retain(|item| {
            let Some(name) = item.get(item_key).and_then(Value::as_str) else {
                return false;
            };
            match kind {
                ListKind::Tools => catalog.tool(name).is_some_and(|t| {
                    identity.allows(Grant::tool(shared.upstreams[t.upstream].name(), &t.name))
                }),
                ListKind::Prompts => catalog.prompt(name).is_some_and(|t| {
                    identity.allows(Grant::prompt(shared.upstreams[t.upstream].name(), &t.name))
                }),
                ListKind::Resources | ListKind::Templates => {
                    catalog.resource_or_template(name).is_some_and(|u| {
                        identity.allows(Grant::resource(shared.upstreams[u].name(), name))
                    })
                }
            }
        });
    }
    let filtered: Arc<RawValue> = Arc::from(to_raw(&value));
    shared
        .lists
        .insert(key, (catalog.clone(), filtered.clone()));
    filtered
}

/// Refuses a use the caller's scopes do not grant, with an audit record.
pub(crate) fn authorize(
    shared: &Shared,
    session: &Session,
    grant: Grant<'_>,
    exposed: &str,
) -> Result<(), ErrorObject> {
    let Some(identity) = session.identity() else {
        return Ok(());
    };
    if identity.allows(grant) {
        return Ok(());
    }
    let what = match grant {
        Grant::Tool { .. } => "tool",
        Grant::Prompt { .. } => "prompt",
        Grant::Resource { .. } => "resource",
    };
    let message = format!(
        "{what} {exposed} is not permitted for {}; ask an operator for a scope that grants it",
        identity.principal()
    );
    let mut record = base_record(
        session,
        switchboard_store::method::AUTHZ_DENIED,
        Outcome::Denied,
    );
    record.target = Some(exposed.to_owned());
    record.error = Some(message.clone());
    shared.audit(record);
    shared
        .metrics
        .record_rejected_request(switchboard_telemetry::RejectReason::Forbidden);
    Err(ErrorObject::invalid_params(message)
        .with_data(serde_json::json!({ "reason": "forbidden", what: exposed })))
}

/// A record with who and where filled in from the session.
pub(crate) fn base_record(session: &Session, method: &str, outcome: Outcome) -> AuditRecord {
    let mut r = AuditRecord::new(method, outcome);
    r.identity = session.identity().map(|i| i.principal());
    r.session_id = (!session.is_stateless()).then(|| session.id.to_string());
    if let Some((name, version)) = session.client() {
        r.client_name = Some(name.clone());
        r.client_version = Some(version.clone());
    }
    r
}

/// What an audited request was about, read before it is dispatched.
#[derive(Debug)]
pub(crate) struct Audited {
    method: &'static str,
    target: Option<String>,
    arguments: Option<Value>,
    started: tokio::time::Instant,
}

impl Audited {
    /// `Some` for the methods the audit log covers.
    pub(crate) fn begin(method: &str, params: Option<&RawValue>) -> Option<Self> {
        let (method, field) = match method {
            "tools/call" => (switchboard_store::method::TOOLS_CALL, "name"),
            "resources/read" => (switchboard_store::method::RESOURCES_READ, "uri"),
            "prompts/get" => (switchboard_store::method::PROMPTS_GET, "name"),
            _ => return None,
        };
        let p: Value = params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default();
        Some(Self {
            method,
            target: p.get(field).and_then(Value::as_str).map(str::to_owned),
            arguments: p.get("arguments").cloned(),
            started: tokio::time::Instant::now(),
        })
    }

    /// Writes the record for the finished request.
    pub(crate) fn finish(
        self,
        shared: &Shared,
        session: &Session,
        outcome: &Result<Box<RawValue>, ErrorObject>,
    ) {
        if shared.audit.is_none() {
            return;
        }
        let (result, error) = match outcome {
            Ok(raw) => {
                let is_error = serde_json::from_str::<Value>(raw.get())
                    .ok()
                    .and_then(|v| v.get("isError").and_then(Value::as_bool))
                    .unwrap_or(false);
                if is_error {
                    (
                        Outcome::Error,
                        Some("the tool reported an error".to_owned()),
                    )
                } else {
                    (Outcome::Ok, None)
                }
            }
            Err(e) => (outcome_of(e), Some(e.message.clone())),
        };
        let mut r = base_record(session, self.method, result);
        let catalog = shared.catalog(session.route);
        r.upstream = self.target.as_deref().and_then(|t| {
            let i = match self.method {
                "tools/call" => catalog.tool(t).map(|x| x.upstream),
                "prompts/get" => catalog.prompt(t).map(|x| x.upstream),
                _ => catalog.resource(t),
            }?;
            Some(shared.upstreams[i].name().to_owned())
        });
        r.target = self.target;
        if let Some(args) = &self.arguments {
            let (digest, kept) = shared.audit_arguments.apply(args);
            r.arguments_digest = Some(digest);
            r.arguments = kept;
        }
        r.duration_ms = Some(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        r.error = error;
        shared.audit(r);
    }
}

fn outcome_of(e: &ErrorObject) -> Outcome {
    use switchboard_protocol::code;
    match e.code {
        code::REQUEST_TIMEOUT => Outcome::Timeout,
        code::REQUEST_CANCELLED => Outcome::Cancelled,
        code::RATE_LIMITED => Outcome::RateLimited,
        code::INVALID_PARAMS
            if e.data
                .as_ref()
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
                == Some("forbidden") =>
        {
            Outcome::Denied
        }
        code::INVALID_PARAMS | code::INVALID_REQUEST => Outcome::Invalid,
        _ => Outcome::Error,
    }
}

impl Shared {
    /// Hands a record to the audit writer (never blocks).
    pub(crate) fn audit(&self, record: AuditRecord) {
        if let Some(a) = &self.audit {
            a.record(record);
        }
    }

    /// Records a security event that is not a request (a failed
    /// authentication, a session used by another identity).
    pub(crate) fn audit_security_event(
        &self,
        method: &str,
        identity: Option<&Identity>,
        session: Option<&str>,
        error: &str,
        peer: Option<String>,
    ) {
        if self.audit.is_none() {
            return;
        }
        let outcome = if method == switchboard_store::method::AUTH_FAILED {
            Outcome::Unauthenticated
        } else {
            Outcome::Denied
        };
        let mut r = AuditRecord::new(method, outcome);
        r.identity = identity
            .map(Identity::principal)
            .or(peer.map(|p| format!("ip:{p}")));
        r.session_id = session.map(str::to_owned);
        r.error = Some(error.to_owned());
        self.audit(r);
    }

    /// Stores who opened a session (off the request path).
    pub(crate) fn record_session_start(&self, session: &Session) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let record = switchboard_store::SessionRecord {
            id: session.id.to_string(),
            identity: session.identity().map(|i| i.principal()),
            client_name: session.client().map(|c| c.0.clone()),
            client_version: session.client().map(|c| c.1.clone()),
            protocol_version: session.init().map(|i| i.protocol_version.to_owned()),
            started_at: chrono::Utc::now(),
        };
        self.tasks.spawn(async move {
            if let Err(e) = store.record_session_start(record).await {
                tracing::warn!(error = %e, "could not store session metadata");
            }
        });
    }

    /// Stores when a session ended.
    pub(crate) fn record_session_end(&self, session: &Session) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if session.is_stateless() {
            return;
        }
        let id = session.id.to_string();
        self.tasks.spawn(async move {
            if let Err(e) = store.record_session_end(&id, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "could not store the end of a session");
            }
        });
    }

    /// Stores one health report per upstream (status, breaker, score,
    /// latency), and drops reports past their retention.
    pub(crate) async fn store_health_reports(&self) {
        let Some(store) = &self.store else { return };
        let now = chrono::Utc::now();
        for r in self.report() {
            let (status, error) = (r.status.name(), r.status.error());
            let report = switchboard_store::HealthReport {
                time: now,
                upstream: r.name.clone(),
                status: status.to_owned(),
                detail: serde_json::json!({
                    "breaker": r.breaker,
                    "health_score": r.health_score,
                    "restarts": r.restarts,
                    "error": error,
                    "latency_ms": r.latency_ms.map(|(n, p50, p95, p99)| serde_json::json!({
                        "samples": n, "p50": p50, "p95": p95, "p99": p99
                    })),
                }),
            };
            if let Err(e) = store.insert_health_report(report).await {
                tracing::warn!(error = %e, "could not store a health report");
                return;
            }
        }
        let cutoff = now - chrono::Duration::days(HEALTH_REPORT_RETENTION_DAYS);
        if let Err(e) = store.purge_health_reports_before(cutoff).await {
            tracing::warn!(error = %e, "could not purge old health reports");
        }
    }

    /// Loads pins from the store into the book, before the first discovery.
    pub(crate) async fn load_pins(&self) {
        let Some(store) = &self.store else { return };
        match store.list_pins().await {
            Ok(pins) => {
                let n = pins.len();
                self.pins.load(pins.into_iter().map(|p| {
                    (
                        p.tool,
                        crate::pin::Pin {
                            hash: p.hash,
                            definition: p.definition,
                        },
                        p.pending.map(|c| crate::pin::Pending {
                            hash: c.hash,
                            definition: c.definition,
                        }),
                    )
                }));
                tracing::info!(pins = n, "tool pins loaded");
            }
            Err(e) => tracing::error!(
                error = %e,
                "could not load tool pins; definitions seen now are pinned in memory and written when the store answers"
            ),
        }
    }

    /// Stores a first-seen pin. Runs in the discovery task, off the request
    /// path. When another replica pinned a different definition first, its
    /// pin is adopted here too, and the caller re-checks.
    pub(crate) async fn persist_pin(&self, key: &str, pin: crate::pin::Pin) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let new = switchboard_store::NewPin {
            tool: key.to_owned(),
            hash: pin.hash.clone(),
            definition: pin.definition,
            first_seen: chrono::Utc::now(),
        };
        match store.insert_pin_if_absent(new).await {
            Ok(winner) if winner.hash != pin.hash => {
                tracing::warn!(
                    tool = key,
                    "another replica pinned a different definition first; adopting its pin"
                );
                self.pins.load([(
                    key.to_owned(),
                    crate::pin::Pin {
                        hash: winner.hash,
                        definition: winner.definition,
                    },
                    None,
                )]);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::error!(tool = key, error = %e, "could not store a tool pin");
                false
            }
        }
    }

    /// Stores a changed definition awaiting approval, and audits the change.
    pub(crate) async fn persist_pending(&self, key: &str, pending: crate::pin::Pending) {
        if let Some(store) = &self.store {
            if let Err(e) = store
                .record_pending_change(key, &pending.hash, &pending.definition, chrono::Utc::now())
                .await
            {
                tracing::error!(tool = key, error = %e, "could not store a changed tool definition");
            }
        }
        let outcome = if self.pinning == switchboard_config::PinningPolicy::Block {
            Outcome::Denied
        } else {
            Outcome::Ok
        };
        let mut r = AuditRecord::new(switchboard_store::method::TOOL_DEFINITION_CHANGED, outcome);
        r.target = Some(key.replacen('/', &self.server.separator, 1));
        r.error = Some(format!(
            "definition changed since it was pinned (new hash {})",
            pending.hash.get(..12).unwrap_or(&pending.hash)
        ));
        self.audit(r);
    }

    /// Approves the pending definition of a tool, named `upstream/tool` or
    /// by its federated name `upstream<sep>tool`. With `expected_hash`, only
    /// that very definition is approved.
    pub(crate) async fn approve_pin(
        &self,
        name: &str,
        expected_hash: Option<&str>,
    ) -> Result<String, String> {
        let key = self.pin_key(name).ok_or_else(|| {
            format!(
                "{name:?} names no tool of a configured upstream; write upstream{}tool",
                self.server.separator
            )
        })?;
        if let Some(store) = &self.store {
            match store
                .approve_pin(&key, expected_hash, chrono::Utc::now())
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(format!(
                        "{name}: no change waits for approval{}",
                        if expected_hash.is_some() {
                            " with that hash"
                        } else {
                            ""
                        }
                    ))
                }
                Err(e) => return Err(format!("store: {e}")),
            }
        }
        match self.pins.approve(&key) {
            Some(_) => {}
            None if self.store.is_some() => {
                // Approved in the store by another replica's view; reload.
                self.load_pins().await;
            }
            None => return Err(format!("{name}: no change waits for approval")),
        }
        tracing::info!(tool = key, "changed tool definition approved");
        self.rediscover_all();
        Ok(key)
    }

    /// The book key of a tool named either way.
    pub(crate) fn pin_key(&self, name: &str) -> Option<String> {
        if let Some((up, tool)) = name.split_once('/') {
            return self
                .upstreams
                .iter()
                .any(|u| u.name() == up)
                .then(|| crate::pin::key(up, tool));
        }
        let (up, tool) = name.split_once(self.server.separator.as_str())?;
        self.upstreams
            .iter()
            .any(|u| u.name() == up)
            .then(|| crate::pin::key(up, tool))
    }

    /// Adopts approvals made elsewhere (the CLI, another replica): a pending
    /// change whose definition the store now holds as the pin is approved.
    pub(crate) async fn sync_pins(&self) {
        let Some(store) = &self.store else { return };
        let pending = self.pins.pending();
        if pending.is_empty() {
            return;
        }
        let mut changed = false;
        for (key, _, waiting, _) in pending {
            if let Ok(Some(stored)) = store.get_pin(&key).await {
                if stored.hash == waiting.hash && self.pins.approve(&key).is_some() {
                    tracing::info!(tool = key, "changed tool definition approved");
                    changed = true;
                }
            }
        }
        if changed {
            self.rediscover_all();
        }
    }
}
