"""The monitoring stack under deploy/: every file is checked by the real tool that
consumes it, where that tool can run here.

  * Prometheus: `promtool check config` (also with the optional bearer-token lines
    enabled), `promtool check rules`, `promtool test rules` (alerts_test.yml);
  * Alertmanager: `amtool check-config` and the severity routing (`amtool config
    routes test`);
  * Grafana: the dashboard JSON is structurally sound and every panel and template
    query uses only metrics the gateway exposes (the names in
    crates/telemetry/src/name.rs; `_bucket`/`_sum`/`_count` of its histograms);
  * docker compose: `docker-compose config` (Debian's docker-compose 1.29, which
    validates against its compose-spec schema and interpolates variables without a
    Docker engine), and every file the stack mounts or builds from exists;
  * the container's config passes `switchboard check`; the Dockerfile's builder
    Rust is new enough for every locked dependency;
  * live: a real gateway with the fake upstream serves /metrics behind a bearer
    token, the exposition passes `promtool check metrics`, and it contains every
    metric the dashboard and the alerts query.

Nothing is skipped: scripts/deps.sh installs promtool, amtool and docker-compose, so
a missing tool is a failure. No container is built or started (there is no Docker
engine here): deploy/README.md says what that leaves unvalidated.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import start_gateway, wait_for_tools
from support import REPO, describe, run, wait_until

DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"
NAME_RS = REPO / "crates" / "telemetry" / "src" / "name.rs"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "switchboard.json"
RUNBOOK = DEPLOY / "RUNBOOK.md"

# The alerts issue 4 requires, plus SwitchboardDown (a gateway that cannot be scraped
# fires nothing else).
REQUIRED_ALERTS = {
    "CircuitBreakerOpen",
    "HighFailureRate",
    "LatencySpike",
    "HighErrorRate",
    "LowHealthScore",
    "CriticalHealthScore",
    "ToolCallFailures",
    "UpstreamDown",
    "HealingSystemDown",
    "SwitchboardDown",
}
# Per-upstream alerts must name the upstream (label and summary).
PER_UPSTREAM_ALERTS = {"CircuitBreakerOpen", "HighFailureRate", "LatencySpike", "ToolCallFailures", "UpstreamDown"}
# Series Prometheus makes itself, usable in rules (not in the dashboard's metric check).
PROMETHEUS_SYNTHETIC = {"up"}


# --------------------------------------------------------------------------- tools


def _tool(env_var: str, name: str) -> str:
    path = os.environ.get(env_var) or shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not path:
        pytest.fail(f"{name} not found (${env_var}, PATH): run scripts/deps.sh", pytrace=False)
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return _tool("PROMTOOL", "promtool")


@pytest.fixture(scope="module")
def amtool() -> str:
    return _tool("AMTOOL", "amtool")


@pytest.fixture(scope="module")
def docker_compose() -> str:
    return _tool("DOCKER_COMPOSE", "docker-compose")


def _ok(cp: subprocess.CompletedProcess) -> str:
    assert cp.returncode == 0, describe(cp)
    return cp.stdout + cp.stderr


# --------------------------------------------------------------------------- YAML

# The e2e venv has no YAML parser; the Python that runs docker-compose (installed by
# scripts/deps.sh from Debian) has PyYAML, as docker-compose itself needs it.
_YAML_TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"


@pytest.fixture(scope="module")
def load_yaml(docker_compose):
    first = Path(docker_compose).read_text(errors="replace").splitlines()[0]
    interpreter = first[2:].strip().split()[0] if first.startswith("#!") else "/usr/bin/python3"

    def load(path: Path):
        cp = run([interpreter, "-c", _YAML_TO_JSON, path], timeout=30)
        assert cp.returncode == 0, f"cannot parse {path} as YAML:\n{describe(cp)}"
        return json.loads(cp.stdout)

    return load


# --------------------------------------------------------------------------- metric names


def exposed_metrics() -> tuple[set[str], set[str]]:
    """(all metric names, histogram names) from crates/telemetry/src/name.rs."""
    text = NAME_RS.read_text()
    names: set[str] = set()
    histograms: set[str] = set()
    doc = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("///"):
            doc += line[3:] + " "
            continue
        m = re.match(r'pub const [A-Z0-9_]+: &str = "([a-z_:][a-z0-9_:]*)";', line)
        if m:
            names.add(m.group(1))
            if doc.strip().startswith("Histogram"):
                histograms.add(m.group(1))
        doc = ""
    all_list = re.search(r"pub const ALL: &\[&str\] = &\[(.*?)\];", text, re.S)
    assert all_list, "name::ALL not found in name.rs"
    assert len(re.findall(r"[A-Z][A-Z0-9_]+", all_list.group(1))) == len(names), (
        "name.rs: ALL and the name consts disagree"
    )
    return names, histograms


def allowed_series(names: set[str], histograms: set[str]) -> set[str]:
    return names | {h + suffix for h in histograms for suffix in ("_bucket", "_sum", "_count")}


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (Grafana variables allowed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "", s)  # Grafana variables
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges, subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok = m.group(0)
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 0.5
            continue
        if s[m.end():].lstrip().startswith("("):  # function or aggregation
            continue
        if tok.lower() in _KEYWORDS:
            continue
        found.add(tok)
    return found


def template_query_metrics(query: str) -> set[str]:
    """Metrics of a Grafana Prometheus template query (label_values, query_result, PromQL)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
    if m:
        return promql_metric_names(m.group(1))
    if re.fullmatch(r"\s*label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query):
        return set()
    m = re.fullmatch(r"\s*(?:query_result|metrics)\((.*)\)\s*", query)
    return promql_metric_names(m.group(1) if m else query)


def test_promql_metric_extraction_is_not_vacuous():
    assert promql_metric_names('rate(nope_total{a="x{y}"}[5m])') == {"nope_total"}
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (upstream, le) (rate(a_bucket{upstream=~"$upstream"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert promql_metric_names("sum(x) by (instance) / on (instance) group_left y > bool 1e3") == {"x", "y"}
    assert promql_metric_names("(sum(increase(h{status=\"success\"}[10m])) or vector(0)) == 0 and on () z offset 5m") == {"h", "z"}
    assert template_query_metrics("label_values(upstream_up, upstream)") == {"upstream_up"}
    names, histograms = exposed_metrics()
    assert "mcp_tool_calls_total" in names and len(names) >= 19
    assert histograms == {"http_request_duration_seconds", "mcp_tool_duration_seconds", "circuit_breaker_latency_seconds"}


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_config_is_valid(promtool):
    out = _ok(run([promtool, "check", "config", PROM_DIR / "prometheus.yml"], timeout=60))
    assert "SUCCESS" in out


def test_prometheus_scrapes_switchboard_metrics_and_alerts(load_yaml):
    cfg = load_yaml(PROM_DIR / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    sb = jobs["switchboard"]
    assert sb.get("metrics_path", "/metrics") == "/metrics"
    assert [t for sc in sb["static_configs"] for t in sc["targets"]] == ["switchboard:8080"]
    assert cfg["rule_files"] == ["alerts.yml"]
    am = [t for a in cfg["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    assert am == ["alertmanager:9093"]


def test_prometheus_config_with_the_optional_bearer_token(promtool, load_yaml, tmp_path):
    """The commented `authorization:` block is valid once uncommented."""
    text = (PROM_DIR / "prometheus.yml").read_text()
    block = re.search(r"^(\s*)# authorization:\n\1#   type: Bearer\n\1#   credentials_file: (\S+)\n", text, re.M)
    assert block, "prometheus.yml lost its optional authorization block"
    token = tmp_path / "metrics_token"
    token.write_text("s3cret\n")
    indent = block.group(1)
    enabled = text.replace(
        block.group(0),
        f"{indent}authorization:\n{indent}  type: Bearer\n{indent}  credentials_file: {token}\n",
    )
    (tmp_path / "prometheus.yml").write_text(enabled)
    shutil.copy(PROM_DIR / "alerts.yml", tmp_path / "alerts.yml")
    _ok(run([promtool, "check", "config", tmp_path / "prometheus.yml"], timeout=60))
    job = next(j for j in load_yaml(tmp_path / "prometheus.yml")["scrape_configs"] if j["job_name"] == "switchboard")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": str(token)}


def test_alert_rules_are_valid(promtool):
    out = _ok(run([promtool, "check", "rules", PROM_DIR / "alerts.yml"], timeout=60))
    assert "SUCCESS" in out


def test_alert_rules_unit_tests_pass(promtool):
    out = _ok(run([promtool, "test", "rules", PROM_DIR / "alerts_test.yml"], timeout=120))
    assert "SUCCESS" in out and "FAILED" not in out


def _alert_rules(load_yaml) -> dict[str, dict]:
    rules = {}
    for group in load_yaml(PROM_DIR / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in rules, f"duplicate alert {rule['alert']}"
                rules[rule["alert"]] = rule
    return rules


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def test_alerts_are_complete_labelled_and_have_runbook_sections(load_yaml):
    rules = _alert_rules(load_yaml)
    assert REQUIRED_ALERTS <= set(rules), f"missing alerts: {sorted(REQUIRED_ALERTS - set(rules))}"
    anchors = {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", RUNBOOK.read_text(), re.M)}
    names, histograms = exposed_metrics()
    allowed = allowed_series(names, histograms) | PROMETHEUS_SYNTHETIC
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        ann = rule["annotations"]
        assert ann.get("summary") and ann.get("description"), f"{name}: summary and description"
        url = ann.get("runbook_url", "")
        assert "deploy/RUNBOOK.md#" in url, f"{name}: runbook_url {url!r}"
        anchor = url.split("#", 1)[1]
        assert anchor == name.lower() and anchor in anchors, f"{name}: RUNBOOK.md has no section #{anchor}"
        unknown = promql_metric_names(rule["expr"]) - allowed
        assert not unknown, f"{name} uses metrics the gateway does not expose: {sorted(unknown)}"
        if name in PER_UPSTREAM_ALERTS:
            assert "upstream" in rule["expr"] or rule["labels"].get("upstream"), name
            assert "{{ $labels.upstream }}" in ann["summary"] or "{{ $labels.component }}" in ann["summary"], name
    assert "{{ $labels.tool_name }}" in rules["ToolCallFailures"]["annotations"]["summary"]


def test_every_alert_has_a_firing_and_a_silent_unit_test(load_yaml):
    suite = load_yaml(PROM_DIR / "alerts_test.yml")
    assert suite["rule_files"] == ["alerts.yml"]
    fires, silent = set(), set()
    for test in suite["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    rules = set(_alert_rules(load_yaml))
    assert rules <= fires, f"alerts never shown firing: {sorted(rules - fires)}"
    assert rules <= silent, f"alerts never shown silent: {sorted(rules - silent)}"


# --------------------------------------------------------------------------- Alertmanager


def test_alertmanager_config_is_valid(amtool):
    out = _ok(run([amtool, "check-config", DEPLOY / "alertmanager" / "alertmanager.yml"], timeout=60))
    assert "SUCCESS" in out


@pytest.mark.parametrize(
    "labels, receiver",
    [
        (["severity=critical", "alertname=UpstreamDown", "upstream=notes"], "critical"),
        (["severity=warning", "alertname=LatencySpike", "upstream=notes"], "default"),
        (["alertname=Other"], "default"),
    ],
)
def test_alertmanager_routes_by_severity(amtool, labels, receiver):
    cp = run([amtool, "config", "routes", "test",
              f"--config.file={DEPLOY / 'alertmanager' / 'alertmanager.yml'}", *labels], timeout=60)
    assert cp.returncode == 0 and cp.stdout.strip() == receiver, describe(cp)


def test_alert_severities_have_routes(load_yaml):
    am = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    routed = {m for r in am["route"]["routes"] for m in r.get("matchers", [])}
    for severity in {r["labels"]["severity"] for r in _alert_rules(load_yaml).values()}:
        assert f'severity = "{severity}"' in routed, severity


# --------------------------------------------------------------------------- Grafana


def _panels(dashboard: dict):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows keep their panels inside


def test_grafana_provisioning_matches_the_dashboard(load_yaml):
    ds = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [d["type"] for d in ds] == ["prometheus"] and ds[0]["url"] == "http://prometheus:9090"
    providers = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "switchboard.yml")["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {ds[0]["uid"]}
    for p in _panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"]["uid"] in uids, p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] in uids, p["title"]
    for v in dashboard["templating"]["list"]:
        assert v["datasource"]["uid"] in uids, v["name"]


def test_dashboard_is_well_formed_and_covers_the_issue():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in _panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = []
    for p in _panels(d):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        titles.append(p["title"].lower())
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
    wanted = ["request rate", "error ratio", "tool calls by upstream and status", "p50 / p95 / p99",
              "breaker state", "upstream up", "health score", "active sessions", "healing attempts",
              "rejected requests by reason", "cache hit ratio"]
    for w in wanted:
        assert any(w in t for t in titles), f"no panel about {w!r}: {titles}"


def _dashboard_queries(d: dict) -> list[tuple[str, str, set[str]]]:
    out = []
    for p in _panels(d):
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"], promql_metric_names(t["expr"])))
    for v in d["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable ${v['name']}", q, template_query_metrics(q)))
    return out


def test_every_dashboard_query_uses_only_exposed_metrics():
    names, histograms = exposed_metrics()
    allowed = allowed_series(names, histograms)
    queries = _dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 20
    bad = [(title, expr, sorted(m - allowed)) for title, expr, m in queries if m - allowed]
    assert not bad, "queries using metrics the gateway does not expose:\n" + "\n".join(map(str, bad))
    for title, expr, metrics in queries:
        assert metrics, f"{title}: no metric found in {expr!r}"
    used = set().union(*(m for _, _, m in queries))
    base = {re.sub(r"_(bucket|sum|count)$", "", u) if re.sub(r"_(bucket|sum|count)$", "", u) in histograms else u for u in used}
    assert names <= base, f"metrics no panel shows: {sorted(names - base)}"


def test_a_dashboard_query_with_an_unknown_metric_is_caught():
    names, histograms = exposed_metrics()
    d = {"panels": [{"title": "x", "targets": [{"expr": 'sum(rate(mcp_tool_calls{status="ok"}[5m]))'}]}],
         "templating": {"list": []}}
    [(_, _, metrics)] = _dashboard_queries(d)
    assert metrics - allowed_series(names, histograms) == {"mcp_tool_calls"}


# --------------------------------------------------------------------------- compose, image


def test_compose_file_is_valid(docker_compose, tmp_path):
    cp = run([docker_compose, "--project-directory", DEPLOY, "-f", DEPLOY / "docker-compose.yml", "config", "-q"],
             timeout=60, cwd=tmp_path, env={"METRICS_TOKEN": "", "DOCKER_HOST": "unix:///nonexistent.sock"})
    _ok(cp)
    cp = run([docker_compose, "-f", DEPLOY / "docker-compose.yml", "config", "--services"], timeout=60, cwd=DEPLOY,
             env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert set(_ok(cp).split()) >= {"switchboard", "prometheus", "grafana", "jaeger", "alertmanager"}


def test_compose_validation_rejects_a_broken_file(docker_compose, tmp_path):
    """The validator is not vacuous: an unknown key and a bad type are refused."""
    broken = (DEPLOY / "docker-compose.yml").read_text().replace("    restart: unless-stopped\n", "    restart: unless-stopped\n    restrat: always\n", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    cp = run([docker_compose, "-f", tmp_path / "docker-compose.yml", "config", "-q"], timeout=60, cwd=tmp_path,
             env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert cp.returncode != 0 and "restrat" in cp.stdout + cp.stderr, describe(cp)


def test_compose_mounts_and_builds_from_files_that_exist(load_yaml):
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert {"switchboard", "prometheus", "grafana", "jaeger", "alertmanager"} <= set(services)
    named = set(compose.get("volumes") or {})
    for name, svc in services.items():
        assert ":latest" not in svc.get("image", "") and ("build" in svc or ":" in svc["image"]), f"{name}: pin the image"
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source in named:
                continue
            assert source.startswith("."), f"{name}: {vol}: bind mounts are relative to deploy/"
            assert (DEPLOY / source).exists(), f"{name}: {vol}: {DEPLOY / source} does not exist"
    build = services["switchboard"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO and (context / build["dockerfile"]).is_file()
    assert (DEPLOY / "Dockerfile.dockerignore").is_file()
    # what the mounts must contain, at the paths the configs name
    assert (DEPLOY / "prometheus" / "prometheus.yml").is_file() and (DEPLOY / "prometheus" / "alerts.yml").is_file()
    cmd = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in cmd
    env = services["switchboard"]["environment"]
    assert env["SWITCHBOARD_CONFIG"] == "/etc/switchboard/switchboard.toml"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:")


def test_dockerfile_builds_a_non_root_image_with_a_liveness_check():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) == 2 and froms[0].split()[1].startswith("rust:") and "debian" in froms[1] and "slim" in froms[1], froms
    final = lines[lines.index(froms[1]):]
    user = [ln for ln in final if ln.upper().startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0"), user
    health = [ln for ln in final if ln.upper().startswith("HEALTHCHECK ")]
    assert health and "/health/live" in health[0], health
    for ln in lines:  # every COPY from the build context exists
        parts = ln.split()
        if parts[0].upper() == "COPY" and not any(p.startswith("--from") for p in parts):
            for src in [p for p in parts[1:-1] if not p.startswith("--")]:
                assert src == "." or (REPO / src).exists(), f"COPY source {src} missing"
    assert "cargo build --release --locked -p switchboard --bin switchboard" in text


def test_builder_rust_is_new_enough_for_the_locked_dependencies():
    m = re.search(r"^FROM rust:(\d+)\.(\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert m, "the builder stage must pin a rust:MAJOR.MINOR image"
    image = (int(m.group(1)), int(m.group(2)))
    host = re.search(r"^host: (\S+)$", run(["rustc", "-vV"], timeout=60).stdout, re.M)
    assert host, "rustc -vV did not name the host triple"
    # the packages a Linux build uses (the build step has fetched them already)
    cp = run(["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host.group(1)],
             timeout=300, cwd=REPO)
    assert cp.returncode == 0, describe(cp)
    need = max(
        (tuple(int(x) for x in p["rust_version"].split(".")[:2]), p["name"])
        for p in json.loads(cp.stdout)["packages"]
        if p.get("rust_version")
    )
    assert image >= need[0], f"rust:{image[0]}.{image[1]} is older than {need[1]}'s rust-version {need[0]}"


def test_container_config_passes_switchboard_check(switchboard_bin, tmp_path):
    text = (DEPLOY / "switchboard.toml").read_text()
    assert re.search(r'^listen = "0\.0\.0\.0:8080"$', text, re.M), "listen on all interfaces inside the container"
    assert re.search(r'^allowed_hosts = \[.*"switchboard".*\]$', text, re.M), "Prometheus scrapes Host: switchboard"
    cp = run([switchboard_bin, "check", "--config", DEPLOY / "switchboard.toml"], timeout=90, cwd=tmp_path)
    assert cp.returncode == 0, describe(cp)


def test_readme_and_runbook_exist():
    readme = (DEPLOY / "README.md").read_text()
    for word in ("docker compose", "promtool", "amtool", "docker-compose config", "Grafana", "METRICS_TOKEN"):
        assert word in readme, word
    runbook = RUNBOOK.read_text()
    for alert in REQUIRED_ALERTS:
        assert re.search(rf"^## {alert}$", runbook, re.M), f"RUNBOOK.md: no section for {alert}"


# --------------------------------------------------------------------------- live


def _get(url: str, token: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode(errors="replace")


def _families(exposition: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^# TYPE (\S+) \S+$", exposition, re.M)}


@pytest.mark.timeout(180)
def test_live_metrics_pass_promtool_and_feed_every_panel_and_alert(
    procs, switchboard_bin, fake_upstream_bin, promtool, load_yaml, tmp_path
):
    from mcp_client import http_session, run_async

    token = "deploy-test-token"
    gw = start_gateway(
        procs, switchboard_bin, tmp_path,
        [{"name": "fake", "command": [str(fake_upstream_bin)], "cache": {"ttl": "60s", "resources": True}}],
        extra_env={"METRICS_TOKEN": token},
    )
    wait_for_tools(gw.mcp_url, {"fake__echo", "fake__fail", "fake__crash"}, proc=gw.proc)

    async def traffic():
        async with http_session(gw.mcp_url) as s:
            await s.call_tool("fake__echo", {"text": "hi"})
            await s.call_tool("fake__tool_error", {})  # isError: counted as error
            await s.read_resource("fake://static")
            await s.read_resource("fake://static")  # the cached copy
            # a changed tool definition (pinning: counted, the tool held)
            await s.call_tool("fake__redescribe", {"name": "add", "description": "changed"})
            # a JSON-RPC error, then an upstream that exits (the supervisor restarts
            # it: healing); both calls fail by design
            for tool in ("fake__fail", "fake__crash"):
                with contextlib.suppress(Exception):
                    await s.call_tool(tool, {})

    run_async(traffic, timeout=60)

    status, _, body = _get(f"{gw.base}/metrics")
    assert status == 401, f"/metrics without the token: {status} {body[:200]}"

    names, histograms = exposed_metrics()
    dashboard = {n for _, _, ms in _dashboard_queries(json.loads(DASHBOARD.read_text())) for n in ms}
    alerts = {n for r in _alert_rules(load_yaml).values() for n in promql_metric_names(r["expr"])} - PROMETHEUS_SYNTHETIC
    wanted = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in histograms else n
              for n in dashboard | alerts}
    last = {"text": ""}

    def scraped_all() -> bool:
        code, ctype, text = _get(f"{gw.base}/metrics", token)
        assert code == 200, f"/metrics with the token: {code} {text[:200]}"
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
        last["text"] = text
        return wanted <= _families(text)

    try:
        wait_until(scraped_all, timeout=60, what="every dashboard/alert metric on /metrics", abort=gw.proc.exited_msg)
    except TimeoutError:
        pytest.fail(f"never exposed: {sorted(wanted - _families(last['text']))}\n{last['text'][-3000:]}")
    text = last["text"]
    (tmp_path / "metrics.txt").write_text(text)

    cp = run([promtool, "check", "metrics"], timeout=60, input=text)
    assert cp.returncode == 0 and not cp.stdout.strip(), describe(cp)
    # the exposition has no family the telemetry crate does not name
    assert _families(text) <= names, f"exposed but not in name.rs: {sorted(_families(text) - names)}"
    for h in histograms & _families(text):
        assert re.search(rf"^{h}_bucket\{{.*le=\"\+Inf\"", text, re.M), h
    # the label values the alert rules select on are the ones the gateway writes
    statuses = set(re.findall(r'^mcp_tool_calls_total\{[^}]*status="([a-z]+)"', text, re.M))
    assert {"success", "error"} <= statuses, statuses
    assert re.search(r'^circuit_breaker_state\{[^}]*component="fake"[^}]*\} [012]', text, re.M), "breaker gauge per upstream"
    assert re.search(r'^upstream_up\{[^}]*upstream="fake"[^}]*\} [01]', text, re.M)
    assert re.search(r'^http_requests_total\{[^}]*endpoint="/mcp"', text, re.M)
    assert re.search(r'^rejected_requests_total\{[^}]*reason="unauthorized"', text, re.M)
