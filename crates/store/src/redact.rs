//! What of a call's arguments reaches the audit log: a digest always, the
//! arguments themselves only when configured, and never a secret field.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";

/// How arguments are recorded, from `[audit]`.
#[derive(Debug, Clone)]
pub struct ArgumentPolicy {
    pub record_arguments: bool,
    /// Normalised (lowercase, no `-`/`_`) field-name fragments.
    fragments: Vec<String>,
}

impl ArgumentPolicy {
    pub fn new(record_arguments: bool, redact_fields: &[String]) -> Self {
        Self {
            record_arguments,
            fragments: redact_fields
                .iter()
                .map(|f| normalise(f))
                .filter(|f| !f.is_empty())
                .collect(),
        }
    }

    /// Returns the digest of the redacted arguments, and the redacted
    /// arguments when they are to be recorded.
    ///
    /// The digest is taken after redaction: a hash of a short secret could be
    /// reversed by guessing, and the audit log must hold no secret.
    pub fn apply(&self, arguments: &Value) -> (String, Option<Value>) {
        let mut redacted = arguments.clone();
        self.redact(&mut redacted);
        let digest = digest(&redacted);
        (digest, self.record_arguments.then_some(redacted))
    }

    /// Replaces, at any depth, the value of every object field whose name
    /// contains one of the configured fragments.
    pub fn redact(&self, value: &mut Value) {
        // An explicit stack: arguments come from clients, so no recursion.
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    for (k, field) in map.iter_mut() {
                        if self.is_secret(k) {
                            *field = Value::String(REDACTED.to_owned());
                        } else {
                            stack.push(field);
                        }
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                _ => {}
            }
        }
    }

    fn is_secret(&self, key: &str) -> bool {
        let key = normalise(key);
        self.fragments.iter().any(|f| key.contains(f.as_str()))
    }
}

fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// SHA-256 (hex) of the canonical JSON of `value`: object keys sorted, no
/// whitespace, so the same arguments give the same digest whatever their
/// key order.
pub fn digest(value: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(canonical_json(value).as_bytes());
    hex::encode(hasher.finalize())
}

/// `value` as compact JSON with object keys in byte order.
pub fn canonical_json(value: &Value) -> String {
    enum Step<'a> {
        Value(&'a Value),
        Key(&'a String),
        Text(&'static str),
    }
    let mut out = String::new();
    let mut stack = vec![Step::Value(value)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Text(t) => out.push_str(t),
            Step::Value(Value::Object(map)) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                stack.push(Step::Text("}"));
                // Pushed in reverse so they pop in order.
                for (i, (k, v)) in entries.into_iter().enumerate().rev() {
                    stack.push(Step::Value(v));
                    stack.push(Step::Text(":"));
                    stack.push(Step::Key(k));
                    if i > 0 {
                        stack.push(Step::Text(","));
                    }
                }
            }
            Step::Value(Value::Array(items)) => {
                out.push('[');
                stack.push(Step::Text("]"));
                for (i, v) in items.iter().enumerate().rev() {
                    stack.push(Step::Value(v));
                    if i > 0 {
                        stack.push(Step::Text(","));
                    }
                }
            }
            Step::Value(scalar) => out.push_str(&scalar.to_string()),
            Step::Key(k) => out.push_str(&Value::String(k.clone()).to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(record: bool) -> ArgumentPolicy {
        let fields: Vec<String> = ["password", "token", "secret", "api_key", "authorization"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        ArgumentPolicy::new(record, &fields)
    }

    #[test]
    fn secret_fields_are_redacted_at_any_depth_and_in_any_spelling() {
        let args = json!({
            "query": "rust",
            "Password": "hunter2",
            "nested": {"access_token": "t", "list": [{"X-Api-Key": "k", "keep": 1}]},
            "clientSecret": {"deep": "s"}
        });
        let (_, recorded) = policy(true).apply(&args);
        let recorded = recorded.unwrap();
        assert_eq!(
            recorded,
            json!({
                "query": "rust",
                "Password": REDACTED,
                "nested": {"access_token": REDACTED, "list": [{"X-Api-Key": REDACTED, "keep": 1}]},
                "clientSecret": REDACTED
            })
        );
        let text = recorded.to_string();
        for secret in ["hunter2", "\"t\"", "\"k\"", "\"s\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn arguments_are_kept_only_when_recording_is_on() {
        let (digest_off, none) = policy(false).apply(&json!({"a": 1}));
        let (digest_on, some) = policy(true).apply(&json!({"a": 1}));
        assert!(none.is_none());
        assert_eq!(some, Some(json!({"a": 1})));
        assert_eq!(digest_off, digest_on);
    }

    #[test]
    fn the_digest_ignores_key_order_and_whitespace_but_not_values() {
        let a: Value =
            serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "é\n"}], "a": null}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"é\n","y":2}]}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":null,"b":[1,{"x":"é\n","y":2}]}"#
        );
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(
            digest(&a),
            digest(&json!({"a": null, "b": [1, {"x": "é\n", "y": 3}]}))
        );
        assert_eq!(digest(&json!({})).len(), 64);
    }

    #[test]
    fn secrets_do_not_influence_the_digest() {
        let (a, _) = policy(false).apply(&json!({"q": 1, "token": "one"}));
        let (b, _) = policy(false).apply(&json!({"q": 1, "token": "two"}));
        assert_eq!(a, b);
    }
}
