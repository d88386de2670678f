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
use crate::pushgateway::Pushgateway;
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
/// The canary's path on the `secret` mount (KV v2) in the generated config.
pub const CANARY_PATH: &str = "vault-backup/canary";
/// The CA ConfigMap's name (the Task's `caConfigMap` param default).
pub const CA_CONFIGMAP: &str = "vault-backup-ca";

/// One run of a shipped Task: which files, which TaskRun name, and what it changes in the
/// shipped TaskRun.
#[derive(Debug, Default, Clone)]
pub struct Run<'a> {
    /// The Task file, relative to the workspace root.
    pub task: &'a str,
    /// The TaskRun template whose params and workspaces are used.
    pub taskrun: &'a str,
    /// The TaskRun's name.
    pub name: &'a str,
    /// Params set over the template's.
    pub params: Vec<(&'a str, &'a str)>,
    /// Workspaces bound beyond the template's (`backups`).
    pub bind: Vec<&'a str>,
    /// Secret and ConfigMap files beyond the environment's.
    pub objects: Vec<PathBuf>,
    /// How long the sidecars may take to become Ready (`None`: the runner's default).
    pub sidecar_ready_timeout: Option<std::time::Duration>,
}

/// The files of a restore drill: the Task, the TaskRun and the scratch OpenBao's configuration
/// (the ConfigMap kustomize makes of it).
#[derive(Debug, Clone)]
pub struct Drill {
    /// The Task file.
    pub task: PathBuf,
    /// The TaskRun file whose params and workspaces are used.
    pub taskrun: PathBuf,
    /// The HCL that becomes the ConfigMap `vault-restore-drill-openbao`.
    pub openbao_config: PathBuf,
    /// How long the sidecar may take to become Ready (`None`: the runner's default).
    pub sidecar_ready_timeout: Option<std::time::Duration>,
    /// Whether the unseal keys Secret (`vault-restore-drill-unseal`, the environment's cluster's
    /// key) exists: not for a drill whose scratch node auto-unseals.
    pub unseal_keys_secret: bool,
}

/// `text` indented by four spaces, line by line (a YAML block scalar's body).
fn indent(text: &str) -> String {
    text.lines().fold(String::new(), |mut out, l| {
        out.push_str("    ");
        out.push_str(l);
        out.push('\n');
        out
    })
}

/// What one local run is made of.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // independent switches of a test setup, not a state
pub struct Setup {
    /// OpenBao nodes (the run's `VAULT_ADDR` is a standby when there are several).
    pub nodes: usize,
    /// Serve OpenBao over TLS with a test CA, given to the Task through its CA ConfigMap.
    pub tls: bool,
    /// Start SeaweedFS and give the Task the ObjectBucketClaim's ConfigMap and Secret.
    pub s3: bool,
    /// The config Secret: written for the run, or the shipped example.
    pub config: ConfigSource,
    /// With a generated config: `CANARY_PATH` set, so every backup writes the canary.
    pub canary: bool,
    /// Start a real Pushgateway and point `METRICS_PUSHGATEWAY_URL` at it (generated config).
    pub pushgateway: bool,
}

/// Where the run's config Secret comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// Written for the run: a token holding only the shipped policy, S3 prefix `prod/`,
    /// `RETAIN_LAST=5`, `PRUNE_KEEP=3`; `VAULT_ADDR` as given, else the cluster's.
    Generated {
        /// Overrides `VAULT_ADDR` (e.g. a closed port, for a run whose snapshot fails).
        vault_addr: Option<String>,
    },
    /// `tekton/config-secret.example.yaml` as shipped, with only `VAULT_ADDR` pointed at the
    /// local cluster and its Kubernetes login replaced by a token (there is no service-account
    /// token file here). Every other key, and the commented-out S3 part, stay as shipped.
    Example,
}

impl Default for Setup {
    /// The demo's run: 3 nodes, no TLS, S3 and a directory, generated config.
    fn default() -> Self {
        Self {
            nodes: 3,
            tls: false,
            s3: true,
            config: ConfigSource::Generated { vault_addr: None },
            canary: true,
            pushgateway: true,
        }
    }
}

/// Every server and directory of one local run.
#[derive(Debug)]
pub struct Environment {
    /// The OpenBao cluster being backed up.
    pub cluster: Cluster,
    /// The S3 store, when the setup has one.
    pub s3: Option<SeaweedFs>,
    /// The Pushgateway the steps push to, when the setup has one.
    pub pushgateway: Option<Pushgateway>,
    /// The Kubernetes API stand-in the guard and prune steps talk to.
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
    /// The token written into the config Secret (checked absent from logs).
    pub token: String,
    dir: TempDir,
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_owned()
}

