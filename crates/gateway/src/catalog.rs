//! The federated catalog: what each route offers and where each name goes.
//!
//! Pure data: built from the upstreams' discovered offers, published as an
//! immutable snapshot, rebuilt whole when any offer changes. List responses
//! are pre-encoded here, so `tools/list` on the hot path is a copy of bytes.
//!
//! # Rules
//! - Tools and prompts are exposed as `<upstream><sep><name>` under
//!   [`PrefixPolicy::Always`], bare under `Never`, and bare unless another
//!   upstream of the route offers the same name under `Conditional`. When two
//!   exposed names still collide, the upstream listed first in the config wins
//!   and the other entry is left out (and logged).
//! - Resources keep their URIs. A URI offered by several upstreams belongs to
//!   the one listed first in the config; the others' entry is left out.
//! - Order is deterministic: config order of upstreams, then each upstream's
//!   own order.

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use switchboard_config::{PrefixPolicy, UpstreamConfig};
use switchboard_protocol::{to_raw, RawValue};

/// A route: the federated endpoint or one upstream alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RouteId {
    Federated,
    Server(usize),
}

/// What one upstream offers, after its allow/deny filters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Offer {
    pub(crate) tools: Vec<Value>,
    pub(crate) prompts: Vec<Value>,
    pub(crate) resources: Vec<Value>,
    pub(crate) templates: Vec<Value>,
    /// Whether the upstream declared the resources capability: a URI no list
    /// names may still be readable there.
    pub(crate) has_resources: bool,
    pub(crate) instructions: Option<String>,
    /// False for the last known offer of an upstream that is down: it is left
    /// out of lists but still routes, so calls to its names fail with "upstream
    /// unavailable" (naming it) rather than "unknown tool".
    pub(crate) live: bool,
    /// Compiled `inputSchema` per tool name, when the upstream's arguments
    /// are validated.
    pub(crate) checks: HashMap<String, crate::validate::SchemaCheck>,
    /// Tools (upstream names) whose definition changed since it was pinned
    /// and waits for approval: they route, so a call is refused naming the
    /// reason, but they are not listed.
    pub(crate) held: std::collections::HashSet<String>,
}

impl Offer {
    /// Builds an offer from discovered lists, applying the upstream's filters.
    pub(crate) fn filtered(
        cfg: &UpstreamConfig,
        tools: Vec<Value>,
        prompts: Vec<Value>,
        resources: Vec<Value>,
        templates: Vec<Value>,
    ) -> Self {
        let by = |items: Vec<Value>, key: &str, filter: &switchboard_config::NameFilter| {
            items
                .into_iter()
                .filter(|v| {
                    v.get(key)
                        .and_then(Value::as_str)
                        .is_some_and(|n| filter.permits(n))
                })
                .collect::<Vec<_>>()
        };
        Self {
            tools: by(tools, "name", &cfg.tools),
            prompts: by(prompts, "name", &cfg.prompts),
            resources: by(resources, "uri", &cfg.resources),
            templates: by(templates, "uriTemplate", &cfg.resources),
            has_resources: false,
            instructions: None,
            live: true,
            checks: HashMap::new(),
            held: Default::default(),
        }
    }
}

/// Where a name exposed by a route leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) upstream: usize,
    /// The name as the upstream knows it.
    pub(crate) name: Arc<str>,
    /// Whether calling it twice is harmless, so a failed call may be retried:
    /// prompts always; tools the upstream marks read-only or idempotent.
    pub(crate) safe: bool,
    /// Whether the upstream marks it `readOnlyHint: true` (cacheable).
    pub(crate) read_only: bool,
    /// The tool's compiled `inputSchema`, when arguments are validated.
    pub(crate) check: Option<crate::validate::SchemaCheck>,
    /// Held by tool pinning: refused until an operator approves it.
    pub(crate) held: bool,
    /// The tool's `inputSchema` when it has `x-mcp-header` annotations:
    /// stateless clients must mirror those arguments in `Mcp-Param-*`.
    pub(crate) header_schema: Option<Arc<Value>>,
}

/// A member of a route, as the catalog builder sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    pub(crate) index: usize,
    pub(crate) name: &'a str,
    pub(crate) prefix: PrefixPolicy,
    pub(crate) offer: &'a Offer,
}

#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) tools_result: Box<RawValue>,
    pub(crate) prompts_result: Box<RawValue>,
    pub(crate) resources_result: Box<RawValue>,
    pub(crate) templates_result: Box<RawValue>,
    tools: HashMap<String, Target>,
    prompts: HashMap<String, Target>,
    /// Exposed tool/prompt name per (upstream, upstream name), for completion refs.
    prompt_names: HashMap<(usize, String), String>,
    resources: HashMap<String, usize>,
    templates: Vec<(UriTemplate, usize)>,
    /// Upstream of each listed template, by its `uriTemplate` text.
    template_sources: HashMap<String, usize>,
    resource_upstreams: Vec<usize>,
    pub(crate) members: Vec<usize>,
}

