//! Scopes: what an identity may use.
//!
//! # Grammar
//!
//! ```text
//! scope    = "admin" | grant | "!" grant
//! grant    = "*"                      every tool, prompt and resource (never admin)
//!          | qualified                 tools, prompts and resources of matching upstreams
//!          | "tool:"     ("*" | qualified)
//!          | "prompt:"   ("*" | qualified)
//!          | "resource:" uri-glob      resources by URI, from any upstream
//!          | "upstream:" upstream-glob everything an upstream offers
//! qualified = upstream-glob SEP name-glob
//! ```
//!
//! `SEP` is the gateway's namespacing separator (`__` by default). A
//! qualified pattern is split at its *first* separator: `web__*` means
//! upstream glob `web` and name glob `*`. It is matched against the target's
//! upstream and its own name separately, never against a concatenated
//! string, so `web__*` cannot reach a tool `admin` of an upstream named
//! `web__x`, whatever the exposure policy makes of the names. For a resource
//! the name glob is matched against the URI (`docs__file:///guide/*`). An
//! upstream whose name contains the separator can only be named with
//! `upstream:`.
//!
//! An unqualified pattern without a separator (other than `*`) is refused:
//! `search` would otherwise mean "a tool called search on any upstream",
//! which grants more the moment a new upstream is added. Write `*__search`
//! to mean that.
//!
//! # Decisions
//!
//! - A name is allowed when some grant matches and no negation does:
//!   negations always win, in any order.
//! - Grants are case-sensitive; negations are case-insensitive, so
//!   `!github__delete_*` also hides `github__Delete_repo`. Both directions
//!   fail closed.
//! - Globs: `*` and `?` match any character including `/`, `[a-z]` and
//!   `{a,b}` work, `\` escapes.
//! - Resource URIs are normalised before matching (scheme and authority
//!   lower-cased, percent-encoded unreserved characters decoded). A URI that
//!   hides its path (a `.` or `..` segment, raw or encoded; an encoded `/`
//!   or `\`; a `%25`; a backslash or control character) matches no grant
//!   narrower than the whole upstream, and every negation whose upstream
//!   matches.
//! - `admin` grants only the admin API; it does not imply `*`.

use std::fmt;
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};

/// The most scopes one identity may carry, and the longest scope. JWT
/// claims are attacker-influenced input; these bound the work of parsing.
pub const MAX_SCOPES: usize = 256;
pub const MAX_SCOPE_LEN: usize = 512;

/// A scope that could not be parsed, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {pattern:?}: {reason}")]
pub struct ScopeError {
    pub pattern: String,
    pub reason: String,
}

impl ScopeError {
    fn new(pattern: &str, reason: impl Into<String>) -> Self {
        // Patterns may come from a token; keep the message bounded.
        let pattern: String = pattern.chars().take(80).collect();
        Self {
            pattern,
            reason: reason.into(),
        }
    }
}

/// Something an identity wants to use, named by the upstream that serves
/// it and the upstream's own name for it (not the exposed, possibly
/// prefixed name), so the check does not depend on the prefix policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Tool { upstream: &'a str, name: &'a str },
    Prompt { upstream: &'a str, name: &'a str },
    Resource { upstream: &'a str, uri: &'a str },
}

impl<'a> Target<'a> {
    pub fn tool(upstream: &'a str, name: &'a str) -> Self {
        Target::Tool { upstream, name }
    }
    pub fn prompt(upstream: &'a str, name: &'a str) -> Self {
        Target::Prompt { upstream, name }
    }
    pub fn resource(upstream: &'a str, uri: &'a str) -> Self {
        Target::Resource { upstream, uri }
    }

    fn kind(&self) -> Kind {
        match self {
            Target::Tool { .. } => Kind::Tool,
            Target::Prompt { .. } => Kind::Prompt,
            Target::Resource { .. } => Kind::Resource,
        }
    }

