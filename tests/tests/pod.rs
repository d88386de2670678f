//! The step runner's pod model, checked on small Tasks of its own (`tests/tests/fixtures/`): a
//! read-only root filesystem refuses writes outside the volumes, a sidecar listening on the pod's
//! loopback only is never Ready to a probe from outside the pod, and a workspace file is owned as
//! `runAsUser` and `fsGroup` say.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vault_backup_testbed::runner::{self, PodSecurity, RunError, RunSpec};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn spec(task: &str, dir: &Path) -> RunSpec {
    RunSpec {
        task_file: fixture(task),
        bin_dir: Path::new(env!("CARGO_BIN_EXE_pod-check"))
            .parent()
            .unwrap()
            .to_owned(),
        known_env: BTreeMap::from([(
            "pod-check".to_owned(),
            BTreeSet::from(["POD_CHECK_WRITE".to_owned(), "POD_CHECK_ENV".to_owned()]),
        )]),
        task_run_name: "pod-check-run".into(),
        namespace: "ns".into(),
        results_dir: dir.join("results"),
        ..RunSpec::default()
    }
}

#[test]
fn a_read_only_root_refuses_writes_outside_the_volumes_and_a_workspace_file_is_owned_as_fs_group_says()
 {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut spec = spec("pod-check-task.yaml", dir.path());
    spec.workspaces.insert("out".into(), out.clone());
    spec.pod_security = PodSecurity {
        run_as_user: Some(4321),
        run_as_group: Some(4322),
        fs_group: Some(4323),
        run_as_non_root: Some(true),
        ..PodSecurity::default()
    };
    let outcome = runner::run(&spec).expect("the Task runs");
    let step = |name: &str| {
        let s = outcome.step(name).unwrap();
        (s.code, s.stderr.clone())
    };
    let (code, stderr) = step("read-only-root");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let (code, stderr) = step("writable-root");
    assert_eq!(code, 0, "the same write with a writable root: {stderr}");
    let (code, stderr) = step("no-tmp");
    assert_eq!(code, 1, "{stderr}");
    let (code, stderr) = step("volume");
    assert_eq!(code, 0, "a volume is writable: {stderr}");

    // Only the image's ENV (images/Containerfile), the YAML's env and the kubelet's HOSTNAME:
    // nothing of this test process's environment (PATH, HOME, CARGO_*, ...).
    let (code, stderr) = step("env");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("env: HOSTNAME LOG_FORMAT PATH POD_CHECK_ENV SSL_CERT_FILE\n"),
        "{stderr}"
    );

    let (code, stderr) = step("workspace");
    assert_eq!(code, 0, "{stderr}");
    let file = std::fs::metadata(out.join("owned")).unwrap();
    assert_eq!(
        (file.uid(), file.gid()),
        (4321, 4323),
        "written by runAsUser, group fsGroup (the setgid directory's)"
    );
    let ws = std::fs::metadata(&out).unwrap();
    assert_eq!(ws.gid(), 4323);
    assert_eq!(
        ws.mode() & 0o2070,
        0o2070,
        "setgid, group rwx: {:o}",
        ws.mode()
    );
}

fn probe_spec(dir: &Path, listen: &str) -> RunSpec {
    let config = dir.join("openbao-configmap.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pod-probe-openbao\ndata:\n  config.hcl: |\n    \
             storage \"raft\" {{\n      path = \"/openbao/data\"\n      node_id = \"probe\"\n    }}\n    \
             listener \"tcp\" {{\n      address = \"{listen}:8200\"\n      tls_disable = true\n    }}\n    \
             api_addr = \"http://127.0.0.1:8200\"\n    cluster_addr = \"https://127.0.0.1:8201\"\n"
        ),
    )
    .unwrap();
    let mut spec = spec("pod-probe-task.yaml", dir);
    spec.objects.push(config);
    spec.pod_security.fs_group = Some(65532);
    spec.sidecar_ready_timeout = Some(Duration::from_secs(5));
    spec
}

#[test]
fn a_sidecar_listening_on_the_pods_loopback_only_is_never_ready_and_no_step_runs() {
    let dir = tempfile::tempdir().unwrap();
    let err = runner::run(&probe_spec(dir.path(), "127.0.0.1"))
        .map(|o| o.steps)
        .expect_err("a probe at the pod IP never reaches 127.0.0.1");
    let msg = err.to_string();
    assert!(
        matches!(&err, RunError::SidecarNotReady { sidecar, probe, .. }
            if sidecar == "openbao" && probe.starts_with("tcpSocket 198.1") && probe.ends_with(":8200")),
        "{msg}"
    );
    assert!(msg.contains("sidecar openbao never became Ready"), "{msg}");
    // It was up, just not where the kubelet looks.
    assert!(msg.contains("OpenBao server started"), "{msg}");
}

#[test]
fn a_sidecar_listening_on_the_pod_ip_becomes_ready_and_the_step_runs() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = runner::run(&probe_spec(dir.path(), "0.0.0.0")).expect("the sidecar is Ready");
    assert_eq!(outcome.step("after-ready").unwrap().code, 0);
    assert!(
        outcome.sidecar_logs["openbao"].contains("OpenBao server started"),
        "{}",
        outcome.sidecar_logs["openbao"]
    );
}

/// An exec probe runs inside the sidecar's container, in its root: `bao version` is there, a
/// shell is not (the distroless root holds `bao` only), so the second is never Ready.
#[test]
fn an_exec_probe_runs_in_the_containers_root() {
    let dir = tempfile::tempdir().unwrap();
    let task = std::fs::read_to_string(fixture("pod-probe-task.yaml")).unwrap();
    let tcp = "        tcpSocket:\n          port: api\n";
    assert!(task.contains(tcp), "update this test with the fixture");
    for (command, ready) in [
        (r#"["/usr/bin/bao", "version"]"#, true),
        (r#"["/bin/sh", "-c", "true"]"#, false),
    ] {
        let file = dir.path().join(format!("exec-{ready}.yaml"));
        std::fs::write(
            &file,
            task.replace(
                tcp,
                &format!("        exec:\n          command: {command}\n"),
            ),
        )
        .unwrap();
        let mut spec = probe_spec(dir.path(), "0.0.0.0");
        spec.task_file = file;
        spec.sidecar_ready_timeout = Some(Duration::from_secs(3));
        match runner::run(&spec) {
            Ok(outcome) => {
                assert!(ready, "{command} made the sidecar Ready");
                assert_eq!(outcome.step("after-ready").unwrap().code, 0);
            }
            Err(RunError::SidecarNotReady { probe, .. }) => {
                assert!(!ready, "{command} never succeeded");
                assert!(probe.contains("/bin/sh"), "{probe}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn run_as_non_root_with_uid_0_is_refused_as_the_kubelet_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("pod-check-task.yaml", dir.path());
    spec.workspaces.insert("out".into(), dir.path().join("out"));
    spec.pod_security = PodSecurity {
        run_as_user: Some(0),
        run_as_non_root: Some(true),
        ..PodSecurity::default()
    };
    let err = runner::run(&spec).map(|o| o.steps).unwrap_err();
    // The first step to inherit both from the pod; the earlier ones set runAsNonRoot: false.
    assert!(
        err.to_string()
            .starts_with("step no-tmp: runAsNonRoot is true but the container would run as uid 0"),
        "{err}"
    );
}
