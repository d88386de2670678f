//! The whole backup job on one machine: a 3-node OpenBao cluster, SeaweedFS, a directory store
//! and the Kubernetes API stand-in, with `tekton/task.yaml` run through the [`runner`].
//!
//! Shared by the end-to-end test and `make demo`, so that what the demo shows is what CI
//! checks.
//!
//! [`runner`]: crate::runner

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{TimeDelta, Utc};
use tempfile::TempDir;

pub use crate::check::sha256sum_check;
use crate::kube_standin::{KubeStandIn, TaskRun};
use crate::openbao::{Cluster, Options};
use crate::runner::{self, Outcome, RunError, RunSpec};
use crate::seaweed::SeaweedFs;
use crate::venv;

/// The bucket the demo and test use.
pub const BUCKET: &str = "vault-backups";
/// The ObjectBucketClaim name (its ConfigMap and Secret carry this name).
pub const CLAIM: &str = "vault-backup-bucket";
/// How many finished TaskRuns of earlier days the stand-in starts with.
pub const OLD_RUNS: usize = 12;
/// `PRUNE_KEEP` in the demo's config Secret.
pub const PRUNE_KEEP: usize = 3;

/// Every server and directory of one local run.
#[derive(Debug)]
pub struct Environment {
    /// The OpenBao cluster being backed up.
    pub cluster: Cluster,
    /// The S3 store.
    pub s3: SeaweedFs,
    /// The Kubernetes API stand-in the prune step talks to.
    pub kube: KubeStandIn,
    /// The PVC stand-in (`backups` workspace).
    pub backups: PathBuf,
    /// The emptyDir stand-in (`scratch` workspace).
    pub scratch: PathBuf,
    /// Tekton's results directory.
    pub results: PathBuf,
    /// The Secret and ConfigMap YAML files.
    pub objects: Vec<PathBuf>,
    /// The TaskRun's name (already in the stand-in, still running).
    pub task_run_name: String,
    dir: TempDir,
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_owned()
}

