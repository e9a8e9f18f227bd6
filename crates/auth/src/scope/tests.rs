use super::*;

fn scopes(s: &[&str]) -> Scopes {
    Scopes::parse(s, "__").unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn t(upstream: &'static str, name: &'static str) -> Target<'static> {
    Target::tool(upstream, name)
}
fn p(upstream: &'static str, name: &'static str) -> Target<'static> {
    Target::prompt(upstream, name)
}
fn r(upstream: &'static str, uri: &'static str) -> Target<'static> {
    Target::resource(upstream, uri)
}

/// (scopes, target, allowed): each row is one decision.
#[test]
fn decisions_follow_the_grammar() {
    let rows: &[(&[&str], Target<'static>, bool)] = &[
        // The common case: everything of one upstream.
        (&["web__*"], t("web", "search"), true),
        (&["web__*"], p("web", "summarise"), true),
        (&["web__*"], r("web", "https://example.com/page"), true),
        (&["web__*"], t("github", "search"), false),
        // `*` is every kind on every upstream.
        (&["*"], t("any", "thing"), true),
        (&["*"], r("any", "file:///x"), true),
        // Name globs.
        (&["github__get_*"], t("github", "get_issue"), true),
        (&["github__get_*"], t("github", "delete_repo"), false),
        (&["*__search"], t("a", "search"), true),
        (&["*__search"], t("b", "search"), true),
        (&["*__search"], t("b", "search_all"), false),
        (&["{a,b}__x"], t("b", "x"), true),
        (&["{a,b}__x"], t("c", "x"), false),
        // Kind qualifiers.
        (&["tool:web__*"], t("web", "search"), true),
        (&["tool:web__*"], p("web", "search"), false),
        (&["tool:web__*"], r("web", "file:///a"), false),
        (&["prompt:*"], p("x", "y"), true),
        (&["prompt:*"], t("x", "y"), false),
        (&["tool:*"], t("x", "y"), true),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/a.md"),
            true,
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/sub/b.md"),
            true,
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///etc/passwd"),
            false,
        ),
        (
            &["resource:file:///docs/*"],
            t("fs", "file:///docs/a"),
            false,
        ),
        (&["resource:*"], r("fs", "anything:at-all"), true),
        (
            &["docs__file:///guide/*"],
            r("docs", "file:///guide/a"),
            true,
        ),
        (
            &["docs__file:///guide/*"],
            r("other", "file:///guide/a"),
            false,
        ),
        (&["upstream:web"], t("web", "x"), true),
        (&["upstream:web"], r("web", "file:///x"), true),
        (&["upstream:web"], t("web2", "x"), false),
        // Negations win, in any order.
        (
            &["github__*", "!github__delete_*"],
            t("github", "delete_repo"),
            false,
        ),
        (
            &["!github__delete_*", "github__*"],
            t("github", "delete_repo"),
            false,
        ),
        (
            &["github__*", "!github__delete_*"],
            t("github", "get_repo"),
            true,
        ),
        (&["*", "!upstream:payments"], t("payments", "refund"), false),
        (&["*", "!upstream:payments"], t("web", "search"), true),
        (
            &["*", "!resource:file:///secret/*"],
            r("fs", "file:///secret/k"),
            false,
        ),
        (&["*", "!tool:*"], t("x", "y"), false),
        (&["*", "!tool:*"], p("x", "y"), true),
        // Nothing granted, nothing allowed.
        (&[], t("web", "search"), false),
        (&["admin"], t("web", "search"), false),
    ];
    for (s, target, allowed) in rows {
        assert_eq!(
            scopes(s).allows(*target),
            *allowed,
            "scopes {s:?} on {target:?}"
        );
    }
}

/// Attempts to reach more than a scope grants.
#[test]
fn escalation_attempts_are_refused() {
    let rows: &[(&[&str], Target<'static>)] = &[
        // An upstream whose name starts with the granted one plus the separator.
        (&["web__*"], t("web__x", "admin")),
        (&["web__*"], t("web_", "x")),
        (&["web__*"], t("webx", "y")),
        (&["web__search"], t("web", "search__admin")),
        (&["web__search"], t("web__search", "x")),
        // Case tricks: grants are exact.
        (&["web__search"], t("WEB", "search")),
        (&["web__search"], t("web", "Search")),
        (&["tool:web__*"], t("Web", "search")),
        // Names that look like patterns are data.
        (&["web__get_?"], t("web", "get_ab")),
        (&["web__get"], t("web", "get*")),
        // Empty strings.
        (&["web__*"], t("", "search")),
        (&["web__search"], t("web", "")),
        (&["resource:file:///docs/*"], r("fs", "")),
        // Path games against a resource grant.
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/../etc/passwd"),
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/%2e%2e/etc/passwd"),
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/%2E%2E/etc/passwd"),
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/.%2e/etc/passwd"),
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/..%2fetc/passwd"),
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/%252e%252e/etc"),
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/..\\etc\\passwd"),
        ),
        (
            &["resource:file:///docs/*"],
            r("fs", "file:///docs/./../etc"),
        ),
        (&["resource:file:///docs/*"], r("fs", "file:///docs/a\n")),
        (&["resource:file:///docs/*"], r("fs", "file:///docs/%")),
        (&["resource:file:///docs/*"], r("fs", "file:///docs/%zz")),
        (&["resource:file:///docs/*"], r("fs", "/docs/a")),
        (
            &["docs__file:///guide/*"],
            r("docs", "file:///guide/../../etc"),
        ),
        // A negation cannot be dodged by case, encoding or dot segments.
        (&["*", "!github__delete_*"], t("github", "Delete_repo")),
        (&["*", "!github__delete_*"], t("GitHub", "DELETE_REPO")),
        (
            &["*", "!resource:file:///secret/*"],
            r("fs", "FILE:///secret/k"),
        ),
        (
            &["*", "!resource:file:///secret/*"],
            r("fs", "file:///%73ecret/k"),
        ),
        (
            &["*", "!resource:file:///secret/*"],
            r("fs", "file:///pub/../secret/k"),
        ),
        (
            &["*", "!resource:file:///secret/*"],
            r("fs", "file:///secret%2fk"),
        ),
        (
            &["*", "!resource:https://example.com/admin/*"],
            r("w", "https://EXAMPLE.com/admin/x"),
        ),
        (
            &["*", "!docs__file:///secret/*"],
            r("docs", "file:///x/../secret/y"),
        ),
    ];
    for (s, target) in rows {
        assert!(
            !scopes(s).allows(*target),
            "scopes {s:?} must not allow {target:?}"
        );
    }
}