    fn upstream(&self) -> &'a str {
        match self {
            Target::Tool { upstream, .. }
            | Target::Prompt { upstream, .. }
            | Target::Resource { upstream, .. } => upstream,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tool,
    Prompt,
    Resource,
}

/// Which kinds a rule applies to.
#[derive(Debug, Clone, Copy)]
struct Kinds {
    tool: bool,
    prompt: bool,
    resource: bool,
}

impl Kinds {
    const ALL: Kinds = Kinds {
        tool: true,
        prompt: true,
        resource: true,
    };
    fn only(k: Kind) -> Kinds {
        Kinds {
            tool: k == Kind::Tool,
            prompt: k == Kind::Prompt,
            resource: k == Kind::Resource,
        }
    }
    fn has(&self, k: Kind) -> bool {
        match k {
            Kind::Tool => self.tool,
            Kind::Prompt => self.prompt,
            Kind::Resource => self.resource,
        }
    }
}

/// A glob plus whether it is the bare `*`: a bare star matches every
/// value, even an empty name or a URI that hides its path.
#[derive(Debug, Clone)]
struct Pattern {
    matcher: GlobMatcher,
    any: bool,
}

impl Pattern {
    fn new(scope: &str, glob: &str, case_insensitive: bool) -> Result<Self, ScopeError> {
        let matcher = GlobBuilder::new(glob)
            .literal_separator(false)
            .backslash_escape(true)
            .case_insensitive(case_insensitive)
            .build()
            .map_err(|e| ScopeError::new(scope, format!("bad glob: {}", e.kind())))?
            .compile_matcher();
        Ok(Self {
            matcher,
            any: glob == "*",
        })
    }

    fn matches(&self, s: &str) -> bool {
        self.any || self.matcher.is_match(s)
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    All,
    /// `upstream-glob SEP name-glob`.
    Qualified {
        upstream: Pattern,
        name: Pattern,
    },
    /// `upstream:glob`.
    Upstream(Pattern),
    /// `resource:uri-glob`.
    Uri(Pattern),
}

#[derive(Debug, Clone)]
struct Rule {
    kinds: Kinds,
    matcher: Matcher,
}

impl Rule {
    /// Whether the rule covers `target`. `negation` picks the fail-closed
    /// answer for a URI that hides its path: a grant does not cover it, a
    /// negation does.
    fn covers(&self, target: &Target<'_>, uri: Option<&Option<String>>, negation: bool) -> bool {
        if !self.kinds.has(target.kind()) {
            return false;
        }
        let name_matches = |p: &Pattern| match target {
            Target::Tool { name, .. } | Target::Prompt { name, .. } => p.matches(name),
            Target::Resource { .. } => {
                if p.any {
                    return true;
                }
                match uri {
                    Some(Some(normalised)) => p.matches(normalised),
                    _ => negation,
                }
            }
        };
        match &self.matcher {
            Matcher::All => true,
            Matcher::Upstream(u) => u.matches(target.upstream()),
            Matcher::Qualified { upstream, name } => {
                upstream.matches(target.upstream()) && name_matches(name)
            }
            Matcher::Uri(p) => name_matches(p),
        }
    }
}

/// The parsed scopes of one identity. Cheap to clone.
#[derive(Clone)]
pub struct Scopes(Arc<Inner>);

struct Inner {
    admin: bool,
    grants: Vec<Rule>,
    negations: Vec<Rule>,
    source: Vec<String>,
}

impl Default for Scopes {
    /// No scopes: nothing is allowed.
    fn default() -> Self {
        Scopes(Arc::new(Inner {
            admin: false,
            grants: Vec::new(),
            negations: Vec::new(),
            source: Vec::new(),
        }))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scopes").field(&self.0.source).finish()
    }
}

impl fmt::Display for Scopes {
    /// The scopes space-separated, as in an OAuth `scope` parameter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.source.join(" "))
    }
}

impl Scopes {
    /// Parses scopes strictly: any bad scope is an error. Used for scopes an
    /// operator writes (`switchboard keys create --scopes ...`).
    pub fn parse<I, S>(scopes: I, separator: &str) -> Result<Scopes, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(scopes, separator, false)
    }

