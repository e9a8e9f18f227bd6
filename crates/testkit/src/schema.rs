//! Tool schemas written as `json!` literals.

use std::sync::Arc;

use rmcp::model::JsonObject;
use serde_json::Value;

/// Turns a `json!({...})` literal into a schema object.
///
/// Only object literals are passed in; anything else becomes `{}`, which is
/// still a valid (if useless) schema rather than a panic.
pub(crate) fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}