#[test]
fn a_whole_upstream_grant_covers_any_uri_it_serves() {
    // The operator granted everything from `fs`; an odd URI is still fs's.
    assert!(scopes(&["fs__*"]).allows(r("fs", "file:///a/../b")));
    assert!(scopes(&["upstream:fs"]).allows(r("fs", "file:///a/../b")));
    // But a negation elsewhere on the same upstream hides it.
    assert!(!scopes(&["fs__*", "!fs__file:///private/*"]).allows(r("fs", "file:///a/../b")));
    // A negation on another upstream does not.
    assert!(scopes(&["fs__*", "!other__file:///x/*"]).allows(r("fs", "file:///a/../b")));
}

#[test]
fn percent_encoded_unreserved_characters_match_their_plain_form() {
    let s = scopes(&["resource:file:///docs/*"]);
    assert!(s.allows(r("fs", "file:///%64ocs/a")));
    assert!(s.allows(r("fs", "FILE:///docs/a%20b")));
}

#[test]
fn admin_is_its_own_scope_and_star_never_grants_it() {
    assert!(scopes(&["admin"]).is_admin());
    assert!(!scopes(&["*"]).is_admin());
    assert!(!scopes(&["upstream:*", "tool:*", "resource:*"]).is_admin());
    assert!(!scopes(&["admin__*"]).is_admin());
    assert!(!Scopes::default().is_admin());
}

#[test]
fn parse_errors_name_the_bad_scope() {
    let rows: &[(&str, &str)] = &[
        ("", "is empty"),
        ("search", "names no upstream"),
        ("tool:search", "names no upstream"),
        ("ADMIN", "names no upstream"),
        ("__x", "nothing before"),
        ("web__", "nothing after"),
        ("!", "negates nothing"),
        ("!!web__x", "double negation"),
        ("!admin", "cannot be negated"),
        ("web__[", "bad glob"),
        ("resource:", "empty uri pattern"),
        ("upstream:", "names no upstream"),
        ("web__a b", "whitespace"),
    ];
    for (scope, reason) in rows {
        let err = Scopes::parse([scope], "__").expect_err(scope);
        let msg = err.to_string();
        assert!(msg.contains(&format!("{scope:?}")), "{msg}");
        assert!(msg.contains(reason), "{scope:?}: {msg}");
    }
}

#[test]
fn parsing_is_bounded() {
    let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("u{i}__*")).collect();
    assert!(Scopes::parse(&many, "__").is_err());
    let long = format!("web__{}", "a".repeat(MAX_SCOPE_LEN));
    assert!(Scopes::parse([long], "__").is_err());
}

#[test]
fn lenient_parsing_skips_foreign_grants_but_not_foreign_negations() {
    let s = Scopes::parse_lenient(["openid", "email", "web__*", "read:user"], "__").unwrap();
    assert_eq!(s.as_strings(), ["web__*"]);
    assert!(s.allows(t("web", "x")));
    assert!(Scopes::parse_lenient(["web__*", "!delete"], "__").is_err());
}

#[test]
fn another_separator_changes_the_split() {
    let s = Scopes::parse(["web.*"], ".").unwrap();
    assert!(s.allows(t("web", "search")));
    assert!(Scopes::parse(["web__*"], ".").is_err());
    assert!(Scopes::parse(["web__*"], "").is_err());
}

#[test]
fn scopes_display_space_separated_and_deduplicated() {
    let s = Scopes::parse_space_separated("web__*  admin web__*", "__").unwrap();
    assert_eq!(s.to_string(), "web__* admin");
    assert!(s.is_admin());
}

#[test]
fn uri_normalisation_follows_rfc_3986() {
    let rows: &[(&str, Option<&str>)] = &[
        ("file:///a/b", Some("file:///a/b")),
        ("FILE:///a", Some("file:///a")),
        ("HTTPS://Example.COM/Path", Some("https://example.com/Path")),
        ("file:///%7euser", Some("file:///~user")),
        ("file:///a%3fb", Some("file:///a%3Fb")),
        ("urn:x:y", Some("urn:x:y")),
        ("https://h/a?x=..", Some("https://h/a?x=..")),
        ("file:///a/..", None),
        ("file:///a/.", None),
        ("file:///a%2Fb", None),
        ("file:///a%5cb", None),
        ("file:///a%25", None),
        ("1abc:x", None),
        ("noscheme", None),
        ("", None),
    ];
    for (uri, expect) in rows {
        assert_eq!(normalise_uri(uri).as_deref(), *expect, "{uri}");
    }
}
