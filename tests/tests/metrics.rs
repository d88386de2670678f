//! The metrics push against a real Pushgateway: what lands, what a failure leaves in place, and
//! what an unreachable or hung Pushgateway costs (at most the timeout and one warning).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing_subscriber::fmt::MakeWriter;
use vault_backup_common::Secret;
use vault_backup_common::metrics::{
    self, Auth, Config, LAST_FAILURE, LAST_RUN_EXIT_CODE, LAST_SUCCESS, Metrics, Pusher,
    SNAPSHOT_BYTES, SNAPSHOT_RAFT_INDEX, STORE_LAST_SUCCESS, STORE_SNAPSHOTS, unix_seconds,
};
use vault_backup_testbed::pushgateway::Pushgateway;

/// Log lines written while the guard lives (this thread only: the tests run on tokio's
/// current-thread runtime, so the push logs here).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let c = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(c.clone())
            .with_ansi(false)
            .finish();
        (c, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn config(url: &str, timeout: Duration) -> Config {
    let mut c = Config::try_from(metrics::RawConfig {
        metrics_pushgateway_url: Some(url.to_owned()),
        ..metrics::RawConfig::default()
    })
    .unwrap()
    .unwrap();
    c.timeout = timeout;
    c
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

#[tokio::test]
async fn a_failure_keeps_the_earlier_success_and_is_newer() {
    let pg = Pushgateway::start();
    let pusher = Pusher::new(config(&pg.url(), Duration::from_secs(5))).unwrap();
    let before = unix_seconds(SystemTime::now());

    let t1 = SystemTime::now();
    let mut ok = Metrics::new();
    ok.outcome(0, Duration::from_millis(1250), t1)
        .set(SNAPSHOT_BYTES, 4096.0)
        .set(SNAPSHOT_RAFT_INDEX, 42.0);
    assert!(pusher.push("vault-snapshot", &ok).await, "{}", pg.log());

    tokio::time::sleep(Duration::from_millis(20)).await;
    let t2 = SystemTime::now();
    let mut failed = Metrics::new();
    failed.outcome(1, Duration::from_millis(500), t2);
    assert!(pusher.push("vault-snapshot", &failed).await, "{}", pg.log());
    let after = unix_seconds(SystemTime::now());

    let v = |name| pg.value(name, "vault-snapshot").unwrap_or(f64::NAN);
    let success = v(LAST_SUCCESS.name);
    let failure = v(LAST_FAILURE.name);
    assert!(close(success, unix_seconds(t1)), "last success {success}");
    assert!(close(failure, unix_seconds(t2)), "last failure {failure}");
    assert!(
        failure > success,
        "failure {failure} not newer than success {success}"
    );
    assert!(
        before <= success && failure <= after,
        "timestamps outside the run"
    );
    // The failed run's own values replaced the success's; what it did not push stays.
    assert!(close(v("vault_backup_duration_seconds"), 0.5));
    assert!(close(v(LAST_RUN_EXIT_CODE.name), 1.0));
    assert!(close(v(SNAPSHOT_BYTES.name), 4096.0));
    assert!(close(v(SNAPSHOT_RAFT_INDEX.name), 42.0));

    // Every series carries the grouping labels.
    for s in pg.metrics("vault_backup_") {
        assert_eq!(
            (s.label("job"), s.label("task"), s.label("step")),
            ("vault-backup", "vault-backup", "vault-snapshot"),
            "{s:?}"
        );
    }
}

#[tokio::test]
async fn each_task_step_and_store_has_its_own_series() {
    let pg = Pushgateway::start();
    let url = pg.url();
    let backup = Pusher::new(config(&url, Duration::from_secs(5))).unwrap();
    let mut drill_config = config(&url, Duration::from_secs(5));
    // A '/' goes in the base64 path form; the real server must decode it to the same name.
    drill_config.task = "drills/vault restore".into();
    let drill = Pusher::new(drill_config).unwrap();
    let now = SystemTime::now();

    let mut sync = Metrics::new();
    sync.outcome(0, Duration::from_secs(2), now)
        .set_time(STORE_LAST_SUCCESS, &["s3"], now)
        .set_time(STORE_LAST_SUCCESS, &["dir"], now)
        .set_with(STORE_SNAPSHOTS, &["s3"], 7.0)
        .set_with(STORE_SNAPSHOTS, &["dir"], 3.0);
    assert!(backup.push("snapshot-sync", &sync).await);
    let mut snap = Metrics::new();
    snap.outcome(0, Duration::from_secs(1), now);
    assert!(backup.push("vault-snapshot", &snap).await);
    let mut failed_drill = Metrics::new();
    failed_drill.outcome(1, Duration::from_secs(9), now);
    assert!(drill.push("vault-restore", &failed_drill).await);

    let all = pg.metrics("vault_backup_");
    let find = |name: &str, task: &str, step: &str, store: &str| {
        all.iter()
            .filter(|s| {
                s.name == name
                    && s.label("task") == task
                    && s.label("step") == step
                    && s.label("store") == store
            })
            .count()
    };
    assert_eq!(
        find(LAST_SUCCESS.name, "vault-backup", "snapshot-sync", ""),
        1
    );
    assert_eq!(
        find(LAST_SUCCESS.name, "vault-backup", "vault-snapshot", ""),
        1
    );
    assert_eq!(
        find(
            STORE_LAST_SUCCESS.name,
            "vault-backup",
            "snapshot-sync",
            "s3"
        ),
        1
    );
    assert_eq!(
        find(
            STORE_LAST_SUCCESS.name,
            "vault-backup",
            "snapshot-sync",
            "dir"
        ),
        1
    );
    assert_eq!(
        find(
            LAST_FAILURE.name,
            "drills/vault restore",
            "vault-restore",
            ""
        ),
        1
    );
    // The drill's failure touched no backup series.
    assert_eq!(
        find(LAST_FAILURE.name, "vault-backup", "snapshot-sync", ""),
        0
    );
    let snapshots: Vec<(String, f64)> = all
        .iter()
        .filter(|s| s.name == STORE_SNAPSHOTS.name)
        .map(|s| (s.label("store").to_owned(), s.value))
        .collect();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    assert!(snapshots.contains(&("s3".into(), 7.0)) && snapshots.contains(&("dir".into(), 3.0)));
}

#[tokio::test]
async fn pushgateway_down_costs_one_warning_and_no_wait() {
    let mut pg = Pushgateway::start();
    let url = pg.url();
    pg.stop();
    let mut c = config(&url, Duration::from_secs(3));
    c.auth = Some(Auth::Bearer(Secret::new("s.top-secret-token")));
    let pusher = Pusher::new(c).unwrap();
    let mut m = Metrics::new();
    m.outcome(0, Duration::from_secs(1), SystemTime::now());

    let (log, _guard) = Captured::start();
    let started = Instant::now();
    assert!(!pusher.push("vault-snapshot", &m).await);
    let took = started.elapsed();
    let text = log.text();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("WARN") && text.contains("metrics not pushed"),
        "{text}"
    );
    assert!(text.contains("cannot reach the Pushgateway"), "{text}");
    assert!(!text.contains("top-secret"), "{text}");
    // No Pushgateway configured: nothing at all, not even a line.
    assert!(!metrics::push(None, "vault-snapshot", &m).await);
    assert_eq!(log.text().lines().count(), 1);
}

/// A Pushgateway that accepts the connection and never answers (hung, or a proxy waiting on a
/// dead backend). A real Pushgateway always answers, so a listener that never accepts stands in:
/// the kernel completes the TCP handshake and no byte ever comes back.
#[tokio::test]
async fn a_pushgateway_that_never_answers_is_bounded_by_the_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let timeout = Duration::from_millis(1500);
    let pusher = Pusher::new(config(&url, timeout)).unwrap();
    let mut m = Metrics::new();
    m.outcome(1, Duration::from_secs(1), SystemTime::now());

    let (log, _guard) = Captured::start();
    let started = Instant::now();
    assert!(!pusher.push("snapshot-sync", &m).await);
    let took = started.elapsed();
    assert!(took >= timeout, "gave up early: {took:?}");
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");
    let text = log.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("did not answer within 1.5s"), "{text}");
    drop(silent);
}

