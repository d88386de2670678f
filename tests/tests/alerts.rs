//! The alert rules in `monitoring/`: promtool accepts them, their unit tests pass, the shipped
//! PrometheusRule carries exactly the rules promtool tests, and "last run failed" fires on the
//! values a real Pushgateway holds after a failed run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use vault_backup_common::metrics::{self, Config, LAST_FAILURE, LAST_SUCCESS, Metrics, Pusher};
use vault_backup_testbed::pushgateway::{Pushgateway, Sample, debian_bin};
use vault_backup_testbed::venv::workspace_root;

fn monitoring() -> PathBuf {
    workspace_root().join("monitoring")
}

fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(debian_bin("promtool"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_checks_the_rules() {
    let (ok, out) = promtool(&["check", "rules", "rules.yaml"], &monitoring());
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
}

#[test]
fn promtool_unit_tests_pass_with_a_firing_and_a_quiet_case_for_every_alert() {
    let (ok, out) = promtool(&["test", "rules", "tests/rules-test.yaml"], &monitoring());
    assert!(ok, "{out}");

    // Every alert in the rules appears in the unit tests with an expected alert and with an
    // empty expectation.
    let rules = std::fs::read_to_string(monitoring().join("rules.yaml")).unwrap();
    let tests: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(monitoring().join("tests/rules-test.yaml")).unwrap(),
    )
    .unwrap();
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["alert_rule_test"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| {
            let fires = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap().to_owned(), fires)
        })
        .collect();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 11);
    for alert in alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.to_owned(), fires)),
                "{alert} has no unit test where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

/// Every alert has a summary, a description and a runbook_url whose anchor is a heading of the
/// README (GitHub's anchor: the heading lower-cased, spaces to '-', punctuation dropped).
#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_in_the_readme() {
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(monitoring().join("rules.yaml")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let anchors: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut seen = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            let annotations = &rule["annotations"];
            for key in ["summary", "description", "runbook_url"] {
                assert!(
                    annotations[key]
                        .as_str()
                        .is_some_and(|v| !v.trim().is_empty()),
                    "{alert} has no {key}"
                );
            }
            let url = annotations["runbook_url"].as_str().unwrap();
            let (_, anchor) = url.split_once("README.md#").expect("a README anchor");
            assert_eq!(anchor, alert.to_lowercase(), "{alert}: {url}");
            assert!(
                anchors.iter().any(|a| a == anchor),
                "{alert}: README.md has no heading for #{anchor}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 11);
}

#[test]
fn the_prometheus_rule_ships_exactly_the_tested_rules() {
    let rules = std::fs::read_to_string(monitoring().join("rules.yaml")).unwrap();
    let shipped = std::fs::read_to_string(monitoring().join("prometheus-rule.yaml")).unwrap();
    let (head, spec) = shipped
        .split_once("\nspec:\n")
        .expect("prometheus-rule.yaml has a spec: line");
    assert!(head.contains("kind: PrometheusRule") && head.contains("monitoring.coreos.com/v1"));
    let embedded: String = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(
        embedded == rules,
        "monitoring/prometheus-rule.yaml differs from monitoring/rules.yaml: regenerate it with the \
         command at the top of prometheus-rule.yaml"
    );
    // And it is what kustomize builds (the CRD form Kubernetes gets).
    let out = Command::new(vault_backup_testbed::venv::bin("kubectl"))
        .args(["kustomize", "monitoring/"])
        .current_dir(workspace_root())
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    let plain: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules).unwrap();
    assert_eq!(built["kind"], "PrometheusRule");
    assert_eq!(built["spec"]["groups"], plain["groups"]);
}

