//! What operators run beside coordinate, checked against it: the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`, loaded and unit-tested by `promtool`), the scrape
//! configuration, and the Grafana dashboard (`deploy/grafana/coordinate.json`), whose every
//! query must parse and name metrics a running cluster serves.
//!
//! `promtool` comes from Debian's `prometheus` package (.ci/run installs it).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{wait_until, Cluster, WAIT_TIMEOUT};

const CTL: &str = env!("CARGO_BIN_EXE_coordinatectl");
/// Debian's etcdctl 3.4, for a gRPC call.
const ETCDCTL: &str = "/usr/bin/etcdctl";

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Runs promtool with `args` in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): `apt-get install prometheus` (.ci/run does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_load_and_fire_only_on_sick_series() {
    let dir = deploy("prometheus");
    let checked = promtool(&dir, &["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    // Each alert is shown firing on a sick member and silent on a healthy one.
    let tested = promtool(&dir, &["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_scrape_configuration_is_valid_with_the_certificates_coordinatectl_writes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let certs = tmp.path().join("certs");
    let peers = "https://node1:2380,https://node2:2380,https://node3:2380";
    let out = Command::new(CTL)
        .args(["certs", certs.to_str().unwrap(), "--peers", peers])
        .output()
        .expect("run coordinatectl certs");
    assert!(out.status.success(), "{out:?}");
    let config = std::fs::read_to_string(deploy("prometheus/prometheus.yml"))
        .expect("read prometheus.yml")
        .replace("/certs/", &format!("{}/", certs.display()));
    std::fs::write(tmp.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        deploy("prometheus/alerts.yml"),
        tmp.path().join("alerts.yml"),
    )
    .unwrap();
    let checked = promtool(tmp.path(), &["check", "config", "prometheus.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// Every PromQL expression of the dashboard, its `$instance` variable filled in.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/coordinate.json")).expect("read dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let queries: Vec<String> = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("a target with an expression")
                .replace("$instance", ".*")
        })
        .collect();
    assert!(queries.len() > 20, "{queries:?}");
    queries
}

/// The `coordinate_*` and `process_*` metric families a set of expressions names (histogram
/// series as their family).
fn metric_names<'a>(exprs: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &expr[i..];
            let starts = rest.starts_with("coordinate_") || rest.starts_with("process_");
            let after_word =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if starts && after_word {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..len];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                names.insert(family.to_string());
                i += len;
            } else {
                i += 1;
            }
        }
    }
    names
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses rule expressions: the dashboard's queries, as recording rules.
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    std::fs::write(tmp.path().join("dashboard.yml"), rules).unwrap();
    promtool(tmp.path(), &["check", "rules", "dashboard.yml"]);
}

/// One node's metrics text.
fn scrape(c: &Cluster, id: u64) -> String {
    let (status, body) = c.client().get(id, "metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the sample `series` (name and labels, as exposed) in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_cluster_serves_every_metric_the_dashboard_and_alerts_use_with_their_meaning() {
    let (mut c, leader) = Cluster::start_with_leader(3, &[]);
    assert_eq!(c.client().put(leader, "k", b"v").ok(), Some(204));
    // A gRPC call, for the gRPC metrics.
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &c.client_url(leader), "put", "g", "v"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {ETCDCTL} ({e}): apt-get install etcd-client"));
    assert!(out.status.success(), "{out:?}");

    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let exprs: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_string)
        .chain(dashboard_queries())
        .collect();
    let wanted = metric_names(exprs.iter().map(String::as_str));
    assert!(wanted.contains("coordinate_has_leader"), "{wanted:?}");
    let followers: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();

    // Heartbeats answered, so the leader has a round trip to each follower.
    let mut text = String::new();
    let ready = wait_until(WAIT_TIMEOUT, || {
        text = scrape(&c, leader);
        followers.iter().all(|f| {
            sample(
                &text,
                &format!("coordinate_peer_round_trip_seconds_count{{peer=\"{f}\"}}"),
            )
            .is_some_and(|n| n > 0.0)
        })
    });
    assert!(ready, "no heartbeat round trips on the leader:\n{text}");
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !text.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(missing.is_empty(), "the leader does not serve {missing:?}");

    // What the alerts read means what they take it to mean.
    assert_eq!(sample(&text, "coordinate_is_leader"), Some(1.0));
    for f in &followers {
        let up = format!("coordinate_peer_reachable{{peer=\"{f}\"}}");
        assert_eq!(sample(&text, &up), Some(1.0), "{up}");
    }
    let put = "coordinate_grpc_requests_total{code=\"OK\",method=\"KV/Put\"}";
    assert_eq!(sample(&text, put), Some(1.0), "{text}");
    assert_eq!(sample(&text, "coordinate_alarms"), Some(0.0));
    for id in 1..=3 {
        let text = scrape(&c, id);
        assert_eq!(
            sample(&text, "coordinate_has_leader"),
            Some(1.0),
            "node {id}"
        );
        let leads = if id == leader { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&text, "coordinate_is_leader"),
            Some(leads),
            "node {id}"
        );
        let commit = sample(&text, "coordinate_commit_index").unwrap();
        let applied = sample(&text, "coordinate_applied_index").unwrap();
        assert!(
            commit >= applied && applied > 0.0,
            "node {id}: {commit} {applied}"
        );
    }

    // A follower cut off from the leader: after a stop, the leader reports it unreachable.
    let gone = followers[0];
    c.stop(gone);
    let series = format!("coordinate_peer_reachable{{peer=\"{gone}\"}}");
    let seen = wait_until(WAIT_TIMEOUT, || {
        sample(&scrape(&c, leader), &series) == Some(0.0)
    });
    assert!(seen, "the leader still reports node {gone} reachable");
}