/// The Pushgateway's `POST` replaces a metric with all its series in the group; each store's
/// series sit in a group of their own, so a run where only one store succeeded leaves the
/// other store's last success in place (which is what `VaultBackupStoreBehind` compares).
#[tokio::test]
async fn a_run_that_reaches_one_store_leaves_the_other_stores_series() {
    let pg = Pushgateway::start();
    let pusher = Pusher::new(config(&pg.url(), Duration::from_secs(5))).unwrap();
    let t1 = SystemTime::now();
    let mut both = Metrics::new();
    both.outcome(0, Duration::from_secs(2), t1)
        .set_time(STORE_LAST_SUCCESS, &["s3"], t1)
        .set_time(STORE_LAST_SUCCESS, &["dir"], t1)
        .set_with(STORE_SNAPSHOTS, &["s3"], 7.0)
        .set_with(STORE_SNAPSHOTS, &["dir"], 3.0);
    assert!(pusher.push("snapshot-sync", &both).await, "{}", pg.log());

    tokio::time::sleep(Duration::from_millis(20)).await;
    let t2 = SystemTime::now();
    let mut dir_only = Metrics::new();
    dir_only
        .outcome(1, Duration::from_secs(2), t2)
        .set_time(STORE_LAST_SUCCESS, &["dir"], t2)
        .set_with(STORE_SNAPSHOTS, &["dir"], 4.0);
    assert!(
        pusher.push("snapshot-sync", &dir_only).await,
        "{}",
        pg.log()
    );

    let stores: Vec<(String, String, f64)> = pg
        .metrics("vault_backup_store_")
        .into_iter()
        .map(|s| (s.name.clone(), s.label("store").to_owned(), s.value))
        .collect();
    let get = |name: &str, store: &str| {
        stores
            .iter()
            .find(|(n, s, _)| n == name && s == store)
            .map(|(_, _, v)| *v)
    };
    assert_eq!(stores.len(), 4, "{stores:?}");
    assert!(close(
        get(STORE_LAST_SUCCESS.name, "s3").unwrap(),
        unix_seconds(t1)
    ));
    assert!(close(
        get(STORE_LAST_SUCCESS.name, "dir").unwrap(),
        unix_seconds(t2)
    ));
    assert_eq!(get(STORE_SNAPSHOTS.name, "s3"), Some(7.0));
    assert_eq!(get(STORE_SNAPSHOTS.name, "dir"), Some(4.0));
    // The series look as if pushed with a store label: same job, task, step as the step's own.
    for s in pg.metrics("vault_backup_store_") {
        assert_eq!(
            (s.label("task"), s.label("step")),
            ("vault-backup", "snapshot-sync")
        );
    }
    assert!(pg.value(LAST_FAILURE.name, "snapshot-sync").is_some());
}

