use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Returns the value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[track_caller]
fn assert_sample(text: &str, series: &str, want: f64) {
    match sample(text, series) {
        // sums of f64 seconds carry rounding noise
        Some(got) => assert!(
            (got - want).abs() < 1e-9,
            "{series} = {got}, want {want}\n{text}"
        ),
        None => panic!("no sample {series} in\n{text}"),
    }
}

#[track_caller]
fn assert_type(text: &str, name: &str, kind: &str) {
    let line = format!("# TYPE {name} {kind}");
    assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
}

/// Returns every distinct sample name in the exposition (the part before `{` or ` `).
fn sample_names(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn http_requests_use_the_route_template_and_observe_duration() {
    let metrics = Metrics::default();
    metrics.record_http_request(
        &http::Method::POST,
        Endpoint::from_path("/servers/docs/mcp"),
        http::StatusCode::OK,
        3 * MS,
    );
    metrics.record_http_request(
        &http::Method::POST,
        Endpoint::ServerMcp,
        http::StatusCode::OK,
        40 * MS,
    );
    metrics.record_http_request(
        &http::Method::GET,
        Endpoint::from_path("/.env"),
        http::StatusCode::NOT_FOUND,
        MS,
    );
    let text = metrics.render();

    assert_type(&text, "http_requests_total", "counter");
    assert_type(&text, "http_request_duration_seconds", "histogram");
    assert_sample(
        &text,
        r#"http_requests_total{method="POST",endpoint="/servers/{name}/mcp",status_code="200"}"#,
        2.0,
    );
    assert_sample(
        &text,
        r#"http_requests_total{method="GET",endpoint="other",status_code="404"}"#,
        1.0,
    );
    let route = r#"{method="POST",endpoint="/servers/{name}/mcp"}"#;
    assert_sample(
        &text,
        &format!("http_request_duration_seconds_count{route}"),
        2.0,
    );
    assert_sample(
        &text,
        &format!("http_request_duration_seconds_sum{route}"),
        0.043,
    );
    assert_sample(
        &text,
        r#"http_request_duration_seconds_bucket{le="0.005",method="POST",endpoint="/servers/{name}/mcp"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"http_request_duration_seconds_bucket{le="+Inf",method="POST",endpoint="/servers/{name}/mcp"}"#,
        2.0,
    );
    assert!(!text.contains("docs"), "a raw path leaked:\n{text}");
}

#[test]
fn mcp_requests_count_by_bounded_method_and_status() {
    let metrics = Metrics::default();
    metrics.record_mcp_request(McpMethod::ToolsCall, McpStatus::Ok);
    metrics.record_mcp_request(McpMethod::ToolsCall, McpStatus::Ok);
    metrics.record_mcp_request(McpMethod::from_name("tools/list"), McpStatus::Error);
    metrics.record_mcp_request(McpMethod::from_name("x/../../etc"), McpStatus::Error);
    let text = metrics.render();

    assert_type(&text, "mcp_requests_total", "counter");
    assert_sample(
        &text,
        r#"mcp_requests_total{method="tools/call",status="ok"}"#,
        2.0,
    );
    assert_sample(
        &text,
        r#"mcp_requests_total{method="tools/list",status="error"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"mcp_requests_total{method="other",status="error"}"#,
        1.0,
    );
}

#[test]
fn tool_calls_count_every_status_and_time_only_calls_that_ran() {
    let metrics = Metrics::default();
    for status in ToolCallStatus::ALL {
        metrics.record_tool_call("docs", "search", *status, 100 * MS);
    }
    metrics.record_tool_call("docs", "search", ToolCallStatus::Success, 2 * MS);
    let text = metrics.render();

    assert_type(&text, "mcp_tool_calls_total", "counter");
    assert_type(&text, "mcp_tool_duration_seconds", "histogram");
    for status in ToolCallStatus::ALL {
        let want = if *status == ToolCallStatus::Success {
            2.0
        } else {
            1.0
        };
        assert_sample(
            &text,
            &format!(
                r#"mcp_tool_calls_total{{upstream="docs",tool_name="search",status="{}"}}"#,
                status.as_str()
            ),
            want,
        );
    }
    // success, error, timeout, cancelled at 100 ms + one success at 2 ms; rejected and
    // unavailable never reached the upstream
    let labels = r#"{upstream="docs",tool_name="search"}"#;
    assert_sample(
        &text,
        &format!("mcp_tool_duration_seconds_count{labels}"),
        5.0,
    );
    assert_sample(
        &text,
        r#"mcp_tool_duration_seconds_bucket{le="0.0025",upstream="docs",tool_name="search"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"mcp_tool_duration_seconds_bucket{le="0.1",upstream="docs",tool_name="search"}"#,
        5.0,
    );
}

#[test]
fn tool_names_are_capped_per_upstream() {
    let metrics = Metrics::new(MetricsConfig {
        max_tools_per_upstream: 3,
        ..MetricsConfig::default()
    });
    // a hostile upstream advertising thousands of tools
    for i in 0..5000 {
        metrics.record_tool_call("wide", &format!("tool_{i}"), ToolCallStatus::Success, MS);
    }
    // a known tool keeps its own series after the cap is reached
    metrics.record_tool_call("wide", "tool_1", ToolCallStatus::Error, MS);
    // another upstream has its own budget
    metrics.record_tool_call("narrow", "only", ToolCallStatus::Success, MS);
    let text = metrics.render();

    let wide: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(r#"mcp_tool_calls_total{upstream="wide""#))
        .collect();
    // tool_0..tool_2 (success), tool_1 (error), other (success)
    assert_eq!(wide.len(), 5, "{wide:#?}");
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="wide",tool_name="other",status="success"}"#,
        4997.0,
    );
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="wide",tool_name="tool_2",status="success"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="wide",tool_name="tool_1",status="error"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"mcp_tool_duration_seconds_count{upstream="wide",tool_name="other"}"#,
        4997.0,
    );
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="narrow",tool_name="only",status="success"}"#,
        1.0,
    );
    let histogram_series = text
        .lines()
        .filter(|l| l.starts_with("mcp_tool_duration_seconds_count{"))
        .count();
    assert_eq!(histogram_series, 5, "4 for wide (3 + other), 1 for narrow");
}