impl Catalog {
    pub(crate) fn build(members: &[Member<'_>], separator: &str) -> Self {
        let (tools_list, tools, _) = expose(members, separator, |m| &m.offer.tools, "tools");
        let (prompts_list, prompts, prompt_names) =
            expose(members, separator, |m| &m.offer.prompts, "prompts");
        let mut resources = HashMap::new();
        let mut resources_list = Vec::new();
        let mut templates = Vec::new();
        let mut templates_list = Vec::new();
        let mut template_sources = HashMap::new();
        for m in members {
            for r in &m.offer.resources {
                let Some(uri) = r.get("uri").and_then(Value::as_str) else {
                    continue;
                };
                if resources.contains_key(uri) {
                    tracing::warn!(
                        upstream = m.name,
                        uri,
                        "resource offered by an earlier upstream too; keeping the earlier one"
                    );
                    continue;
                }
                resources.insert(uri.to_owned(), m.index);
                if m.offer.live {
                    resources_list.push(r.clone());
                }
            }
            for t in &m.offer.templates {
                let Some(tpl) = t.get("uriTemplate").and_then(Value::as_str) else {
                    continue;
                };
                templates.push((UriTemplate::parse(tpl), m.index));
                template_sources.entry(tpl.to_owned()).or_insert(m.index);
                if m.offer.live {
                    templates_list.push(t.clone());
                }
            }
        }
        Self {
            tools_result: to_raw(&json!({ "tools": tools_list })),
            prompts_result: to_raw(&json!({ "prompts": prompts_list })),
            resources_result: to_raw(&json!({ "resources": resources_list })),
            templates_result: to_raw(&json!({ "resourceTemplates": templates_list })),
            tools,
            prompts,
            prompt_names,
            resources,
            templates,
            template_sources,
            resource_upstreams: members
                .iter()
                .filter(|m| m.offer.has_resources)
                .map(|m| m.index)
                .collect(),
            members: members.iter().map(|m| m.index).collect(),
        }
    }

    pub(crate) fn tool(&self, exposed: &str) -> Option<&Target> {
        self.tools.get(exposed)
    }

    pub(crate) fn prompt(&self, exposed: &str) -> Option<&Target> {
        self.prompts.get(exposed)
    }

    pub(crate) fn includes(&self, upstream: usize) -> bool {
        self.members.contains(&upstream)
    }

    /// The upstream that serves `uri`: a listed resource, else a matching
    /// template, else the only member that serves resources at all.
    pub(crate) fn resource(&self, uri: &str) -> Option<usize> {
        if let Some(u) = self.resources.get(uri) {
            return Some(*u);
        }
        if let Some((_, u)) = self.templates.iter().find(|(t, _)| t.matches(uri)) {
            return Some(*u);
        }
        match self.resource_upstreams.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// The upstream of a listed resource URI or a listed template's text.
    pub(crate) fn resource_or_template(&self, uri_or_template: &str) -> Option<usize> {
        self.template_sources
            .get(uri_or_template)
            .copied()
            .or_else(|| self.resource(uri_or_template))
    }

    /// The exposed name of an upstream's prompt (used to map completion refs back).
    #[allow(dead_code)]
    pub(crate) fn exposed_prompt(&self, upstream: usize, name: &str) -> Option<&str> {
        self.prompt_names
            .get(&(upstream, name.to_owned()))
            .map(String::as_str)
    }
}

type Exposed = (
    Vec<Value>,
    HashMap<String, Target>,
    HashMap<(usize, String), String>,
);

fn expose<'a>(
    members: &[Member<'a>],
    separator: &str,
    items: impl Fn(&Member<'a>) -> &'a Vec<Value>,
    what: &str,
) -> Exposed {
    // How many members offer each bare name, for the conditional policy.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in members {
        for v in items(m) {
            if let Some(n) = v.get("name").and_then(Value::as_str) {
                *counts.entry(n).or_default() += 1;
            }
        }
    }
    let mut list = Vec::new();
    let mut index = HashMap::new();
    let mut reverse = HashMap::new();
    for m in members {
        for v in items(m) {
            let Some(name) = v.get("name").and_then(Value::as_str) else {
                continue;
            };
            let prefixed = match m.prefix {
                PrefixPolicy::Always => true,
                PrefixPolicy::Never => false,
                PrefixPolicy::Conditional => counts.get(name).copied().unwrap_or(0) > 1,
            };
            let exposed = if prefixed {
                format!("{}{separator}{name}", m.name)
            } else {
                name.to_owned()
            };
            if index.contains_key(&exposed) {
                tracing::warn!(
                    upstream = m.name,
                    name = exposed,
                    kind = what,
                    "name already taken by an earlier upstream; leaving this one out"
                );
                continue;
            }
            let mut entry = match v {
                Value::Object(o) => o.clone(),
                _ => Map::new(),
            };
            entry.insert("name".into(), Value::String(exposed.clone()));
            let held = what == "tools" && m.offer.held.contains(name);
            if m.offer.live && !held {
                list.push(Value::Object(entry));
            }
            reverse.insert((m.index, name.to_owned()), exposed.clone());
            let hint = |k: &str| {
                v.pointer(&format!("/annotations/{k}"))
                    .and_then(Value::as_bool)
                    == Some(true)
            };
            let read_only = hint("readOnlyHint");
            let safe = what == "prompts" || read_only || hint("idempotentHint");
            index.insert(
                exposed,
                Target {
                    upstream: m.index,
                    name: name.into(),
                    safe,
                    read_only,
                    check: (what == "tools")
                        .then(|| m.offer.checks.get(name).cloned())
                        .flatten(),
                    held,
                    header_schema: v
                        .get("inputSchema")
                        .filter(|s| {
                            what == "tools"
                                && !switchboard_protocol::modern::x_mcp_headers(s).is_empty()
                        })
                        .map(|s| Arc::new(s.clone())),
                },
            );
        }
    }
    (list, index, reverse)
}

/// A URI template reduced to what routing needs: literal parts in order,
/// each `{...}` expression matching any non-empty run of characters.
#[derive(Debug, Clone)]
struct UriTemplate {
    parts: Vec<String>,
}

impl UriTemplate {
    fn parse(template: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = template;
        let mut literal = String::new();
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            parts.push(std::mem::take(&mut literal));
            rest = match rest[open..].find('}') {
                Some(close) => &rest[open + close + 1..],
                None => "",
            };
        }
        literal.push_str(rest);
        parts.push(literal);
        Self { parts }
    }

    fn matches(&self, uri: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return false;
        };
        let Some(mut remaining) = uri.strip_prefix(first.as_str()) else {
            return false;
        };
        for (i, lit) in rest.iter().enumerate() {
            let last = i == rest.len() - 1;
            if last {
                return remaining.len() > lit.len() && remaining.ends_with(lit.as_str())
                    || (lit.is_empty() && !remaining.is_empty());
            }
            // The expression before `lit` consumes at least one character.
            match remaining.get(1..).and_then(|r| r.find(lit.as_str())) {
                Some(pos) => remaining = &remaining[1 + pos + lit.len()..],
                None => return false,
            }
        }
        remaining.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(tools: &[&str], prompts: &[&str], resources: &[&str]) -> Offer {
        Offer {
            tools: tools
                .iter()
                .map(|n| json!({"name": n, "inputSchema": {"type": "object", "$defs": {}}}))
                .collect(),
            prompts: prompts.iter().map(|n| json!({"name": n})).collect(),
            resources: resources
                .iter()
                .map(|u| json!({"uri": u, "name": u}))
                .collect(),
            templates: vec![],
            has_resources: !resources.is_empty(),
            instructions: None,
            live: true,
            checks: HashMap::new(),
            held: Default::default(),
        }
    }

    fn names(raw: &RawValue, key: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(raw.get()).unwrap();
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn prefix_policies_expose_names_as_documented() {
        let a = offer(&["search", "only_a"], &["p"], &[]);
        let b = offer(&["search", "only_b"], &[], &[]);
        let cases = [
            (
                PrefixPolicy::Always,
                vec!["a__search", "a__only_a", "b__search", "b__only_b"],
            ),
            (
                PrefixPolicy::Conditional,
                vec!["a__search", "only_a", "b__search", "only_b"],
            ),
            (PrefixPolicy::Never, vec!["search", "only_a", "only_b"]),
        ];
        for (policy, expect) in cases {
            let members = [
                Member {
                    index: 0,
                    name: "a",
                    prefix: policy,
                    offer: &a,
                },
                Member {
                    index: 1,
                    name: "b",
                    prefix: policy,
                    offer: &b,
                },
            ];
            let c = Catalog::build(&members, "__");
            assert_eq!(names(&c.tools_result, "tools"), expect, "{policy:?}");
        }
    }

    #[test]
    fn an_exposed_name_routes_back_to_its_upstream_and_original_name() {
        let a = offer(&["search"], &["greet"], &[]);
        let c = Catalog::build(
            &[Member {
                index: 3,
                name: "docs",
                prefix: PrefixPolicy::Always,
                offer: &a,
            }],
            ".",
        );
        assert_eq!(
            c.tool("docs.search"),
            Some(&Target {
                upstream: 3,
                name: "search".into(),
                safe: false,
                read_only: false,
                check: None,
                held: false,
                header_schema: None,
            })
        );
        assert_eq!(c.prompt("docs.greet").unwrap().name.as_ref(), "greet");
        assert!(c.prompt("docs.greet").unwrap().safe, "prompts are reads");
        assert_eq!(c.tool("search"), None);
        assert_eq!(c.exposed_prompt(3, "greet"), Some("docs.greet"));
    }

    #[test]
    fn a_held_tool_is_not_listed_but_still_routes_marked_held() {
        let mut a = offer(&["send", "read"], &[], &[]);
        a.held.insert("send".into());
        let c = Catalog::build(
            &[Member {
                index: 0,
                name: "mail",
                prefix: PrefixPolicy::Always,
                offer: &a,
            }],
            "__",
        );
        assert_eq!(names(&c.tools_result, "tools"), ["mail__read"]);
        assert!(c.tool("mail__send").unwrap().held);
        assert!(!c.tool("mail__read").unwrap().held);
    }

    #[test]
    fn only_tools_marked_read_only_or_idempotent_are_safe_to_retry() {
        let mut o = offer(&[], &[], &[]);
        o.tools = vec![
            json!({"name": "get", "annotations": {"readOnlyHint": true}}),
            json!({"name": "put", "annotations": {"idempotentHint": true}}),
            json!({"name": "send", "annotations": {"readOnlyHint": false}}),
            json!({"name": "plain"}),
        ];
        let c = Catalog::build(
            &[Member {
                index: 0,
                name: "a",
                prefix: PrefixPolicy::Never,
                offer: &o,
            }],
            "__",
        );
        let safe = |n: &str| c.tool(n).unwrap().safe;
        assert!(safe("get") && safe("put"));
        assert!(!safe("send") && !safe("plain"));
    }

    #[test]
    fn unknown_fields_of_a_tool_survive_federation() {
        let a = offer(&["t"], &[], &[]);
        let c = Catalog::build(
            &[Member {
                index: 0,
                name: "a",
                prefix: PrefixPolicy::Always,
                offer: &a,
            }],
            "__",
        );
        assert!(c.tools_result.get().contains("\"$defs\":{}"));
    }

    #[test]
    fn a_down_upstreams_names_leave_the_lists_but_still_route_to_it() {
        let mut a = offer(&["search"], &["p"], &["file:///x"]);
        a.live = false;
        let c = Catalog::build(
            &[Member {
                index: 0,
                name: "a",
                prefix: PrefixPolicy::Always,
                offer: &a,
            }],
            "__",
        );
        assert!(names(&c.tools_result, "tools").is_empty());
        assert!(names(&c.prompts_result, "prompts").is_empty());
        assert_eq!(c.tool("a__search").unwrap().upstream, 0);
        assert_eq!(c.resource("file:///x"), Some(0));
    }

    #[test]
    fn a_shared_uri_belongs_to_the_first_upstream() {
        let a = offer(&[], &[], &["file:///x"]);
        let b = offer(&[], &[], &["file:///x", "file:///y"]);
        let members = [
            Member {
                index: 0,
                name: "a",
                prefix: PrefixPolicy::Always,
                offer: &a,
            },
            Member {
                index: 1,
                name: "b",
                prefix: PrefixPolicy::Always,
                offer: &b,
            },
        ];
        let c = Catalog::build(&members, "__");
        assert_eq!(c.resource("file:///x"), Some(0));
        assert_eq!(c.resource("file:///y"), Some(1));
        assert_eq!(
            c.resource("file:///z"),
            None,
            "two resource upstreams: an unlisted uri is ambiguous"
        );
    }

    #[test]
    fn uri_templates_match_expressions_of_one_or_more_characters() {
        let t = UriTemplate::parse("test://template/{id}/data");
        assert!(t.matches("test://template/123/data"));
        assert!(!t.matches("test://template//data"));
        assert!(!t.matches("test://template/123/other"));
        let t = UriTemplate::parse("fake://item/{id}");
        assert!(t.matches("fake://item/7"));
        assert!(!t.matches("fake://item/"));
        let t = UriTemplate::parse("x://{a}/{b}");
        assert!(t.matches("x://1/2"));
        assert!(!t.matches("x://1"));
    }

    #[test]
    fn filters_drop_what_the_config_denies() {
        let cfg = switchboard_config::parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\ntools = { deny = [\"delete_*\"] }",
            "t",
        )
        .unwrap();
        let o = Offer::filtered(
            &cfg.upstreams[0],
            vec![json!({"name": "delete_all"}), json!({"name": "read"})],
            vec![],
            vec![],
            vec![],
        );
        assert_eq!(o.tools.len(), 1);
    }
}
