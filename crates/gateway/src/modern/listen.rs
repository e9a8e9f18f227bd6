//! `subscriptions/listen`: the stateless revision's only notification channel.
//!
//! A listen request opens a long-lived SSE response. The gateway first sends
//! `notifications/subscriptions/acknowledged` with the filter it accepted, then
//! only the notification types the client opted in to, each tagged with the
//! listen request's id as `subscriptionId`. Underneath, the listener is a
//! session in the gateway's session table, so catalog changes and upstream
//! resource updates reach it by the same fan-out as legacy sessions; it ends
//! (and releases its upstream subscriptions) when the client closes the stream.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use switchboard_protocol::modern::META_SUBSCRIPTION_ID;
use switchboard_protocol::{decode_message, encode_notification, encode_result, to_raw, Message};

use super::{frame, reply, sse, Call};
use crate::catalog::RouteId;
use crate::outbound::Next;
use crate::session::Session;
use crate::state::Shared;

const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Resource URIs one listen request may subscribe to.
const MAX_RESOURCE_SUBSCRIPTIONS: usize = 256;

/// The notification types a client asked for, as far as the gateway has them.
#[derive(Debug, Default, Clone)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

impl Filter {
    fn from_params(p: &Map<String, Value>) -> Self {
        let n = p.get("notifications").cloned().unwrap_or(Value::Null);
        let flag = |k: &str| n.get(k).and_then(Value::as_bool) == Some(true);
        Self {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris: n
                .get("resourceSubscriptions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .take(MAX_RESOURCE_SUBSCRIPTIONS)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.tools {
            m.insert("toolsListChanged".into(), Value::Bool(true));
        }
        if self.prompts {
            m.insert("promptsListChanged".into(), Value::Bool(true));
        }
        if self.resources {
            m.insert("resourcesListChanged".into(), Value::Bool(true));
        }
        if !self.uris.is_empty() {
            m.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(m)
    }

    fn wants(&self, method: &str) -> bool {
        match method {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            // The fan-out only delivers updates of URIs this listener holds.
            "notifications/resources/updated" => !self.uris.is_empty(),
            _ => false,
        }
    }
}

/// Adds the listen request's id to a notification's `_meta`.
fn tag(method: &str, params: Option<&switchboard_protocol::RawValue>, id: &Value) -> Bytes {
    let mut p = switchboard_protocol::params_object(params).unwrap_or_default();
    let meta = p
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        m.insert(META_SUBSCRIPTION_ID.into(), id.clone());
    }
    Bytes::from(encode_notification(method, Some(&to_raw(&p))))
}

/// Ends the listener's session when its stream goes away.
struct Listening {
    shared: Arc<Shared>,
    session: Arc<Session>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let (shared, id) = (self.shared.clone(), self.session.id.clone());
        let tasks = shared.tasks.clone();
        tasks.spawn(async move {
            shared.end_session(&id).await;
        });
    }
}

pub(super) async fn listen(call: Call, route: RouteId, params: Map<String, Value>) -> Response {
    let filter = Filter::from_params(&params);
    let shared = call.shared.clone();
    let session = Arc::new(Session::stateless(
        route,
        call.meta.protocol_version,
        call.meta.client_capabilities.clone(),
        None,
    ));
    if let Err(e) = shared.add_session(session.clone()) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, Some(&call.id), &e);
    }
    let listening = Listening {
        shared: shared.clone(),
        session: session.clone(),
    };
    let catalog = shared.catalog(route);
    let mut accepted = filter.clone();
    accepted.uris.clear();
    for uri in &filter.uris {
        let Some(u) = catalog
            .resource(uri)
            .filter(|u| shared.upstreams[*u].config().resources.permits(uri))
        else {
            continue;
        };
        let p = to_raw(&json!({ "uri": uri }));
        if shared.subscribe(&session, u, uri, Some(p)).await.is_ok() {
            accepted.uris.push(uri.clone());
        }
    }
    let id = call.id.to_value();
    let ack = {
        let p =
            json!({ "notifications": accepted.to_json(), "_meta": { META_SUBSCRIPTION_ID: id } });
        Bytes::from(encode_notification(
            "notifications/subscriptions/acknowledged",
            Some(&to_raw(&p)),
        ))
    };
    let stream = session.standalone.clone();
    let generation = stream.take_over();
    let shutdown = shared.shutdown.clone();
    let call = Arc::new(call);
    let state = (Some(ack), 0u64, listening, false);
    let body = futures::stream::unfold(state, move |(first, mut cursor, listening, done)| {
        let (stream, accepted, id, shutdown, call) = (
            stream.clone(),
            accepted.clone(),
            id.clone(),
            shutdown.clone(),
            call.clone(),
        );
        async move {
            if let Some(b) = first {
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(frame(&b)),
                    (None, cursor, listening, false),
                ));
            }
            if done {
                return None;
            }
            loop {
                let next = tokio::select! {
                    n = tokio::time::timeout(KEEP_ALIVE, stream.next(&mut cursor, generation)) => n,
                    () = shutdown.cancelled() => Ok(Next::End),
                };
                match next {
                    Err(_) => {
                        return Some((
                            Ok(Bytes::from_static(b": keep-alive\n\n")),
                            (None, cursor, listening, false),
                        ))
                    }
                    Ok(Next::Event(e)) => {
                        let Ok(Message::Notification(n)) = decode_message(&e.data) else {
                            continue;
                        };
                        if accepted.wants(&n.method) {
                            let b = tag(&n.method, n.params.as_deref(), &id);
                            return Some((Ok(frame(&b)), (None, cursor, listening, false)));
                        }
                    }
                    Ok(Next::End | Next::Superseded) => {
                        // Graceful end: the listen request completes.
                        let result = json!({ "resultType": "complete", "_meta": { META_SUBSCRIPTION_ID: id } });
                        let b = encode_result(&call.id, &to_raw(&result));
                        return Some((Ok(frame(&b)), (None, cursor, listening, true)));
                    }
                }
            }
        }
    });
    sse(Body::from_stream(body))
}