/// `text` with the line `  KEY: ...` replaced by `with`; panics if there is no such line, so a
/// change to the example file shows up here.
fn replace_line(text: &str, key: &str, with: &str) -> String {
    let prefix = format!("  {key}: ");
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)),
        "config-secret.example.yaml no longer sets {key}; update the test bed"
    );
    text.lines()
        .map(|l| if l.starts_with(&prefix) { with } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The config Secret's YAML for `setup`.
fn config_secret_text(
    setup: &Setup,
    vault_addr: &str,
    token: &str,
    pushgateway: Option<&Pushgateway>,
) -> String {
    let metrics = pushgateway.map_or_else(String::new, |p| {
        format!(
            "  METRICS_PUSHGATEWAY_URL: \"{}\"\n  METRICS_PUSH_TIMEOUT: \"2s\"\n",
            p.url()
        )
    });
    let cacert = if setup.tls {
        "  VAULT_CACERT: \"/etc/vault-backup/ca/ca.crt\"\n"
    } else {
        ""
    };
    // Any S3 setting without a bucket is a configuration error.
    let canary = if setup.canary {
        format!("  CANARY_PATH: \"{CANARY_PATH}\"\n")
    } else {
        String::new()
    };
    // With S3, the drill reads S3 even where its TaskRun binds the backups PVC too.
    let s3_prefix = if setup.s3 {
        "  S3_PREFIX: \"prod/\"\n  RESTORE_FROM: \"s3\"\n"
    } else {
        ""
    };
    match &setup.config {
        ConfigSource::Generated { vault_addr: addr } => format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-backup-config\ntype: Opaque\nstringData:\n  \
             VAULT_ADDR: \"{addr}\"\n  VAULT_TOKEN: \"{token}\"\n{cacert}  SNAPSHOT_PREFIX: \"vault\"\n  \
             SNAPSHOT_RETRIES: \"3\"\n  SNAPSHOT_RETRY_DELAY: \"1s\"\n{s3_prefix}{canary}{metrics}  \
             RETAIN_LAST: \"5\"\n  PRUNE_KEEP: \"{PRUNE_KEEP}\"\n  PRUNE_DRY_RUN: \"false\"\n",
            addr = addr.as_deref().unwrap_or(vault_addr),
        ),
        ConfigSource::Example => {
            let shipped = std::fs::read_to_string(
                venv::workspace_root().join("tekton/config-secret.example.yaml"),
            )
            .expect("tekton/config-secret.example.yaml");
            let text = replace_line(
                &shipped,
                "VAULT_ADDR",
                &format!("  VAULT_ADDR: \"{vault_addr}\""),
            );
            let text = replace_line(
                &text,
                "VAULT_AUTH_ROLE",
                &format!("  VAULT_TOKEN: \"{token}\""),
            );
            let text = replace_line(&text, "VAULT_AUTH_MOUNT", "");
            if setup.tls {
                replace_line(&text, "VAULT_CACERT", cacert.trim_end())
            } else {
                text
            }
        }
    }
}

/// [`OLD_RUNS`] finished runs of earlier days, and this run, still running.
fn seed_taskruns(kube: &KubeStandIn, task_run_name: &str) {
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
        &TaskRun::new(task_run_name)
            .task("vault-backup")
            .created(Some(now))
            .running(),
    );
}