/// Writes a promtool test that feeds `series` (as read back from a Pushgateway, held for an hour
/// of test time, as Prometheus would scrape them) to the rules and expects the
/// `VaultBackupLastRunFailed` alerts in `firing` (label sets in `ALERTS{...}` syntax); returns
/// whether promtool agreed, and its output.
fn promtool_last_run_failed(series: &[Sample], firing: &[String]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        monitoring().join("rules.yaml"),
        dir.path().join("rules.yaml"),
    )
    .unwrap();
    let mut input = String::new();
    for s in series {
        let _ = writeln!(
            input,
            "      - series: '{}'\n        values: '{}x60'",
            s.selector(),
            s.value
        );
    }
    let mut expected = String::new();
    if firing.is_empty() {
        expected.push_str(" []\n");
    } else {
        expected.push('\n');
        for labels in firing {
            let _ = writeln!(
                expected,
                "          - labels: '{labels}'\n            value: 1"
            );
        }
    }
    let test = format!(
        "rule_files: [rules.yaml]\n\
         tests:\n  - interval: 1m\n    input_series:\n{input}\
         \x20   promql_expr_test:\n      - expr: ALERTS{{alertname=\"VaultBackupLastRunFailed\"}}\n\
         \x20       eval_time: 5m\n        exp_samples:{expected}"
    );
    std::fs::write(dir.path().join("pushed-test.yaml"), &test).unwrap();
    let (ok, out) = promtool(&["test", "rules", "pushed-test.yaml"], dir.path());
    (ok, format!("{out}\n--- test file ---\n{test}"))
}

fn timestamps(pg: &Pushgateway) -> Vec<Sample> {
    pg.metrics("vault_backup_")
        .into_iter()
        .filter(|s| s.name == LAST_SUCCESS.name || s.name == LAST_FAILURE.name)
        .collect()
}

/// Issue 11, must show 4: a run that succeeded, then one that failed; the Pushgateway's
/// `/metrics` shows the failure newer than the success, and promtool fed exactly those series
/// (labels and values as read back) fires "last run failed" for that step. A later success
/// clears it, read back the same way.
#[tokio::test]
async fn last_run_failed_fires_on_what_a_real_pushgateway_holds_after_a_failure() {
    let pg = Pushgateway::start();
    let config = Config::try_from(metrics::RawConfig {
        metrics_pushgateway_url: Some(pg.url()),
        ..metrics::RawConfig::default()
    })
    .unwrap()
    .unwrap();
    let client = Pusher::new(config).unwrap();
    let run = |code: u8| {
        let mut m = Metrics::new();
        m.outcome(code, Duration::from_secs(2), SystemTime::now());
        m
    };
    assert!(client.push("vault-snapshot", &run(0)).await, "{}", pg.log());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(client.push("vault-snapshot", &run(1)).await, "{}", pg.log());

    let pushed = timestamps(&pg);
    let value =
        |pushed: &[Sample], name: &str| pushed.iter().find(|s| s.name == name).unwrap().value;
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    assert!(
        value(&pushed, LAST_FAILURE.name) > value(&pushed, LAST_SUCCESS.name),
        "{pushed:?}"
    );
    let alert = "ALERTS{alertname=\"VaultBackupLastRunFailed\",alertstate=\"firing\",\
                 job=\"vault-backup\",severity=\"warning\",step=\"vault-snapshot\",task=\"vault-backup\"}"
        .to_owned();
    let (ok, out) = promtool_last_run_failed(&pushed, std::slice::from_ref(&alert));
    assert!(ok, "the alert did not fire as expected:\n{out}");

    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(client.push("vault-snapshot", &run(0)).await, "{}", pg.log());
    let pushed = timestamps(&pg);
    assert!(value(&pushed, LAST_SUCCESS.name) > value(&pushed, LAST_FAILURE.name));
    let (ok, out) = promtool_last_run_failed(&pushed, &[]);
    assert!(ok, "the alert still fires after a success:\n{out}");
    // The expectation is checked, not ignored: the same series cannot also fire the alert.
    let (ok, _) = promtool_last_run_failed(&pushed, &[alert]);
    assert!(!ok, "promtool accepted a contradicting expectation");
}