    /// Parses scopes from a token: entries outside this grammar (`openid`,
    /// `email`, another API's scopes) are skipped, as an identity provider
    /// routinely issues them. A bad *negation* is still an error, since
    /// skipping it would grant more than the issuer meant.
    pub fn parse_lenient<I, S>(scopes: I, separator: &str) -> Result<Scopes, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(scopes, separator, true)
    }

    /// Splits an OAuth `scope` string (RFC 6749 §3.3: space-separated) and
    /// parses it strictly.
    pub fn parse_space_separated(scopes: &str, separator: &str) -> Result<Scopes, ScopeError> {
        Self::parse(scopes.split(' ').filter(|s| !s.is_empty()), separator)
    }

    fn build<I, S>(scopes: I, separator: &str, lenient: bool) -> Result<Scopes, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if separator.is_empty() {
            return Err(ScopeError::new("", "the namespacing separator is empty"));
        }
        let mut inner = Inner {
            admin: false,
            grants: Vec::new(),
            negations: Vec::new(),
            source: Vec::new(),
        };
        for (i, scope) in scopes.into_iter().enumerate() {
            let scope = scope.as_ref();
            if i >= MAX_SCOPES {
                return Err(ScopeError::new(
                    scope,
                    format!("more than {MAX_SCOPES} scopes"),
                ));
            }
            match parse_one(scope, separator) {
                Ok(Parsed::Admin) => inner.admin = true,
                Ok(Parsed::Grant(rule)) => inner.grants.push(rule),
                Ok(Parsed::Negation(rule)) => inner.negations.push(rule),
                Err(e) if lenient && !scope.starts_with('!') => {
                    tracing::debug!(error = %e, "skipping a token scope outside the scope grammar");
                    continue;
                }
                Err(e) => return Err(e),
            }
            if !inner.source.iter().any(|s| s == scope) {
                inner.source.push(scope.to_owned());
            }
        }
        Ok(Scopes(Arc::new(inner)))
    }

    /// Whether the `admin` scope is present (guards the admin API).
    pub fn is_admin(&self) -> bool {
        self.0.admin
    }

    /// Whether `target` may be used: some grant covers it and no negation
    /// does.
    pub fn allows(&self, target: Target<'_>) -> bool {
        // Normalise a resource URI once, and only when a rule needs it.
        let uri = match target {
            Target::Resource { uri, .. } => Some(normalise_uri(uri)),
            _ => None,
        };
        let uri = uri.as_ref();
        self.0.grants.iter().any(|r| r.covers(&target, uri, false))
            && !self
                .0
                .negations
                .iter()
                .any(|r| r.covers(&target, uri, true))
    }

    /// The scopes as given (deduplicated, skipped entries left out), for
    /// storage and display.
    pub fn as_strings(&self) -> &[String] {
        &self.0.source
    }

    /// Whether there are no scopes at all.
    pub fn is_empty(&self) -> bool {
        self.0.source.is_empty()
    }
}

enum Parsed {
    Admin,
    Grant(Rule),
    Negation(Rule),
}

fn parse_one(scope: &str, sep: &str) -> Result<Parsed, ScopeError> {
    if scope.is_empty() {
        return Err(ScopeError::new(scope, "is empty"));
    }
    if scope.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::new(
            scope,
            format!("is longer than {MAX_SCOPE_LEN} bytes"),
        ));
    }
    if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ScopeError::new(
            scope,
            "contains whitespace or a control character; give scopes as separate values",
        ));
    }
    if scope == "admin" {
        return Ok(Parsed::Admin);
    }
    let (negation, body) = match scope.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, scope),
    };
    if negation && body.is_empty() {
        return Err(ScopeError::new(scope, "negates nothing"));
    }
    if negation && body.starts_with('!') {
        return Err(ScopeError::new(scope, "has a double negation"));
    }
    if negation && body == "admin" {
        return Err(ScopeError::new(
            scope,
            "cannot be negated: admin is granted only by the `admin` scope itself",
        ));
    }
    let rule = parse_grant(scope, body, sep, negation)?;
    Ok(if negation {
        Parsed::Negation(rule)
    } else {
        Parsed::Grant(rule)
    })
}