impl Environment {
    /// [`Environment::start_with`] the demo's [`Setup::default`].
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&Setup::default())
    }

    /// Starts the servers of `setup` and writes the config Secret, the ObjectBucketClaim's
    /// ConfigMap and Secret (with S3) and the CA ConfigMap (with TLS). The stand-in holds
    /// [`OLD_RUNS`] finished runs of earlier days and this run, still running.
    ///
    /// # Panics
    /// If a server does not start.
    #[must_use]
    pub fn start_with(setup: &Setup) -> Self {
        // First: every server below then listens on the pod network's host address, where the
        // runner's pods reach it (as they would reach a Service), not on 127.0.0.1.
        crate::podnet::network();
        let cluster = Cluster::start(
            setup.nodes,
            Options {
                tls: setup.tls,
                disable_standby_reads: true,
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
        let vault_addr = if setup.nodes > 1 {
            cluster.addr(cluster.standby()).to_owned()
        } else {
            cluster.addr(0).to_owned()
        };
        let s3 = setup.s3.then(|| SeaweedFs::start(BUCKET));
        let namespace = "vault-backup";
        let kube = KubeStandIn::start_in(namespace);
        let task_run_name = format!("vault-backup-{}", Utc::now().format("%H%M%S"));
        seed_taskruns(&kube, &task_run_name);

        let dir = tempfile::Builder::new()
            .prefix("vault-backup-demo-")
            .tempdir()
            .expect("tempdir");
        let backups = dir.path().join("backups");
        let scratch = dir.path().join("scratch");
        for d in [&backups, &scratch] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let pushgateway = setup.pushgateway.then(Pushgateway::start);
        let config_text = config_secret_text(setup, &vault_addr, &token, pushgateway.as_ref());
        let mut objects = vec![write(&dir.path().join("config-secret.yaml"), &config_text)];
        if let Some(s3) = &s3 {
            objects.push(write(
                &dir.path().join("obc-configmap.yaml"),
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {CLAIM}\ndata:\n  BUCKET_HOST: \"{host}\"\n  \
                     BUCKET_PORT: \"{port}\"\n  BUCKET_NAME: \"{BUCKET}\"\n  BUCKET_REGION: \"{region}\"\n  \
                     BUCKET_SUBREGION: \"\"\n  BUCKET_SSL: \"false\"\n",
                    host = crate::process::host(),
                    port = s3.port(),
                    region = s3.region(),
                ),
            ));
            objects.push(write(
                &dir.path().join("obc-secret.yaml"),
                &format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {CLAIM}\ntype: Opaque\nstringData:\n  \
                     AWS_ACCESS_KEY_ID: \"{}\"\n  AWS_SECRET_ACCESS_KEY: \"{}\"\n",
                    s3.access_key(),
                    s3.secret_key(),
                ),
            ));
        }
        if let Some(ca) = cluster.ca_cert() {
            let pem = std::fs::read_to_string(ca).expect("test CA");
            let indented = indent(&pem);
            objects.push(write(
                &dir.path().join("ca-configmap.yaml"),
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {CA_CONFIGMAP}\ndata:\n  ca.crt: |\n{indented}"
                ),
            ));
        }
        Self {
            cluster,
            s3,
            pushgateway,
            kube,
            results: dir.path().join("results"),
            backups,
            scratch,
            objects,
            task_run_name,
            token,
            dir,
        }
    }

    /// Adds `key: value` to the config Secret the Tasks read (a store started after the
    /// environment, such as GCS or Azure, or a `RESTORE_FROM`).
    ///
    /// # Panics
    /// If the Secret's file cannot be written.
    pub fn add_config(&self, key: &str, value: &str) {
        let path = &self.objects[0];
        let mut text = std::fs::read_to_string(path).expect("config Secret");
        let value = serde_json::to_string(value).expect("a JSON string is a YAML string");
        text.push_str(&format!("  {key}: {value}\n"));
        write(path, &text);
    }

    /// The S3 store.
    ///
    /// # Panics
    /// If the setup has none.
    #[must_use]
    pub fn s3(&self) -> &SeaweedFs {
        self.s3.as_ref().expect("this setup has no S3 store")
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
        self.run_task_as(&self.task_run_name, known_env, echo)
    }

    /// Like [`Environment::run_task`], as the TaskRun `task_run_name` (which the caller has put
    /// in the stand-in) with its own results directory.
    ///
    /// # Errors
    /// The runner's error when the manifest and the binaries disagree.
    pub fn run_task_as(
        &self,
        task_run_name: &str,
        known_env: BTreeMap<String, BTreeSet<String>>,
        echo: bool,
    ) -> Result<Outcome, RunError> {
        self.run_shipped(
            &Run {
                task: "tekton/task.yaml",
                taskrun: "tekton/taskrun.yaml",
                name: task_run_name,
                ..Run::default()
            },
            known_env,
            echo,
        )
    }

    /// The restore drill: `tekton/drill-task.yaml` with the params and workspaces of
    /// `tekton/drill-taskrun.yaml`, its sidecar a local OpenBao started from
    /// `tekton/drill-openbao.hcl` (the ConfigMap kustomize makes of it), the source cluster's
    /// unseal key in the unseal Secret. The run is added to the stand-in as running.
    ///
    /// # Errors
    /// The runner's error when the manifest and the binaries disagree.
    pub fn run_drill(
        &self,
        task_run_name: &str,
        known_env: BTreeMap<String, BTreeSet<String>>,
        echo: bool,
    ) -> Result<Outcome, RunError> {
        let root = venv::workspace_root();
        self.run_drill_from(
            &Drill {
                task: root.join("tekton/drill-task.yaml"),
                taskrun: root.join("tekton/drill-taskrun.yaml"),
                openbao_config: root.join("tekton/drill-openbao.hcl"),
                sidecar_ready_timeout: None,
                unseal_keys_secret: true,
            },
            task_run_name,
            known_env,
            echo,
        )
    }

    /// Like [`Environment::run_drill`], with the Task, TaskRun and OpenBao configuration files
    /// of `drill` (e.g. an older release's, kept as a fixture).
    ///
    /// # Errors
    /// The runner's error when the manifest and the binaries disagree.
    ///
    /// # Panics
    /// If a file of `drill` is unreadable.
    pub fn run_drill_from(
        &self,
        drill: &Drill,
        task_run_name: &str,
        known_env: BTreeMap<String, BTreeSet<String>>,
        echo: bool,
    ) -> Result<Outcome, RunError> {
        let config = std::fs::read_to_string(&drill.openbao_config)
            .unwrap_or_else(|e| panic!("{}: {e}", drill.openbao_config.display()));
        let dir = self.dir.path().join("runs").join(task_run_name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut objects = vec![write(
            &dir.join("drill-openbao.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vault-restore-drill-openbao\ndata:\n  config.hcl: |\n{}",
                indent(&config)
            ),
        )];
        if drill.unseal_keys_secret {
            objects.push(write(
                &dir.join("unseal.yaml"),
                &format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-restore-drill-unseal\ntype: Opaque\nstringData:\n  keys: \"{}\"\n",
                    self.cluster.unseal_key()
                ),
            ));
        }
        self.kube.add_taskrun(
            &TaskRun::new(task_run_name)
                .task("vault-restore-drill")
                .running(),
        );
        let task = drill.task.display().to_string();
        let taskrun = drill.taskrun.display().to_string();
        self.run_shipped(
            &Run {
                task: &task,
                taskrun: &taskrun,
                name: task_run_name,
                objects,
                sidecar_ready_timeout: drill.sidecar_ready_timeout,
                ..Run::default()
            },
            known_env,
            echo,
        )
    }

    /// Runs a shipped Task with the params and workspaces of its shipped TaskRun, changed by
    /// `run`.
    ///
    /// # Errors
    /// The runner's error when the manifest and the binaries disagree.
    pub fn run_shipped(
        &self,
        run: &Run<'_>,
        known_env: BTreeMap<String, BTreeSet<String>>,
        echo: bool,
    ) -> Result<Outcome, RunError> {
        let root = venv::workspace_root();
        // The params and workspaces of the TaskRun a person or the CronJob submits.
        let taskrun = runner::read_taskrun(&root.join(run.taskrun))?;
        let mut params = taskrun.params;
        // Readable on a terminal.
        params.insert("logFormat".to_owned(), "text".to_owned());
        params.extend(
            run.params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let main = run.name == self.task_run_name;
        let run_dir = self.dir.path().join("runs").join(run.name);
        let mut workspaces = BTreeMap::new();
        for name in taskrun
            .workspaces
            .iter()
            .map(String::as_str)
            .chain(run.bind.iter().copied())
        {
            let dir = match name {
                "scratch" if main => self.scratch.clone(),
                "scratch" => run_dir.join("scratch"),
                "backups" => self.backups.clone(),
                other => {
                    return Err(RunError::Task(format!(
                        "{} binds workspace {other}, which the test bed does not provide",
                        run.taskrun
                    )));
                }
            };
            std::fs::create_dir_all(&dir).expect("mkdir workspace");
            workspaces.insert(name.to_owned(), dir);
        }
        let snapshot_bin = venv::workspace_bin("vault-snapshot");
        let spec = RunSpec {
            task_file: root.join(run.task),
            task_ref: Some(taskrun.task_ref),
            params,
            array_params: taskrun.array_params,
            workspaces,
            read_only_workspaces: taskrun.read_only_workspaces,
            pod_security: taskrun.pod_security,
            objects: self.objects.iter().chain(&run.objects).cloned().collect(),
            bin_dir: snapshot_bin.parent().expect("bin dir").to_owned(),
            known_env,
            task_run_name: run.name.to_owned(),
            namespace: self.kube.namespace().to_owned(),
            // In a cluster the pod's service account gives the guard and prune steps their API
            // access; here a kubeconfig for the stand-in does, mounted where the token would be.
            kubeconfig: Some(self.kube.kubeconfig_path().to_owned()),
            results_dir: if main {
                self.results.clone()
            } else {
                run_dir.join("results")
            },
            volumes_dir: run_dir.join("volumes"),
            echo,
            sidecar_ready_timeout: run.sidecar_ready_timeout,
        };
        runner::run(&spec)
    }

    /// The scratch workspace of the run `name` (not the main backup run).
    #[must_use]
    pub fn scratch_of(&self, name: &str) -> PathBuf {
        self.dir.path().join("runs").join(name).join("scratch")
    }

    /// A directory of this environment for a test's own files.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
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
            self.s3()
                .download(&format!("{prefix}{file}"), &dest.join(&file));
        }
        sha256sum_check(&dest, &format!("{name}.snap.sha256"));
        dest
    }
}