/// Issue 17: several installs on one Pushgateway. Two namespaces push the same task and step;
/// each keeps its own series (the grouping key carries `namespace`), so one cluster's success
/// cannot hide another's failure.
#[tokio::test]
async fn two_namespaces_keep_their_own_series() {
    let pg = Pushgateway::start();
    let pusher_in = |ns: &str| {
        let mut c = config(&pg.url(), Duration::from_secs(5));
        c.namespace = Some(ns.to_owned());
        Pusher::new(c).unwrap()
    };
    let (a, b) = (pusher_in("team-a"), pusher_in("team-b"));
    let t1 = SystemTime::now();
    let mut ok = Metrics::new();
    ok.outcome(0, Duration::from_secs(1), t1)
        .set(SNAPSHOT_BYTES, 1000.0);
    assert!(a.push("vault-snapshot", &ok).await, "{}", pg.log());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut failed = Metrics::new();
    failed.outcome(1, Duration::from_secs(1), SystemTime::now());
    assert!(b.push("vault-snapshot", &failed).await, "{}", pg.log());

    let all = pg.metrics("vault_backup_");
    let of = |ns: &str, name: &str| -> Vec<f64> {
        all.iter()
            .filter(|s| s.name == name && s.label("namespace") == ns)
            .map(|s| s.value)
            .collect()
    };
    assert_eq!(of("team-a", LAST_SUCCESS.name).len(), 1, "{all:?}");
    assert!(close(of("team-a", LAST_SUCCESS.name)[0], unix_seconds(t1)));
    assert_eq!(
        of("team-a", LAST_FAILURE.name),
        Vec::<f64>::new(),
        "{all:?}"
    );
    assert_eq!(of("team-a", SNAPSHOT_BYTES.name), vec![1000.0]);
    // Team b's failure sits beside team a's success, not over it; it never succeeded.
    assert_eq!(of("team-b", LAST_FAILURE.name).len(), 1, "{all:?}");
    assert_eq!(
        of("team-b", LAST_SUCCESS.name),
        Vec::<f64>::new(),
        "{all:?}"
    );
    assert_eq!(of("team-b", SNAPSHOT_BYTES.name), Vec::<f64>::new());
    for s in &all {
        assert!(
            ["team-a", "team-b"].contains(&s.label("namespace")),
            "a series without its namespace: {s:?}"
        );
    }
}