fn parse_grant(scope: &str, body: &str, sep: &str, ci: bool) -> Result<Rule, ScopeError> {
    let (kind, pattern) = match body.split_once(':') {
        Some(("tool", p)) => (Some(Kind::Tool), p),
        Some(("prompt", p)) => (Some(Kind::Prompt), p),
        Some(("resource", p)) => {
            if p.is_empty() {
                return Err(ScopeError::new(
                    scope,
                    "has an empty uri pattern; write `resource:*` for every resource",
                ));
            }
            return Ok(Rule {
                kinds: Kinds::only(Kind::Resource),
                matcher: if p == "*" {
                    Matcher::All
                } else {
                    Matcher::Uri(Pattern::new(scope, p, ci)?)
                },
            });
        }
        Some(("upstream", p)) => {
            if p.is_empty() {
                return Err(ScopeError::new(scope, "names no upstream"));
            }
            return Ok(Rule {
                kinds: Kinds::ALL,
                matcher: Matcher::Upstream(Pattern::new(scope, p, ci)?),
            });
        }
        _ => (None, body),
    };
    let kinds = kind.map(Kinds::only).unwrap_or(Kinds::ALL);
    if pattern == "*" {
        return Ok(Rule {
            kinds,
            matcher: Matcher::All,
        });
    }
    let Some((upstream, name)) = pattern.split_once(sep) else {
        return Err(ScopeError::new(
            scope,
            format!(
                "names no upstream; write \"<upstream>{sep}{pattern}\" for one upstream or \"*{sep}{pattern}\" for any"
            ),
        ));
    };
    if upstream.is_empty() {
        return Err(ScopeError::new(
            scope,
            format!("has nothing before {sep:?}; write \"*{sep}{name}\" for any upstream"),
        ));
    }
    if name.is_empty() {
        return Err(ScopeError::new(
            scope,
            format!("has nothing after {sep:?}; write \"{upstream}{sep}*\" for all of it"),
        ));
    }
    Ok(Rule {
        kinds,
        matcher: Matcher::Qualified {
            upstream: Pattern::new(scope, upstream, ci)?,
            name: Pattern::new(scope, name, ci)?,
        },
    })
}

/// Normalises a resource URI for matching (RFC 3986 §6.2.2: case and
/// percent-encoding normalisation), or returns `None` when the URI hides
/// its path in a way an upstream could resolve differently from the glob.
pub(crate) fn normalise_uri(uri: &str) -> Option<String> {
    if uri.is_empty()
        || uri
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    // Decode %XX of unreserved characters; keep other escapes (upper-cased).
    let bytes = uri.as_bytes();
    let mut out = String::with_capacity(uri.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            match b {
                // An encoded separator or escape is how a path is smuggled.
                b'/' | b'\\' | b'%' => return None,
                _ if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(b as char),
                _ => {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
            }
            i += 3;
        } else {
            // Multi-byte UTF-8 is copied through whole.
            let ch = uri[i..].chars().next()?;
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    // Scheme: required, lower-cased.
    let colon = out.find(':')?;
    let scheme = &out[..colon];
    let valid_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid_scheme {
        return None;
    }
    let mut normalised = scheme.to_ascii_lowercase();
    normalised.push(':');
    let mut rest = &out[colon + 1..];
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        normalised.push_str("//");
        normalised.push_str(&after[..end].to_lowercase());
        rest = &after[end..];
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    if rest[..path_end]
        .split('/')
        .any(|seg| seg == "." || seg == "..")
    {
        return None;
    }
    normalised.push_str(rest);
    Some(normalised)
}

#[cfg(test)]
mod tests;