#[test]
fn default_tool_cap_is_256() {
    let metrics = Metrics::default();
    for i in 0..300 {
        metrics.record_tool_call("gen", &format!("t{i}"), ToolCallStatus::Success, MS);
    }
    let text = metrics.render();
    let series = text
        .lines()
        .filter(|l| l.starts_with("mcp_tool_calls_total{"))
        .count();
    assert_eq!(series, 257);
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="gen",tool_name="other",status="success"}"#,
        44.0,
    );
}

#[test]
fn unpresentable_tool_names_fold_into_other() {
    let metrics = Metrics::default();
    let long = "x".repeat(200);
    for name in ["", "bad\nname", "nul\0", long.as_str()] {
        metrics.record_tool_call("docs", name, ToolCallStatus::Error, MS);
    }
    let text = metrics.render();
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="docs",tool_name="other",status="error"}"#,
        4.0,
    );
}

#[test]
fn upstream_names_are_capped_too() {
    let metrics = Metrics::new(MetricsConfig {
        max_upstreams: 2,
        max_tools_per_upstream: 2,
    });
    for upstream in ["a", "b", "c", "d"] {
        metrics.set_upstream_up(upstream, true);
        for tool in ["t1", "t2", "t3"] {
            metrics.record_tool_call(upstream, tool, ToolCallStatus::Success, MS);
        }
    }
    let text = metrics.render();
    assert_sample(&text, r#"upstream_up{upstream="a"}"#, 1.0);
    assert_sample(&text, r#"upstream_up{upstream="other"}"#, 1.0);
    assert!(sample(&text, r#"upstream_up{upstream="c"}"#).is_none());
    // the overflow upstream has a tool budget of its own
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="other",tool_name="t1",status="success"}"#,
        2.0,
    );
    assert_sample(
        &text,
        r#"mcp_tool_calls_total{upstream="other",tool_name="other",status="success"}"#,
        2.0,
    );
}

#[test]
fn circuit_breaker_state_calls_and_latency() {
    let metrics = Metrics::default();
    metrics.set_breaker_state("docs", BreakerState::Closed);
    metrics.set_breaker_state("flaky", BreakerState::Open);
    metrics.set_breaker_state("mending", BreakerState::Open);
    metrics.set_breaker_state("mending", BreakerState::HalfOpen);
    metrics.record_breaker_call("docs", BreakerCall::Success(20 * MS));
    metrics.record_breaker_call("docs", BreakerCall::Failure(2000 * MS));
    metrics.record_breaker_call("docs", BreakerCall::Rejected);
    metrics.record_breaker_call("docs", BreakerCall::Rejected);
    let text = metrics.render();

    assert_type(&text, "circuit_breaker_state", "gauge");
    assert_type(&text, "circuit_breaker_calls_total", "counter");
    assert_type(&text, "circuit_breaker_latency_seconds", "histogram");
    assert_sample(&text, r#"circuit_breaker_state{component="docs"}"#, 0.0);
    assert_sample(&text, r#"circuit_breaker_state{component="flaky"}"#, 1.0);
    assert_sample(&text, r#"circuit_breaker_state{component="mending"}"#, 2.0);
    for (result, want) in [("success", 1.0), ("failure", 1.0), ("rejected", 2.0)] {
        assert_sample(
            &text,
            &format!(r#"circuit_breaker_calls_total{{component="docs",result="{result}"}}"#),
            want,
        );
    }
    // rejected calls never ran, so only two latencies
    assert_sample(
        &text,
        r#"circuit_breaker_latency_seconds_count{component="docs"}"#,
        2.0,
    );
    assert_sample(
        &text,
        r#"circuit_breaker_latency_seconds_sum{component="docs"}"#,
        2.02,
    );
}

#[test]
fn healing_attempts_and_computed_success_rate() {
    let metrics = Metrics::default();
    // before any attempt nothing has failed
    assert_sample(&metrics.render(), "healing_success_rate", 1.0);

    metrics.record_healing_attempt(HealingIssue::ProcessCrash, HealingStatus::Success);
    metrics.record_healing_attempt(HealingIssue::ProcessCrash, HealingStatus::Success);
    metrics.record_healing_attempt(HealingIssue::SessionExpired, HealingStatus::Success);
    metrics.record_healing_attempt(HealingIssue::ConnectionLost, HealingStatus::Failure);
    let text = metrics.render();

    assert_type(&text, "healing_attempts_total", "counter");
    assert_type(&text, "healing_success_rate", "gauge");
    assert_sample(
        &text,
        r#"healing_attempts_total{issue_type="process_crash",status="success"}"#,
        2.0,
    );
    assert_sample(
        &text,
        r#"healing_attempts_total{issue_type="session_expired",status="success"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"healing_attempts_total{issue_type="connection_lost",status="failure"}"#,
        1.0,
    );
    assert_sample(&text, "healing_success_rate", 0.75);
}

#[test]
fn health_scores_are_clamped() {
    let metrics = Metrics::default();
    assert_sample(&metrics.render(), "system_health_score", 1.0);
    metrics.set_system_health_score(0.42);
    metrics.set_upstream_health_score("docs", 0.9);
    metrics.set_upstream_health_score("over", 7.0);
    metrics.set_upstream_health_score("under", -1.0);
    metrics.set_upstream_health_score("nan", f64::NAN);
    let text = metrics.render();

    assert_type(&text, "system_health_score", "gauge");
    assert_type(&text, "upstream_health_score", "gauge");
    assert_sample(&text, "system_health_score", 0.42);
    assert_sample(&text, r#"upstream_health_score{upstream="docs"}"#, 0.9);
    assert_sample(&text, r#"upstream_health_score{upstream="over"}"#, 1.0);
    assert_sample(&text, r#"upstream_health_score{upstream="under"}"#, 0.0);
    assert_sample(&text, r#"upstream_health_score{upstream="nan"}"#, 0.0);
}

#[test]
fn session_and_process_guards_give_their_count_back() {
    let metrics = Metrics::default();
    let a = metrics.track_session();
    let b = metrics.clone().track_session();
    let p = metrics.track_upstream_process();
    let text = metrics.render();
    assert_type(&text, "active_sessions_total", "untyped");
    assert_type(&text, "upstream_processes", "gauge");
    assert_sample(&text, "active_sessions_total", 2.0);
    assert_sample(&text, "upstream_processes", 1.0);

    drop(a);
    drop(p);
    let text = metrics.render();
    assert_sample(&text, "active_sessions_total", 1.0);
    assert_sample(&text, "upstream_processes", 0.0);

    // a guard moved into a task that panics still gives its count back
    let panicked = std::thread::spawn(move || {
        let _held = b;
        panic!("session task failed");
    })
    .join();
    assert!(panicked.is_err());
    assert_sample(&metrics.render(), "active_sessions_total", 0.0);
}

#[test]
fn upstream_up_restarts_and_removal() {
    let metrics = Metrics::default();
    metrics.set_upstream_up("docs", true);
    metrics.set_upstream_up("git", true);
    metrics.set_upstream_up("git", false);
    metrics.set_upstream_health_score("docs", 0.5);
    metrics.record_upstream_restart("git");
    metrics.record_upstream_restart("git");
    let text = metrics.render();

    assert_type(&text, "upstream_up", "gauge");
    assert_type(&text, "upstream_restarts_total", "counter");
    assert_sample(&text, r#"upstream_up{upstream="docs"}"#, 1.0);
    assert_sample(&text, r#"upstream_up{upstream="git"}"#, 0.0);
    assert_sample(&text, r#"upstream_restarts_total{upstream="git"}"#, 2.0);

    metrics.remove_upstream("docs");
    metrics.remove_upstream("never-seen");
    let text = metrics.render();
    assert!(sample(&text, r#"upstream_up{upstream="docs"}"#).is_none());
    assert!(sample(&text, r#"upstream_health_score{upstream="docs"}"#).is_none());
    assert_sample(&text, r#"upstream_up{upstream="git"}"#, 0.0);
}

#[test]
fn cache_hits_and_misses() {
    let metrics = Metrics::default();
    metrics.record_cache_hit(CacheName::ToolResult);
    metrics.record_cache_hit(CacheName::ToolResult);
    metrics.record_cache_miss(CacheName::ToolResult);
    metrics.record_cache_miss(CacheName::ResourceRead);
    let text = metrics.render();

    assert_type(&text, "cache_hits_total", "counter");
    assert_type(&text, "cache_misses_total", "counter");
    assert_sample(&text, r#"cache_hits_total{cache="tool_result"}"#, 2.0);
    assert_sample(&text, r#"cache_misses_total{cache="tool_result"}"#, 1.0);
    assert_sample(&text, r#"cache_misses_total{cache="resource_read"}"#, 1.0);
}

#[test]
fn rejected_requests_by_every_reason() {
    let metrics = Metrics::default();
    for (i, reason) in RejectReason::ALL.iter().enumerate() {
        for _ in 0..=i {
            metrics.record_rejected_request(*reason);
        }
    }
    let text = metrics.render();
    assert_type(&text, "rejected_requests_total", "counter");
    let reasons = [
        "body_too_large",
        "bad_origin",
        "bad_host",
        "unsupported_version",
        "missing_session",
        "unknown_session",
        "session_limit",
        "rate_limited",
        "identity_rate_limited",
        "tool_rate_limited",
        "session_identity_mismatch",
        "unauthorized",
        "forbidden",
        "overloaded",
        "invalid",
    ];
    assert_eq!(RejectReason::ALL.len(), reasons.len());
    for (i, reason) in reasons.iter().enumerate() {
        assert_sample(
            &text,
            &format!(r#"rejected_requests_total{{reason="{reason}"}}"#),
            (i + 1) as f64,
        );
    }
}

#[test]
fn clones_share_one_registry() {
    let metrics = Metrics::default();
    let clone = metrics.clone();
    clone.record_cache_hit(CacheName::ResourceRead);
    assert_sample(
        &metrics.render(),
        r#"cache_hits_total{cache="resource_read"}"#,
        1.0,
    );
}

#[test]
fn fresh_registry_exposes_only_unlabelled_metrics() {
    let text = Metrics::default().render();
    let names = sample_names(&text);
    let want: HashSet<String> = [
        "healing_success_rate",
        "system_health_score",
        "active_sessions_total",
        "upstream_processes",
        "tools_held",
        "audit_pending_records",
        "audit_spool_bytes",
        "audit_dropped_total",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, want, "{text}");
}

/// Records at least one series of every metric and every closed label value, plus label
/// values that need escaping.
fn exercise_everything(metrics: &Metrics) -> Vec<GaugeGuard> {
    for endpoint in Endpoint::ALL {
        metrics.record_http_request(
            &http::Method::POST,
            *endpoint,
            http::StatusCode::ACCEPTED,
            7 * MS,
        );
    }
    for method in McpMethod::ALL {
        for status in McpStatus::ALL {
            metrics.record_mcp_request(*method, *status);
        }
    }
    for status in ToolCallStatus::ALL {
        metrics.record_tool_call("docs", "search", *status, 250 * MS);
        metrics.record_tool_call(r#"we"ird\up"#, "tool.with-dots_1", *status, 61_000 * MS);
    }
    for state in BreakerState::ALL {
        metrics.set_breaker_state(state.as_str(), *state);
    }
    for call in [
        BreakerCall::Success(MS),
        BreakerCall::Failure(MS),
        BreakerCall::Rejected,
    ] {
        metrics.record_breaker_call("docs", call);
    }
    for issue in HealingIssue::ALL {
        for status in HealingStatus::ALL {
            metrics.record_healing_attempt(*issue, *status);
        }
    }
    metrics.set_system_health_score(0.8);
    metrics.set_upstream_health_score("docs", 0.7);
    metrics.set_upstream_up("docs", true);
    metrics.record_upstream_restart("docs");
    for cache in CacheName::ALL {
        metrics.record_cache_hit(*cache);
        metrics.record_cache_miss(*cache);
    }
    for reason in RejectReason::ALL {
        metrics.record_rejected_request(*reason);
    }
    metrics.record_tool_definition_change("svc \"quoted\"");
    metrics.set_tools_held(2);
    metrics.set_audit_backlog(5, 4096);
    metrics.set_audit_dropped(1);
    vec![metrics.track_session(), metrics.track_upstream_process()]
}

#[test]
fn exposed_names_are_exactly_the_name_consts() {
    let metrics = Metrics::default();
    let _guards = exercise_everything(&metrics);
    let text = metrics.render();

    assert!(!text.contains("_total_total"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("# UNIT"), "{text}");

    let declared: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let consts: HashSet<&str> = name::ALL.iter().copied().collect();
    assert_eq!(declared, consts);

    // every sample belongs to a declared family: itself, or a histogram's series
    for sample in sample_names(&text) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| sample.strip_suffix(suffix))
            .filter(|base| consts.contains(base))
            .unwrap_or(&sample);
        assert!(consts.contains(family), "undeclared sample {sample}");
    }
    for counter in name::ALL.iter().filter(|n| n.ends_with("_total")) {
        if *counter != name::ACTIVE_SESSIONS_TOTAL {
            assert_type(&text, counter, "counter");
        }
    }
    // label values that need escaping are escaped
    assert_sample(&text, r#"upstream_up{upstream="docs"}"#, 1.0);
    assert!(
        text.contains(r#"upstream="we\"ird\\up""#),
        "unescaped label value in\n{text}"
    );
}

/// Finds `promtool`: `$PROMTOOL`, then `PATH`, then the deps dir of `scripts/deps.sh`.
fn promtool() -> PathBuf {
    let from_env = std::env::var_os("PROMTOOL").map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("promtool"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let deps_dir = std::env::var_os("SWITCHBOARD_DEPS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/switchboard-deps"))
        });
    let in_deps = deps_dir.map(|dir| dir.join("bin/promtool"));
    from_env
        .into_iter()
        .chain(on_path)
        .chain(in_deps)
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found ($PROMTOOL, PATH, deps dir): run scripts/deps.sh, \
                 which installs Debian's `prometheus` package (it ships promtool)"
            )
        })
}

#[test]
fn promtool_check_metrics_accepts_the_exposition() {
    let metrics = Metrics::default();
    let _guards = exercise_everything(&metrics);
    let text = metrics.render();

    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("write exposition");
    let output = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::from(file.reopen().expect("reopen exposition")))
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\nstdout: {}\nstderr: {}\nexposition:\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    // promtool exits 0 on an empty input too; make sure it saw every metric
    for name in name::ALL {
        assert!(
            text.contains(&format!("\n# TYPE {name} ")),
            "{name} missing"
        );
    }
}

#[test]
fn promtool_accepts_a_fresh_registry() {
    let text = Metrics::default().render();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("write exposition");
    let output = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::from(file.reopen().expect("reopen exposition")))
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