impl Environment {
    /// Starts everything and writes the config Secret (a token holding only the shipped policy,
    /// VAULT_ADDR pointing at a standby) and the ObjectBucketClaim's ConfigMap and Secret.
    #[must_use]
    pub fn start() -> Self {
        let cluster = Cluster::start(
            3,
            Options {
                disable_standby_reads: true,
                ..Options::default()
            },
        );
        cluster.write_secret(
            "secret/payments",
            &[("api-key", "pk_live_demo"), ("owner", "sre")],
        );
        cluster.write_secret("secret/db", &[("password", "correct horse battery staple")]);
        let policy =
            std::fs::read_to_string(venv::workspace_root().join("tekton/vault-policy.hcl"))
                .expect("tekton/vault-policy.hcl");
        let token = cluster.token_with_policy("vault-backup", &policy);
        let standby = cluster.standby();
        let s3 = SeaweedFs::start(BUCKET);
        let namespace = "vault-backup";
        let kube = KubeStandIn::start_in(namespace);
        let task_run_name = format!("vault-backup-{}", Utc::now().format("%H%M%S"));
        let now = Utc::now();
        for i in 0..OLD_RUNS {
            let days = i64::try_from(i).expect("small") + 1;
            let started = now - TimeDelta::days(days);
            kube.add_taskrun(
                &TaskRun::new(format!("vault-backup-old-{i:02}"))
                    .task("vault-backup")
                    .created(Some(started))
                    .succeeded(Some(started + TimeDelta::minutes(1))),
            );
        }
        kube.add_taskrun(
            &TaskRun::new(&task_run_name)
                .task("vault-backup")
                .created(Some(now))
                .running(),
        );

        let dir = tempfile::Builder::new()
            .prefix("vault-backup-demo-")
            .tempdir()
            .expect("tempdir");
        let backups = dir.path().join("backups");
        let scratch = dir.path().join("scratch");
        for d in [&backups, &scratch] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let config = write(
            &dir.path().join("config-secret.yaml"),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-backup-config\ntype: Opaque\nstringData:\n  \
                 VAULT_ADDR: \"{addr}\"\n  VAULT_TOKEN: \"{token}\"\n  SNAPSHOT_PREFIX: \"vault\"\n  \
                 SNAPSHOT_RETRIES: \"3\"\n  SNAPSHOT_RETRY_DELAY: \"1s\"\n  S3_TLS: \"false\"\n  S3_PREFIX: \"prod/\"\n  \
                 RETAIN_LAST: \"5\"\n  PRUNE_KEEP: \"{PRUNE_KEEP}\"\n  PRUNE_DRY_RUN: \"false\"\n",
                addr = cluster.addr(standby),
            ),
        );
        let obc_cm = write(
            &dir.path().join("obc-configmap.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {CLAIM}\ndata:\n  BUCKET_HOST: \"127.0.0.1\"\n  \
                 BUCKET_PORT: \"{port}\"\n  BUCKET_NAME: \"{BUCKET}\"\n  BUCKET_REGION: \"{region}\"\n  BUCKET_SUBREGION: \"\"\n",
                port = s3.port(),
                region = s3.region(),
            ),
        );
        let obc_secret = write(
            &dir.path().join("obc-secret.yaml"),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {CLAIM}\ntype: Opaque\nstringData:\n  \
                 AWS_ACCESS_KEY_ID: \"{}\"\n  AWS_SECRET_ACCESS_KEY: \"{}\"\n",
                s3.access_key(),
                s3.secret_key(),
            ),
        );
        Self {
            cluster,
            s3,
            kube,
            results: dir.path().join("results"),
            backups,
            scratch,
            objects: vec![config, obc_cm, obc_secret],
            task_run_name,
            dir,
        }
    }

    /// Runs `tekton/task.yaml` through the step runner with the TaskRun's params and workspaces.
    ///
    /// # Errors
    /// The runner's error when the manifest and the binaries disagree.
    pub fn run_task(
        &self,
        known_env: BTreeMap<String, BTreeSet<String>>,
        echo: bool,
    ) -> Result<Outcome, RunError> {
        let root = venv::workspace_root();
        // The params and workspaces of the TaskRun a person or the CronJob submits.
        let taskrun = runner::read_taskrun(&root.join("tekton/taskrun.yaml"))?;
        let mut params = taskrun.params;
        // Readable on a terminal; the only change from the shipped TaskRun.
        params.insert("logFormat".to_owned(), "text".to_owned());
        let mut workspaces = BTreeMap::new();
        for name in taskrun.workspaces {
            let dir = match name.as_str() {
                "scratch" => self.scratch.clone(),
                "backups" => self.backups.clone(),
                other => {
                    return Err(RunError::Task(format!(
                        "taskrun.yaml binds workspace {other}, which the demo does not provide"
                    )));
                }
            };
            workspaces.insert(name, dir);
        }
        let snapshot_bin = venv::workspace_bin("vault-snapshot");
        let spec = RunSpec {
            task_file: root.join("tekton/task.yaml"),
            task_ref: Some(taskrun.task_ref),
            params,
            workspaces,
            objects: self.objects.clone(),
            bin_dir: snapshot_bin.parent().expect("bin dir").to_owned(),
            known_env,
            task_run_name: self.task_run_name.clone(),
            namespace: self.kube.namespace().to_owned(),
            // In a cluster the pod's service account gives the prune step its API access; here
            // a kubeconfig for the stand-in does.
            pod_env: vec![(
                "KUBECONFIG".to_owned(),
                self.kube.kubeconfig_path().display().to_string(),
            )],
            results_dir: self.results.clone(),
            echo,
        };
        runner::run(&spec)
    }

    /// Downloads the snapshot and its sidecars from S3 into a fresh directory and checks them
    /// with `sha256sum -c`, as a person restoring would. Returns the directory.
    ///
    /// # Panics
    /// If a file is missing or the check fails.
    #[must_use]
    pub fn download_and_check(&self, name: &str, prefix: &str) -> PathBuf {
        let dest = self.dir.path().join("downloaded");
        std::fs::create_dir_all(&dest).expect("mkdir");
        for suffix in [".snap", ".snap.sha256", ".snap.json"] {
            let file = format!("{name}{suffix}");
            self.s3
                .download(&format!("{prefix}{file}"), &dest.join(&file));
        }
        sha256sum_check(&dest, &format!("{name}.snap.sha256"));
        dest
    }
}
