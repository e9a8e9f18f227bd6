//! Tool-argument checks before a call is forwarded: the tool's own
//! `inputSchema`, and limits on nesting depth and string length that hold
//! whatever the schema says.
//!
//! Schemas are compiled once per discovered offer. Network and file `$ref`s
//! are never fetched (the crate is built without resolvers, as the spec asks);
//! a schema that cannot be compiled is logged and its tool is not checked.

use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Arguments nested deeper than this are refused.
pub(crate) const MAX_DEPTH: usize = 64;
/// A string argument longer than this is refused.
pub(crate) const MAX_STRING_BYTES: usize = 1024 * 1024;
/// Schema errors listed in one message at most.
const MAX_LISTED: usize = 5;

/// A compiled `inputSchema`.
#[derive(Clone)]
pub(crate) struct SchemaCheck(Arc<jsonschema::Validator>);

impl SchemaCheck {
    /// Compiles a tool's `inputSchema`; `None` (logged) when it cannot be.
    pub(crate) fn compile(upstream: &str, tool: &str, schema: &Value) -> Option<Self> {
        match jsonschema::validator_for(schema) {
            Ok(v) => Some(Self(Arc::new(v))),
            Err(e) => {
                tracing::warn!(upstream, tool, error = %e, "inputSchema does not compile; arguments of this tool are not checked");
                None
            }
        }
    }

    /// Checks `args`; the error names each offending field by its JSON pointer.
    pub(crate) fn check(&self, args: &Value) -> Result<(), String> {
        let problems: Vec<String> = self
            .0
            .iter_errors(args)
            .take(MAX_LISTED)
            .map(|e| {
                let at = e.instance_path.to_string();
                let at = if at.is_empty() {
                    "(the arguments)".to_owned()
                } else {
                    at
                };
                format!("{at}: {e}")
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl fmt::Debug for SchemaCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SchemaCheck")
    }
}

impl PartialEq for SchemaCheck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SchemaCheck {}

/// Refuses arguments nested deeper than [`MAX_DEPTH`] or holding a string
/// longer than [`MAX_STRING_BYTES`], naming where.
pub(crate) fn check_shape(args: &Value) -> Result<(), String> {
    fn walk(v: &Value, depth: usize, path: &mut String) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{path}: nested deeper than {MAX_DEPTH} levels"));
        }
        match v {
            Value::String(s) if s.len() > MAX_STRING_BYTES => Err(format!(
                "{}: string of {} bytes is over the {MAX_STRING_BYTES}-byte limit",
                if path.is_empty() { "/" } else { path },
                s.len()
            )),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    walk(item, depth + 1, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(item, depth + 1, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(args, 0, &mut String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_errors_name_the_offending_field() {
        let c = SchemaCheck::compile(
            "u",
            "t",
            &json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
        )
        .unwrap();
        assert!(c.check(&json!({"a": 1, "b": 2})).is_ok());
        let e = c.check(&json!({"a": "x", "b": 2})).unwrap_err();
        assert!(e.starts_with("/a:") && e.contains("number"), "{e}");
        let e = c.check(&json!({"a": 1})).unwrap_err();
        assert!(e.contains("(the arguments)") && e.contains("\"b\""), "{e}");
    }

    #[test]
    fn keywords_of_2020_12_and_local_defs_work() {
        let c = SchemaCheck::compile(
            "u",
            "t",
            &json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                    "$defs": {"n": {"type": "string", "minLength": 2}},
                    "properties": {"name": {"$ref": "#/$defs/n"}}, "additionalProperties": false}),
        )
        .unwrap();
        assert!(c.check(&json!({"name": "ok"})).is_ok());
        assert!(c
            .check(&json!({"name": "x"}))
            .unwrap_err()
            .starts_with("/name:"));
        assert!(c.check(&json!({"other": 1})).is_err());
    }

    #[test]
    fn a_network_ref_is_never_fetched() {
        let schema =
            json!({"type": "object", "properties": {"x": {"$ref": "https://example.com/x.json"}}});
        assert!(SchemaCheck::compile("u", "t", &schema).is_none());
    }

    #[test]
    fn deep_nesting_and_huge_strings_are_refused_with_their_place() {
        let mut deep = json!(1);
        for _ in 0..(MAX_DEPTH + 1) {
            deep = json!({"k": deep});
        }
        assert!(check_shape(&deep).unwrap_err().contains("deeper than 64"));
        let big = json!({"doc": ["ok", "x".repeat(MAX_STRING_BYTES + 1)]});
        assert!(check_shape(&big).unwrap_err().starts_with("/doc/1:"));
        assert!(check_shape(&json!({"a": [1, {"b": "c"}]})).is_ok());
    }
}