/// [`Metrics::render`] is the view the tests of each step read; it must be what the
/// Pushgateway serves after a push of [`Config::requests`] (what is really sent): the same
/// series, with the same values and the step's own labels.
#[tokio::test]
async fn render_is_what_the_pushgateway_serves_after_the_push() {
    let pg = Pushgateway::start();
    let pusher = Pusher::new(config(&pg.url(), Duration::from_secs(5))).unwrap();
    let now = SystemTime::now();
    let mut m = Metrics::new();
    m.outcome(0, Duration::from_millis(1500), now)
        .set(SNAPSHOT_BYTES, 4096.0)
        .set_time(STORE_LAST_SUCCESS, &["s3"], now)
        .set_with(STORE_SNAPSHOTS, &["s3"], 7.0)
        .set_with(STORE_SNAPSHOTS, &["dir"], 3.0);
    assert!(pusher.push("snapshot-sync", &m).await, "{}", pg.log());
    let mut served: Vec<String> = pg
        .metrics("vault_backup_")
        .iter()
        .map(|s| {
            let own: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, v)| {
                    !["job", "namespace", "task", "step", "instance"].contains(&k.as_str())
                        && !v.is_empty()
                })
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let own = if own.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", own.join(","))
            };
            format!("{}{own} {}", s.name, s.value)
        })
        .collect();
    let mut rendered: Vec<String> = m
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            format!("{series} {}", value.parse::<f64>().unwrap())
        })
        .collect();
    served.sort();
    rendered.sort();
    assert_eq!(served, rendered);
}

/// Issue 18 point 8 and issue 17: each Task passes the `METRICS_*` variables once, in its
/// `stepTemplate` (every variable the binaries read from the config Secret, optional, under its
/// own name), sets `METRICS_TASK` and `METRICS_NAMESPACE` from the TaskRun's context, and no
/// step repeats any of them.
#[test]
fn each_task_passes_the_metrics_variables_once_in_its_step_template() {
    let root = vault_backup_testbed::venv::workspace_root();
    let variables = Config::variables();
    for file in [
        "tekton/task.yaml",
        "tekton/restore-task.yaml",
        "tekton/drill-task.yaml",
    ] {
        let task: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(root.join(file)).unwrap()).unwrap();
        let spec = &task["spec"];
        let env = spec["stepTemplate"]["env"].as_sequence().unwrap();
        let find = |name: &str| env.iter().find(|e| e["name"] == name);
        for name in &variables {
            let item = find(name).unwrap_or_else(|| panic!("{file}: stepTemplate lacks {name}"));
            match name.as_str() {
                "METRICS_TASK" => assert_eq!(item["value"], "$(context.task.name)", "{file}"),
                "METRICS_NAMESPACE" => {
                    assert_eq!(item["value"], "$(context.taskRun.namespace)", "{file}");
                }
                _ => {
                    let r = &item["valueFrom"]["secretKeyRef"];
                    assert_eq!(r["name"], "$(params.configSecret)", "{file}: {name}");
                    assert_eq!(r["key"], name.as_str(), "{file}: {name}");
                    assert_eq!(r["optional"], true, "{file}: {name}");
                }
            }
        }
        for step in spec["steps"].as_sequence().unwrap() {
            for e in step["env"].as_sequence().into_iter().flatten() {
                let name = e["name"].as_str().unwrap();
                assert!(
                    !name.starts_with("METRICS_"),
                    "{file}: step {} repeats {name}",
                    step["name"].as_str().unwrap()
                );
            }
        }
    }
}
