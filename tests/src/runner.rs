//! A local step runner: runs a Tekton Task (`tekton/task.yaml`, the restore and drill Tasks) as
//! written, in a pod modelled the way a kubelet and Tekton would make it, each step's image
//! standing for the locally built binary.
//!
//! It exists so that the manifests and the binaries cannot drift apart, and so that a manifest
//! that cannot work on a real cluster fails here too.
//!
//! # The Task
//! It resolves string and array params (with their defaults; `$(params.x[*])` as a whole
//! `command`/`args` element splices the array), `$(workspaces.<name>.path|bound)`,
//! `$(results.<name>.path)`, `$(context.taskRun.name|namespace)`, `$(context.task.name)`; merges
//! the `stepTemplate` into each step as Tekton does (`env` by name, `securityContext` field by
//! field, a step's own `envFrom` replacing the template's); fills `envFrom` and `valueFrom` from
//! local Secret and ConfigMap YAML files; and runs the steps in order, stopping at the first
//! failure unless the step says `onError: continue`. Like Tekton it checks every step before
//! running any. It fails on any `$(...)` it cannot resolve, an image not pinned by tag, an
//! image or command that is not one of our binaries, step `args` or `script`, any `env` name the
//! step's binary does not read, a binary that exits 2 (a configuration the YAML does not
//! provide) and any declared result left unwritten.
//!
//! # The pod
//! See [`crate::pod`] for how a container is made. One network namespace per run (the pod),
//! shared by the sidecars and the steps: they share its loopback, and the pod has an IP on
//! `eth0` (see [`crate::podnet`]). Nothing is rewritten: `http://127.0.0.1:8200` in a step is the
//! pod's loopback, a config file means what it says. The test-bed servers a pod talks to listen
//! on the bridge's host address, which the config Secrets carry (where a cluster would have a
//! Service DNS name).
//!
//! Each container's root holds its image's content: a step's image (`images/Containerfile` and
//! the Makefile's `images` target) is `/usr/local/bin/<binary>`, `/etc/passwd`, `/etc/group` (the
//! Makefile's lines) and `/etc/ssl/certs/ca-certificates.crt`, with the Containerfile's `ENV`
//! and `USER`. The OpenBao sidecar's root (image `openbao-distroless`: entrypoint
//! `/usr/bin/bao`, user 65532; or the older `openbao/openbao`, which needs `command: [bao, ...]`
//! because its entrypoint script is not modelled) holds the test bed's `bao` at `/usr/bin/bao`
//! and the empty `/tmp` (mode 1777) of its base image, nothing else. Debug builds are
//! dynamically linked: their roots get the host's library directories read-only (see
//! [`crate::pod`]); `VAULT_BACKUP_STEP_BIN_DIR=target/x86_64-unknown-linux-musl/release` runs
//! the static binaries `make static` builds, in roots without them.
//!
//! `readOnlyRootFilesystem: true` makes the root read-only: a container can write only to its
//! volumes, and `/tmp` only if a volume is mounted there. Volumes: `emptyDir` (mode 0777),
//! `configMap` and `secret` (honouring `optional`, `defaultMode`, `items`; always mounted
//! read-only, as a kubelet does), workspaces bound to host directories at `/workspace/<name>`
//! (or their `mountPath`; read-only when the Task's workspace or the TaskRun's
//! `persistentVolumeClaim` says `readOnly`), `subPath` on a `volumeMount`, the results directory
//! at `/tekton/results` (an emptyDir in Tekton's pod), and a stand-in for the service-account
//! volume: the kube stand-in's kubeconfig ([`RunSpec::kubeconfig`]) in a read-only directory at
//! `/var/run/secrets/kubernetes.io/serviceaccount`, named by `KUBECONFIG`, where a cluster has
//! the token a kube client finds on its own.
//!
//! `runAsUser`, `runAsGroup`, `fsGroup`, `supplementalGroups` and `runAsNonRoot` come from the
//! pod's security context (Tekton's `podTemplate.securityContext`, [`RunSpec::pod_security`])
//! and the container's (a step's merged with the `stepTemplate`'s), else the image's `USER`. A
//! container that would run as uid 0 with `runAsNonRoot: true` is refused, as the kubelet
//! refuses it (`CreateContainerConfigError`). With an `fsGroup`, every volume is owned as
//! kubelet's `SetVolumeOwnership` leaves it (`pkg/volume/volume_linux.go`): group `fsGroup` on
//! every file, `rw` for the group (`r` on read-only volumes), directories setgid and searchable,
//! and `fsGroup` is a supplementary group of every container.
//!
//! The environment is exactly the image's `ENV`, overridden by the YAML's `envFrom` and `env`,
//! plus what a kubelet adds: `HOSTNAME` (the pod name, also the UTS hostname),
//! `KUBERNETES_SERVICE_HOST`/`_PORT` and the `KUBERNETES_PORT*` service links (pointing at the
//! stand-in), and `KUBECONFIG` (see above). Nothing of the test process's environment reaches
//! a container.
//!
//! Sidecars start first. As in Tekton (`pkg/pod/status.go`, `SidecarsReady`: Running and Ready,
//! or Terminated), no step starts before every sidecar is Ready: one without a `readinessProbe`
//! once started, one with a probe when the probe succeeds. Probes come from outside the pod, as
//! a kubelet's do: `tcpSocket` and `httpGet` connect to the pod IP (or their `host`), `exec` runs
//! in the container's namespaces and root as its user. `initialDelaySeconds`, `periodSeconds`
//! and `timeoutSeconds` are honoured. A sidecar not Ready within
//! [`RunSpec::sidecar_ready_timeout`] (default 60 s) fails the run with an error naming it and
//! its probe. Sidecars are killed (SIGKILL) when the steps end.
//!
//! # Not modelled
//! - Tekton's entrypoint binary, `/tekton/downward`, `/tekton/steps`, `/tekton/home`, step
//!   results and `when` expressions: no Task here uses them (results are files the binaries
//!   write under `/tekton/results`, which is modelled).
//! - Resource requests and limits, `ephemeral-storage` and `emptyDir.sizeLimit`: not enforced
//!   (a known gap: a snapshot larger than a `sizeLimit` fails on a cluster and not here). The
//!   linters and the README's sizing rule cover them.
//! - `capabilities`, `allowPrivilegeEscalation`, `seccompProfile`: not applied beyond what a
//!   non-root uid implies (a non-root process here has no capabilities either, so a binary
//!   needing one fails the same way; running as uid 0 with all capabilities dropped is a gap).
//! - Atomic-writer layout of Secret and ConfigMap volumes (`..data` symlinks) and their live
//!   updates: the files are written once, plainly; the binaries only read them.
//! - The image's `/etc/passwd` entry is not used to pick supplementary groups; a container's
//!   groups are its gid, `fsGroup` and `supplementalGroups`.
//! - `fsGroupChangePolicy` (always the default, recursive) and volumes whose driver does not
//!   support ownership management (a hostPath PVC keeps its owner on a cluster).
//! - Sidecar restarts, liveness and startup probes, graceful termination (SIGTERM and
//!   `terminationGracePeriodSeconds`): Tekton stops sidecars when the steps end; here they are
//!   killed.
//! - DNS: there is no cluster DNS in the pod; Secrets carry addresses. A name such as
//!   `vault.vault.svc` does not resolve here (the shipped example's `VAULT_ADDR` is replaced by
//!   the test bed).
//! - Network policies and the pod's route to the world: a pod here reaches only the test-bed
//!   bridge.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pod::{self, Container, Mount, Pod, RootEntry, Running, User};
use crate::venv;

/// Where Tekton mounts the results directory.
const RESULTS_PATH: &str = "/tekton/results";
/// Where a kubelet mounts the service-account volume (here: the kube stand-in's kubeconfig).
const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The pod's security context (Tekton's `podTemplate.securityContext`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodSecurity {
    /// `runAsUser`.
    pub run_as_user: Option<u32>,
    /// `runAsGroup`.
    pub run_as_group: Option<u32>,
    /// `fsGroup`.
    pub fs_group: Option<u32>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `supplementalGroups`.
    pub supplemental_groups: Vec<u32>,
}

fn id_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

impl PodSecurity {
    /// Reads a pod `securityContext` object (missing fields stay unset).
    #[must_use]
    pub fn from_yaml(v: &Value) -> Self {
        Self {
            run_as_user: id_of(&v["runAsUser"]),
            run_as_group: id_of(&v["runAsGroup"]),
            fs_group: id_of(&v["fsGroup"]),
            run_as_non_root: v["runAsNonRoot"].as_bool(),
            supplemental_groups: v["supplementalGroups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(id_of)
                .collect(),
        }
    }
}

/// Everything a run needs besides the Task file.
#[derive(Debug, Default, Clone)]
pub struct RunSpec {
    /// The Task YAML (`tekton/task.yaml`).
    pub task_file: PathBuf,
    /// String param values given by the TaskRun; others take their defaults.
    pub params: BTreeMap<String, String>,
    /// Array param values given by the TaskRun.
    pub array_params: BTreeMap<String, Vec<String>>,
    /// Bound workspaces, by name, as host directories; an optional workspace left out is unbound.
    pub workspaces: BTreeMap<String, PathBuf>,
    /// Workspaces the TaskRun binds read-only (`persistentVolumeClaim.readOnly`).
    pub read_only_workspaces: BTreeSet<String>,
    /// Secret and ConfigMap YAML files that volumes, `envFrom` and `valueFrom` may refer to.
    pub objects: Vec<PathBuf>,
    /// The directory holding the step binaries, named as the images' last path segment
    /// (`VAULT_BACKUP_STEP_BIN_DIR`, when set, is searched first).
    pub bin_dir: PathBuf,
    /// Variables each binary reads, by binary name (from its config struct and results).
    pub known_env: BTreeMap<String, BTreeSet<String>>,
    /// The TaskRun's name and namespace (`$(context.taskRun.*)`).
    pub task_run_name: String,
    /// See [`RunSpec::task_run_name`].
    pub namespace: String,
    /// The pod's security context (the TaskRun's `podTemplate.securityContext`).
    pub pod_security: PodSecurity,
    /// A kubeconfig for the Kubernetes API stand-in: the stand-in for the pod's service-account
    /// volume (mounted read-only, named by `KUBECONFIG` in every container).
    pub kubeconfig: Option<PathBuf>,
    /// Where results are written (mounted at Tekton's `/tekton/results`).
    pub results_dir: PathBuf,
    /// Print each step's log lines, prefixed with the step name, as they come.
    pub echo: bool,
    /// The Task the TaskRun refers to (`spec.taskRef.name`); checked against the Task's name.
    pub task_ref: Option<String>,
    /// Where the Task's `volumes` and the pod's files are made; empty: `volumes` beside
    /// `results_dir`.
    pub volumes_dir: PathBuf,
    /// How long the sidecars may take to become Ready; `None`: 60 s.
    pub sidecar_ready_timeout: Option<Duration>,
}

/// What a TaskRun file gives a run: the Task it refers to, its params, its workspaces and its
/// pod template.
#[derive(Debug, Clone, Default)]
pub struct TaskRunFile {
    /// `spec.taskRef.name`.
    pub task_ref: String,
    /// `spec.params` with string values, by name.
    pub params: BTreeMap<String, String>,
    /// `spec.params` with array values, by name.
    pub array_params: BTreeMap<String, Vec<String>>,
    /// The names in `spec.workspaces`.
    pub workspaces: Vec<String>,
    /// Workspaces bound with `persistentVolumeClaim.readOnly: true`.
    pub read_only_workspaces: BTreeSet<String>,
    /// `spec.podTemplate.securityContext`.
    pub pod_security: PodSecurity,
}

/// Reads a TaskRun file (`tekton/taskrun.yaml`), so a run uses the params, workspaces and pod
/// template a real TaskRun would.
///
/// # Errors
/// [`RunError::Task`] if the file is unreadable or not a `tekton.dev/v1` TaskRun.
pub fn read_taskrun(path: &Path) -> Result<TaskRunFile, RunError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunError::Task(format!("{}: {e}", path.display())))?;
    let run: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| RunError::Task(format!("{}: {e}", path.display())))?;
    if run["kind"] != "TaskRun" || run["apiVersion"] != "tekton.dev/v1" {
        return Err(RunError::Task(format!(
            "{}: not a tekton.dev/v1 TaskRun",
            path.display()
        )));
    }
    let spec = &run["spec"];
    let mut out = TaskRunFile {
        task_ref: spec["taskRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        pod_security: PodSecurity::from_yaml(&spec["podTemplate"]["securityContext"]),
        ..TaskRunFile::default()
    };
    for p in spec["params"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        match &p["value"] {
            Value::Array(items) => {
                out.array_params.insert(
                    name,
                    items
                        .iter()
                        .map(|i| i.as_str().unwrap_or_default().to_owned())
                        .collect(),
                );
            }
            v => {
                out.params
                    .insert(name, v.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    for w in spec["workspaces"].as_array().into_iter().flatten() {
        let name = w["name"].as_str().unwrap_or_default().to_owned();
        if w["persistentVolumeClaim"]["readOnly"] == Value::Bool(true) {
            out.read_only_workspaces.insert(name.clone());
        }
        out.workspaces.push(name);
    }
    Ok(out)
}

/// One step's outcome.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The step name.
    pub name: String,
    /// Its exit code.
    pub code: i32,
    /// What it wrote to stderr.
    pub stderr: String,
    /// The step has `onError: continue`: a failure is recorded and the run goes on.
    pub continues_on_error: bool,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The steps that ran, in order.
    pub steps: Vec<StepOutcome>,
    /// The Task's results, read from their files.
    pub results: BTreeMap<String, String>,
    /// Each sidecar's log (stdout and stderr), by sidecar name, read when the steps ended.
    pub sidecar_logs: BTreeMap<String, String>,
}

impl Outcome {
    /// Whether the TaskRun would succeed: every step exited 0, or failed with
    /// `onError: continue`.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.steps
            .iter()
            .all(|s| s.code == 0 || s.continues_on_error)
    }

    /// A step's outcome by name.
    #[must_use]
    pub fn step(&self, name: &str) -> Option<&StepOutcome> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Why the Task could not be run as written: the manifest and the binaries disagree, or the pod
/// would not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The YAML is unreadable, not a Task, or asks for something a kubelet would refuse.
    #[error("{0}")]
    Task(String),
    /// A `$(...)` reference that cannot be resolved.
    #[error("step {step}: cannot resolve $({var})")]
    Unresolved {
        /// The step.
        step: String,
        /// The variable.
        var: String,
    },
    /// An env name the step's binary does not read.
    #[error("step {step}: env {name} is not read by {binary} (it reads: {known})")]
    UnknownEnv {
        /// The step.
        step: String,
        /// The variable.
        name: String,
        /// The binary.
        binary: String,
        /// What it reads.
        known: String,
    },
    /// The binary exited 2: it lacks configuration the YAML should provide.
    #[error("step {step}: {binary} rejected its configuration (exit 2): {stderr}")]
    Config {
        /// The step.
        step: String,
        /// The binary.
        binary: String,
        /// Its error.
        stderr: String,
    },
    /// A result the Task declares was not written by any step.
    #[error("result {0} is declared by the Task but no step wrote it")]
    MissingResult(String),
    /// A sidecar's readiness probe never succeeded: Tekton would start no step.
    #[error(
        "sidecar {sidecar} never became Ready within {waited:?}: its readinessProbe {probe} never \
         succeeded (a kubelet probes from outside the pod, at the pod IP), so no step started\n{log}"
    )]
    SidecarNotReady {
        /// The sidecar.
        sidecar: String,
        /// Its probe, with the address probed.
        probe: String,
        /// How long the runner waited.
        waited: Duration,
        /// The end of the sidecar's log.
        log: String,
    },
}

type Objects = BTreeMap<(String, String), BTreeMap<String, String>>;

fn load_objects(files: &[PathBuf]) -> Result<Objects, RunError> {
    let mut out = Objects::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| RunError::Task(format!("{}: {e}", file.display())))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| RunError::Task(format!("{}: {e}", file.display())))?;
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut data = BTreeMap::new();
            if let Some(m) = v["data"].as_object() {
                for (k, val) in m {
                    let s = val.as_str().unwrap_or_default();
                    let decoded = if kind == "Secret" {
                        decode_base64(s).unwrap_or_default()
                    } else {
                        s.to_owned()
                    };
                    data.insert(k.clone(), decoded);
                }
            }
            if let Some(m) = v["stringData"].as_object() {
                for (k, val) in m {
                    data.insert(k.clone(), val.as_str().unwrap_or_default().to_owned());
                }
            }
            out.insert((kind, name), data);
        }
    }
    Ok(out)
}

fn decode_base64(s: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// A param's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Param {
    Str(String),
    Array(Vec<String>),
}

/// A bound workspace: its host directory, where it is mounted, and whether read-only.
#[derive(Debug, Clone)]
struct Bound {
    host: PathBuf,
    path: String,
    read_only: bool,
}

struct Context<'a> {
    spec: &'a RunSpec,
    task_name: String,
    params: BTreeMap<String, Param>,
    workspaces: BTreeMap<String, Option<Bound>>,
    results: BTreeSet<String>,
}

impl Context<'_> {
    fn resolve(&self, step: &str, text: &str) -> Result<String, RunError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("$(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find(')').ok_or_else(|| RunError::Unresolved {
                step: step.into(),
                var: after.into(),
            })?;
            let var = &after[..end];
            out.push_str(&self.lookup(step, var)?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A `command` or `args` list: an element that is exactly `$(params.x[*])` becomes the
    /// array's elements, as in Tekton; every other element is resolved as a string.
    fn resolve_list(&self, step: &str, list: &Value) -> Result<Vec<String>, RunError> {
        let mut out = Vec::new();
        for item in list.as_array().into_iter().flatten() {
            let text = item.as_str().unwrap_or_default();
            let whole = text
                .strip_prefix("$(params.")
                .and_then(|t| t.strip_suffix("[*])"));
            match whole.map(|name| (name, self.params.get(name))) {
                Some((_, Some(Param::Array(items)))) => out.extend(items.iter().cloned()),
                Some((name, _)) => {
                    return Err(RunError::Unresolved {
                        step: step.into(),
                        var: format!("params.{name}[*]"),
                    });
                }
                None => out.push(self.resolve(step, text)?),
            }
        }
        Ok(out)
    }

    fn lookup(&self, step: &str, var: &str) -> Result<String, RunError> {
        let unresolved = || RunError::Unresolved {
            step: step.into(),
            var: var.into(),
        };
        let parts: Vec<&str> = var.split('.').collect();
        match parts.as_slice() {
            ["params", name] => {
                if let Some((array, index)) = name.strip_suffix(']').and_then(|n| n.split_once('['))
                {
                    let i: usize = index.parse().map_err(|_| unresolved())?;
                    return match self.params.get(array) {
                        Some(Param::Array(items)) => items.get(i).cloned().ok_or_else(unresolved),
                        _ => Err(unresolved()),
                    };
                }
                match self.params.get(*name) {
                    Some(Param::Str(s)) => Ok(s.clone()),
                    // An array where a string is expected: Tekton rejects the Task.
                    _ => Err(unresolved()),
                }
            }
            ["workspaces", name, "path"] => match self.workspaces.get(*name) {
                Some(Some(b)) => Ok(b.path.clone()),
                Some(None) => Ok(String::new()),
                None => Err(unresolved()),
            },
            ["workspaces", name, "bound"] => self
                .workspaces
                .get(*name)
                .map(|w| w.is_some().to_string())
                .ok_or_else(unresolved),
            ["results", name, "path"] if self.results.contains(*name) => {
                Ok(format!("{RESULTS_PATH}/{name}"))
            }
            ["context", "taskRun", "name"] => Ok(self.spec.task_run_name.clone()),
            ["context", "taskRun", "namespace"] => Ok(self.spec.namespace.clone()),
            ["context", "task", "name"] => Ok(self.task_name.clone()),
            _ => Err(unresolved()),
        }
    }
}

/// A step merged with the `stepTemplate`: `env` by name, `securityContext` and
/// `computeResources` field by field, anything else the step's own.
fn merged_step(template: &Value, step: &Value) -> Value {
    let mut merged = template.clone();
    if !merged.is_object() {
        merged = Value::Object(serde_json::Map::new());
    }
    for (k, v) in step.as_object().into_iter().flatten() {
        if k == "env" {
            let mut env: Vec<Value> = merged["env"].as_array().cloned().unwrap_or_default();
            for item in v.as_array().into_iter().flatten() {
                env.retain(|e| e["name"] != item["name"]);
                env.push(item.clone());
            }
            merged["env"] = Value::Array(env);
        } else if (k == "securityContext" || k == "computeResources")
            && merged[k].is_object()
            && v.is_object()
        {
            for (field, value) in v.as_object().into_iter().flatten() {
                merged[k][field] = value.clone();
            }
        } else {
            merged[k] = v.clone();
        }
    }
    merged
}

/// What an image contributes to a container: its files, entrypoint and cmd, env and user.
#[derive(Debug, Clone)]
struct Image {
    root: Vec<RootEntry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    uid: u32,
    gid: u32,
}

/// `ENV` and `USER` of `images/Containerfile`, and the `/etc/passwd` and `/etc/group` lines of
/// the Makefile's `images` target: what every step image holds besides its binary.
#[derive(Debug, Clone)]
struct StepImage {
    env: Vec<(String, String)>,
    uid: u32,
    gid: u32,
    passwd: String,
    group: String,
}

fn step_image() -> Result<&'static StepImage, RunError> {
    static IMAGE: OnceLock<Result<StepImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let root = venv::workspace_root();
            let containerfile = std::fs::read_to_string(root.join("images/Containerfile"))
                .map_err(|e| format!("images/Containerfile: {e}"))?;
            let makefile = std::fs::read_to_string(root.join("Makefile"))
                .map_err(|e| format!("Makefile: {e}"))?;
            parse_step_image(&containerfile, &makefile)
        })
        .as_ref()
        .map_err(|e| RunError::Task(e.clone()))
}

fn parse_step_image(containerfile: &str, makefile: &str) -> Result<StepImage, String> {
    let joined = containerfile.replace("\\\n", " ");
    let mut env = Vec::new();
    let mut user = None;
    for line in joined.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("images/Containerfile: ENV {pair} is not K=V"))?;
                env.push((k.to_owned(), v.to_owned()));
            }
        } else if let Some(rest) = line.strip_prefix("USER ") {
            let (u, g) = rest.trim().split_once(':').unwrap_or((rest.trim(), "0"));
            user = Some((
                u.parse()
                    .map_err(|_| format!("images/Containerfile: USER {rest} is not numeric"))?,
                g.parse()
                    .map_err(|_| format!("images/Containerfile: USER {rest} is not numeric"))?,
            ));
        }
    }
    let (uid, gid) = user.ok_or("images/Containerfile has no USER")?;
    let printed = |file: &str| -> Result<String, String> {
        let line = makefile
            .lines()
            .find(|l| l.contains("printf '") && l.contains(file))
            .ok_or_else(|| format!("the Makefile's images target writes no {file}"))?;
        let start = line.find("printf '").unwrap_or_default() + "printf '".len();
        let end = line
            .rfind("' >")
            .ok_or_else(|| format!("Makefile: {line}"))?;
        Ok(line[start..end].replace("\\n", "\n"))
    };
    Ok(StepImage {
        env,
        uid,
        gid,
        passwd: printed("rootfs/etc/passwd")?,
        group: printed("rootfs/etc/group")?,
    })
}

/// The root of a step's image: the binary at `/usr/local/bin/<binary>`, the Makefile's
/// `/etc/passwd` and `/etc/group`, the CA bundle; the host's libraries if the binary needs them.
fn step_image_for(binary: &str, host: &Path) -> Result<Image, RunError> {
    let base = step_image()?;
    let mut root = vec![
        RootEntry::Bind {
            path: format!("/usr/local/bin/{binary}"),
            host: host.to_owned(),
        },
        RootEntry::File {
            path: "/etc/passwd".into(),
            text: base.passwd.clone(),
        },
        RootEntry::File {
            path: "/etc/group".into(),
            text: base.group.clone(),
        },
        RootEntry::Bind {
            path: "/etc/ssl/certs/ca-certificates.crt".into(),
            host: "/etc/ssl/certs/ca-certificates.crt".into(),
        },
    ];
    if pod::has_interpreter(host).map_err(|e| RunError::Task(format!("{}: {e}", host.display())))? {
        root.extend(pod::host_libraries());
    }
    Ok(Image {
        root,
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        env: base.env.clone(),
        uid: base.uid,
        gid: base.gid,
    })
}

/// The sidecar images the runner can stand in for, by the image's last path segment.
fn sidecar_image(what: &str, repo: &str) -> Result<Image, RunError> {
    let path_env = (
        "PATH".to_owned(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    );
    let bao = venv::bao();
    let mut root = vec![
        RootEntry::Bind {
            path: "/usr/bin/bao".into(),
            host: bao.clone(),
        },
        // The base image's empty /tmp; with a read-only root it is read-only too.
        RootEntry::Dir {
            path: "/tmp".into(),
            mode: 0o1777,
        },
    ];
    // OpenBao's releases are static; a local build might not be.
    if pod::has_interpreter(&bao).map_err(|e| RunError::Task(format!("{}: {e}", bao.display())))? {
        root.extend(pod::host_libraries());
    }
    match repo.rsplit('/').next().unwrap_or_default() {
        // openbao's Dockerfile, target distroless: FROM gcr.io/distroless/static:nonroot,
        // ENTRYPOINT ["/usr/bin/bao"], CMD ["server", "-dev", "-dev-no-store-token"].
        "openbao-distroless" => Ok(Image {
            root,
            entrypoint: vec!["/usr/bin/bao".into()],
            cmd: vec!["server".into(), "-dev".into(), "-dev-no-store-token".into()],
            env: vec![
                path_env,
                (
                    "SSL_CERT_FILE".into(),
                    "/etc/ssl/certs/ca-certificates.crt".into(),
                ),
            ],
            uid: 65532,
            gid: 65532,
        }),
        // The Alpine image: its entrypoint is a shell script (not modelled), its user openbao.
        "openbao" => Ok(Image {
            root,
            entrypoint: vec!["docker-entrypoint.sh".into()],
            cmd: vec!["server".into(), "-dev".into(), "-dev-no-store-token".into()],
            env: vec![path_env],
            uid: 100,
            gid: 1000,
        }),
        _ => Err(RunError::Task(format!(
            "{what}: image {repo} is not one the runner can stand in for (openbao-distroless, openbao)"
        ))),
    }
}

fn pinned<'a>(what: &str, image: &'a str) -> Result<(&'a str, &'a str), RunError> {
    let (repo, tag) = image
        .rsplit_once(':')
        .filter(|(r, _)| !r.is_empty() && !r.ends_with('/'))
        .ok_or_else(|| {
            RunError::Task(format!(
                "{what}: image {image:?} has no tag; images must be pinned"
            ))
        })?;
    if tag == "latest" {
        return Err(RunError::Task(format!(
            "{what}: image {image} uses the latest tag"
        )));
    }
    Ok((repo, tag))
}

/// Task volumes by name: host directory, and whether the kubelet mounts it read-only.
type Volumes = BTreeMap<String, (PathBuf, bool)>;

fn volumes_root(spec: &RunSpec) -> PathBuf {
    if spec.volumes_dir.as_os_str().is_empty() {
        spec.results_dir.with_file_name("volumes")
    } else {
        spec.volumes_dir.clone()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |e| RunError::Task(format!("{}: {e}", path.display()))
}

/// A volume's ownership as kubelet's `SetVolumeOwnership` leaves it with `fsGroup`: every
/// file's group `fs_group`, mode OR `rw` for the group (`r` when read-only), directories also
/// setgid and searchable by the group; symlinks only chowned.
fn set_volume_ownership(dir: &Path, fs_group: u32, read_only: bool) -> Result<(), RunError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    std::os::unix::fs::lchown(dir, None, Some(fs_group)).map_err(io_err(dir))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { 0o440 } else { 0o660 };
    if meta.is_dir() {
        mask |= 0o2000 | 0o110;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            set_volume_ownership(&entry.map_err(io_err(dir))?.path(), fs_group, read_only)?;
        }
    }
    let mode = (meta.permissions().mode() & 0o7777) | mask;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io_err(dir))
}

/// A fresh emptyDir: mode 0777 (the kubelet's), then `fsGroup` ownership.
fn empty_dir(dir: &Path, fs_group: Option<u32>) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io_err(dir))?;
    if let Some(g) = fs_group {
        set_volume_ownership(dir, g, false)?;
    }
    Ok(())
}

fn file_mode(what: &str, v: &Value, default: u32) -> Result<u32, RunError> {
    match v {
        Value::Null => Ok(default),
        v => id_of(v)
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| RunError::Task(format!("{what}: mode {v} is not 0..=0777"))),
    }
}

fn materialise_volumes(
    ctx: &Context<'_>,
    objects: &Objects,
    volumes: &Value,
) -> Result<Volumes, RunError> {
    let root = volumes_root(ctx.spec);
    let fs_group = ctx.spec.pod_security.fs_group;
    let mut out = Volumes::new();
    for v in volumes.as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let what = format!("volume {name}");
        let dir = root.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        let source = if let Some(cm) = v.get("configMap") {
            Some(("ConfigMap", cm, "name"))
        } else {
            v.get("secret").map(|sec| ("Secret", sec, "secretName"))
        };
        if let Some((kind, cm, name_key)) = source {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let obj_name = ctx.resolve(&what, cm[name_key].as_str().unwrap_or_default())?;
            let default_mode = file_mode(&what, &cm["defaultMode"], 0o644)?;
            match objects.get(&(kind.to_owned(), obj_name.clone())) {
                Some(data) => {
                    let items: Vec<(String, String, u32)> = match cm["items"].as_array() {
                        Some(items) => items
                            .iter()
                            .map(|i| {
                                Ok((
                                    i["key"].as_str().unwrap_or_default().to_owned(),
                                    i["path"].as_str().unwrap_or_default().to_owned(),
                                    file_mode(&what, &i["mode"], default_mode)?,
                                ))
                            })
                            .collect::<Result<_, RunError>>()?,
                        None => data
                            .keys()
                            .map(|k| (k.clone(), k.clone(), default_mode))
                            .collect(),
                    };
                    for (key, path, mode) in items {
                        let value = data.get(&key).ok_or_else(|| {
                            RunError::Task(format!("{what}: {kind} {obj_name} has no key {key}"))
                        })?;
                        let file = dir.join(&path);
                        if let Some(parent) = file.parent() {
                            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                        }
                        std::fs::write(&file, value).map_err(io_err(&file))?;
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                            .map_err(io_err(&file))?;
                    }
                }
                None if cm["optional"] == Value::Bool(true) => {}
                None => {
                    return Err(RunError::Task(format!(
                        "{what}: {kind} {obj_name} does not exist and is not optional"
                    )));
                }
            }
            if let Some(g) = fs_group {
                set_volume_ownership(&dir, g, true)?;
            }
            out.insert(name, (dir, true));
        } else if v.get("emptyDir").is_some() {
            empty_dir(&dir, fs_group)?;
            out.insert(name, (dir, false));
        } else {
            return Err(RunError::Task(format!(
                "{what}: only configMap, secret and emptyDir volumes are modelled"
            )));
        }
    }
    Ok(out)
}

/// A container's mounts: its `volumeMounts` (with `subPath`), the workspaces, and for steps
/// the results directory; the service-account stand-in in every container.
fn container_mounts(
    ctx: &Context<'_>,
    volumes: &Volumes,
    pod_files: &PodFiles,
    what: &str,
    container: &Value,
    step: bool,
) -> Result<Vec<Mount>, RunError> {
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = m["name"].as_str().unwrap_or_default();
        let (dir, forced_ro) = volumes.get(volume).ok_or_else(|| {
            RunError::Task(format!("{what}: volumeMount of undeclared volume {volume}"))
        })?;
        let path = ctx.resolve(what, m["mountPath"].as_str().unwrap_or_default())?;
        if !path.starts_with('/') {
            return Err(RunError::Task(format!(
                "{what}: mountPath {path:?} is not absolute"
            )));
        }
        let host = match m["subPath"].as_str() {
            Some(sub) if !sub.is_empty() => {
                let sub = ctx.resolve(what, sub)?;
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Err(RunError::Task(format!(
                        "{what}: subPath {sub:?} must be relative, without .."
                    )));
                }
                let host = dir.join(sub);
                std::fs::create_dir_all(&host).map_err(io_err(&host))?;
                host
            }
            _ => dir.clone(),
        };
        mounts.push(Mount {
            path: path.trim_end_matches('/').to_owned(),
            host,
            read_only: *forced_ro || m["readOnly"] == Value::Bool(true),
        });
    }
    for bound in ctx.workspaces.values().flatten() {
        mounts.push(Mount {
            path: bound.path.clone(),
            host: bound.host.clone(),
            read_only: bound.read_only,
        });
    }
    if step {
        mounts.push(Mount {
            path: RESULTS_PATH.into(),
            host: ctx.spec.results_dir.clone(),
            read_only: false,
        });
    }
    if let Some(sa) = &pod_files.service_account {
        mounts.push(Mount {
            path: SERVICE_ACCOUNT_PATH.into(),
            host: sa.clone(),
            read_only: true,
        });
    }
    Ok(mounts)
}

/// The pod-level files and values every container gets from the kubelet.
struct PodFiles {
    /// The service-account stand-in directory (holding `kubeconfig`).
    service_account: Option<PathBuf>,
    /// `HOSTNAME`, `KUBERNETES_*`, `KUBECONFIG`.
    env: Vec<(String, String)>,
}

fn pod_files(spec: &RunSpec, pod_name: &str, dir: &Path) -> Result<PodFiles, RunError> {
    let mut env = vec![("HOSTNAME".to_owned(), pod_name.to_owned())];
    let Some(kubeconfig) = &spec.kubeconfig else {
        return Ok(PodFiles {
            service_account: None,
            env,
        });
    };
    let text = std::fs::read_to_string(kubeconfig).map_err(io_err(kubeconfig))?;
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(str::trim)
        .unwrap_or_default();
    let host_port = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .trim_end_matches('/');
    if let Some((host, port)) = host_port.rsplit_once(':') {
        let pod_net = crate::podnet::network().host().to_string();
        if host != pod_net {
            return Err(RunError::Task(format!(
                "the kubeconfig's server {server} is not on the pod network ({pod_net}): start \
                 the test bed's servers after podnet::network(), so they listen where a pod can reach them"
            )));
        }
        env.extend([
            ("KUBERNETES_SERVICE_HOST".to_owned(), host.to_owned()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_owned()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_owned()),
            ("KUBERNETES_PORT".to_owned(), format!("tcp://{host}:{port}")),
            (
                format!("KUBERNETES_PORT_{port}_TCP"),
                format!("tcp://{host}:{port}"),
            ),
            (
                format!("KUBERNETES_PORT_{port}_TCP_PROTO"),
                "tcp".to_owned(),
            ),
            (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_owned()),
            (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.to_owned()),
        ]);
    }
    let sa = dir.join("kube-api-access");
    std::fs::create_dir_all(&sa).map_err(io_err(&sa))?;
    let target = sa.join("kubeconfig");
    std::fs::write(&target, text).map_err(io_err(&target))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))
        .map_err(io_err(&target))?;
    if let Some(g) = spec.pod_security.fs_group {
        set_volume_ownership(&sa, g, true)?;
    }
    env.push((
        "KUBECONFIG".to_owned(),
        format!("{SERVICE_ACCOUNT_PATH}/kubeconfig"),
    ));
    Ok(PodFiles {
        service_account: Some(sa),
        env,
    })
}

/// The uid, gid and groups of a container; refuses uid 0 under `runAsNonRoot`, as the kubelet
/// does.
fn container_user(
    ctx: &Context<'_>,
    what: &str,
    sc: &Value,
    image: &Image,
) -> Result<User, RunError> {
    let pod = &ctx.spec.pod_security;
    let uid = id_of(&sc["runAsUser"])
        .or(pod.run_as_user)
        .unwrap_or(image.uid);
    let gid = id_of(&sc["runAsGroup"])
        .or(pod.run_as_group)
        .unwrap_or(image.gid);
    let non_root = sc["runAsNonRoot"]
        .as_bool()
        .or(pod.run_as_non_root)
        .unwrap_or(false);
    if non_root && uid == 0 {
        return Err(RunError::Task(format!(
            "{what}: runAsNonRoot is true but the container would run as uid 0; the kubelet \
             refuses to start it (CreateContainerConfigError)"
        )));
    }
    let mut groups = vec![gid];
    groups.extend(pod.fs_group);
    groups.extend(pod.supplemental_groups.iter().copied());
    groups.dedup();
    let mut seen = BTreeSet::new();
    groups.retain(|g| seen.insert(*g));
    Ok(User { uid, gid, groups })
}

/// `envFrom` and `env` of a container over `base`; with `known`, every `env` name must be in it.
fn container_env(
    ctx: &Context<'_>,
    objects: &Objects,
    what: &str,
    known: Option<(&str, &BTreeSet<String>)>,
    c: &Value,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, RunError> {
    let label = what.strip_prefix("step ").unwrap_or(what);
    let mut env: BTreeMap<String, String> = base.into_iter().collect();
    for source in c["envFrom"].as_array().into_iter().flatten() {
        let (kind, r) = if source.get("secretRef").is_some() {
            ("Secret", &source["secretRef"])
        } else {
            ("ConfigMap", &source["configMapRef"])
        };
        let obj_name = ctx.resolve(label, r["name"].as_str().unwrap_or_default())?;
        let prefix = source["prefix"].as_str().unwrap_or_default();
        match objects.get(&(kind.to_owned(), obj_name.clone())) {
            Some(data) => env.extend(
                data.iter()
                    .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
            ),
            None if r["optional"] == Value::Bool(true) => {}
            None => {
                return Err(RunError::Task(format!(
                    "{what}: envFrom {kind} {obj_name} does not exist"
                )));
            }
        }
    }
    for item in c["env"].as_array().into_iter().flatten() {
        let var = item["name"].as_str().unwrap_or_default().to_owned();
        if let Some((binary, known)) = known.filter(|(_, k)| !k.contains(&var)) {
            return Err(RunError::UnknownEnv {
                step: label.into(),
                name: var,
                binary: binary.into(),
                known: known.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let value = if let Some(v) = item["value"].as_str() {
            ctx.resolve(label, v)?
        } else {
            let from = &item["valueFrom"];
            let (kind, r) = if from.get("secretKeyRef").is_some() {
                ("Secret", &from["secretKeyRef"])
            } else {
                ("ConfigMap", &from["configMapKeyRef"])
            };
            let obj = ctx.resolve(label, r["name"].as_str().unwrap_or_default())?;
            let key = r["key"].as_str().unwrap_or_default();
            match objects
                .get(&(kind.to_owned(), obj.clone()))
                .and_then(|d| d.get(key))
            {
                Some(v) => v.clone(),
                None if r["optional"] == Value::Bool(true) => continue,
                None => {
                    return Err(RunError::Task(format!(
                        "{what}: env {var} refers to missing {kind} {obj} key {key}"
                    )));
                }
            }
        };
        env.insert(var, value);
    }
    Ok(env.into_iter().collect())
}

/// The step binary: `VAULT_BACKUP_STEP_BIN_DIR` first (static builds), then the spec's.
fn find_binary(spec: &RunSpec, binary: &str) -> Option<PathBuf> {
    std::env::var_os("VAULT_BACKUP_STEP_BIN_DIR")
        .map(|d| PathBuf::from(d).join(binary))
        .into_iter()
        .chain(std::iter::once(spec.bin_dir.join(binary)))
        .find(|p| p.exists())
}

/// A step checked and made into a container, with its binary and `onError`.
struct Step {
    name: String,
    binary: String,
    container: Container,
    continues: bool,
}

fn prepare_step(
    ctx: &Context<'_>,
    objects: &Objects,
    volumes: &Volumes,
    pod_files: &PodFiles,
    step: &Value,
) -> Result<Step, RunError> {
    let name = step["name"].as_str().unwrap_or_default().to_owned();
    let what = format!("step {name}");
    if step.get("script").is_some() {
        return Err(RunError::Task(format!(
            "step {name} uses script:; every step must be its binary"
        )));
    }
    let image = ctx.resolve(&name, step["image"].as_str().unwrap_or_default())?;
    let (repo, _) = pinned(&what, &image)?;
    let binary = repo.rsplit('/').next().unwrap_or_default().to_owned();
    let host = find_binary(ctx.spec, &binary).ok_or_else(|| {
        RunError::Task(format!(
            "step {name}: image {image} is not one of the built binaries ({})",
            ctx.spec.bin_dir.join(&binary).display()
        ))
    })?;
    let command = ctx.resolve_list(&name, &step["command"])?;
    if command.len() != 1
        || Path::new(&command[0]).file_name().and_then(|f| f.to_str()) != Some(binary.as_str())
    {
        return Err(RunError::Task(format!(
            "step {name}: command {command:?} is not the image's binary {binary}"
        )));
    }
    if step.get("args").is_some() {
        return Err(RunError::Task(format!(
            "step {name}: args are not read by the binaries; configure with env"
        )));
    }
    let img = step_image_for(&binary, &host)?;
    let known = ctx.spec.known_env.get(&binary).cloned().unwrap_or_default();
    let base: Vec<(String, String)> = img.env.iter().chain(&pod_files.env).cloned().collect();
    let env = container_env(ctx, objects, &what, Some((&binary, &known)), step, base)?;
    let sc = &step["securityContext"];
    let continues = match step["onError"].as_str() {
        None | Some("stopAndFail") => false,
        Some("continue") => true,
        Some(other) => {
            return Err(RunError::Task(format!(
                "step {name}: onError {other:?} is neither continue nor stopAndFail"
            )));
        }
    };
    Ok(Step {
        container: Container {
            name: format!("step-{name}"),
            user: container_user(ctx, &what, sc, &img)?,
            read_only_root: sc["readOnlyRootFilesystem"] == Value::Bool(true),
            mounts: container_mounts(ctx, volumes, pod_files, &what, step, true)?,
            root: img.root,
            argv: command,
            env,
        },
        name,
        binary,
        continues,
    })
}

/// A sidecar made into a container, with its readiness probe.
struct Sidecar {
    name: String,
    container: Container,
    probe: Option<Probe>,
}

fn prepare_sidecar(
    ctx: &Context<'_>,
    objects: &Objects,
    volumes: &Volumes,
    pod_files: &PodFiles,
    sc: &Value,
) -> Result<Sidecar, RunError> {
    let name = sc["name"].as_str().unwrap_or_default().to_owned();
    let what = format!("sidecar {name}");
    let image = ctx.resolve(&what, sc["image"].as_str().unwrap_or_default())?;
    let (repo, _) = pinned(&what, &image)?;
    let img = sidecar_image(&what, repo)?;
    // Kubernetes: command replaces the entrypoint (and drops the image's cmd); args replace
    // the cmd. An empty list counts as not given.
    let command = ctx.resolve_list(&what, &sc["command"])?;
    let args = ctx.resolve_list(&what, &sc["args"])?;
    let cmdline: Vec<String> = match (command.is_empty(), sc.get("args").is_some()) {
        (false, _) => command.into_iter().chain(args).collect(),
        (true, true) => img.entrypoint.iter().cloned().chain(args).collect(),
        (true, false) => img.entrypoint.iter().chain(&img.cmd).cloned().collect(),
    };
    if cmdline.first().is_some_and(|a| a == "docker-entrypoint.sh") {
        return Err(RunError::Task(format!(
            "{what}: image {repo} runs its entrypoint script, which the runner does not model; \
             give command: [bao, ...] or use openbao-distroless"
        )));
    }
    let base: Vec<(String, String)> = img.env.iter().chain(&pod_files.env).cloned().collect();
    let env = container_env(ctx, objects, &what, None, sc, base)?;
    let security = &sc["securityContext"];
    let ports: BTreeMap<String, u16> = sc["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                u16::try_from(p["containerPort"].as_u64()?).ok()?,
            ))
        })
        .collect();
    let probe = match sc.get("readinessProbe") {
        Some(p) => Some(Probe::from_yaml(&what, p, &ports)?),
        None => None,
    };
    Ok(Sidecar {
        container: Container {
            name: format!("sidecar-{name}"),
            user: container_user(ctx, &what, security, &img)?,
            read_only_root: security["readOnlyRootFilesystem"] == Value::Bool(true),
            mounts: container_mounts(ctx, volumes, pod_files, &what, sc, false)?,
            root: img.root,
            argv: cmdline,
            env,
        },
        name,
        probe,
    })
}

/// A readiness probe's action.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Http {
        host: Option<String>,
        port: u16,
        path: String,
    },
    Exec(Vec<String>),
}

/// A readiness probe and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    action: Action,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
}

fn seconds(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

impl Probe {
    fn from_yaml(what: &str, p: &Value, ports: &BTreeMap<String, u16>) -> Result<Self, RunError> {
        let port = |v: &Value| -> Result<u16, RunError> {
            match v {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(s) => ports.get(s).copied(),
                _ => None,
            }
            .ok_or_else(|| RunError::Task(format!("{what}: readinessProbe port {v} is unknown")))
        };
        let host = |v: &Value| v.as_str().map(str::to_owned);
        let action = if let Some(t) = p.get("tcpSocket") {
            Action::Tcp {
                host: host(&t["host"]),
                port: port(&t["port"])?,
            }
        } else if let Some(h) = p.get("httpGet") {
            if h["scheme"].as_str().is_some_and(|s| s != "HTTP") {
                return Err(RunError::Task(format!(
                    "{what}: only HTTP httpGet probes are modelled"
                )));
            }
            Action::Http {
                host: host(&h["host"]),
                port: port(&h["port"])?,
                path: h["path"].as_str().unwrap_or("/").to_owned(),
            }
        } else if let Some(e) = p.get("exec") {
            Action::Exec(
                e["command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect(),
            )
        } else {
            return Err(RunError::Task(format!(
                "{what}: readinessProbe has no tcpSocket, httpGet or exec"
            )));
        };
        Ok(Self {
            action,
            initial_delay: seconds(&p["initialDelaySeconds"], 0),
            period: seconds(&p["periodSeconds"], 10),
            timeout: seconds(&p["timeoutSeconds"], 1),
        })
    }

    /// The probe as a person would name it, with the address it goes to.
    fn describe(&self, pod_ip: std::net::Ipv4Addr) -> String {
        match &self.action {
            Action::Tcp { host, port } => format!(
                "tcpSocket {}:{port}",
                host.clone().unwrap_or_else(|| pod_ip.to_string())
            ),
            Action::Http { host, port, path } => format!(
                "httpGet http://{}:{port}{path}",
                host.clone().unwrap_or_else(|| pod_ip.to_string())
            ),
            Action::Exec(argv) => format!("exec {argv:?}"),
        }
    }

    /// One attempt, from outside the pod (the kubelet's side).
    fn succeeds(&self, pod_ip: std::net::Ipv4Addr, running: &Running) -> bool {
        use std::io::{Read as _, Write as _};
        let addr = |host: &Option<String>, port: u16| -> Option<std::net::SocketAddr> {
            let ip: std::net::IpAddr = match host {
                Some(h) => h.parse().ok()?,
                None => pod_ip.into(),
            };
            Some((ip, port).into())
        };
        match &self.action {
            Action::Tcp { host, port } => addr(host, *port)
                .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, self.timeout).is_ok()),
            Action::Http { host, port, path } => {
                let Some(a) = addr(host, *port) else {
                    return false;
                };
                let Ok(mut s) = std::net::TcpStream::connect_timeout(&a, self.timeout) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(self.timeout));
                if write!(s, "GET {path} HTTP/1.0\r\nHost: {a}\r\n\r\n").is_err() {
                    return false;
                }
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_err() {
                    return false;
                }
                // "HTTP/1.1 200": a kubelet counts 200..=399 as success.
                std::str::from_utf8(&head[9..12])
                    .ok()
                    .and_then(|c| c.parse::<u16>().ok())
                    .is_some_and(|c| (200..400).contains(&c))
            }
            Action::Exec(argv) => Pod::exec(running, argv, self.timeout),
        }
    }
}

/// Waits until every sidecar is Ready (its probe succeeded) or has terminated, as Tekton's
/// `SidecarsReady` does, for at most `bound`.
fn wait_for_sidecars(
    pod: &Pod,
    sidecars: &mut [(Sidecar, Running)],
    bound: Duration,
) -> Result<(), RunError> {
    let start = Instant::now();
    let mut ready = vec![false; sidecars.len()];
    let mut next = vec![start; sidecars.len()];
    for (i, (s, _)) in sidecars.iter().enumerate() {
        match &s.probe {
            None => ready[i] = true,
            Some(p) => next[i] = start + p.initial_delay,
        }
    }
    while !ready.iter().all(|r| *r) {
        for (i, (s, running)) in sidecars.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if !running.is_running() {
                // Terminated counts as ready in Tekton; the steps then meet what it left.
                ready[i] = true;
                continue;
            }
            let probe = s.probe.as_ref().expect("probed");
            if Instant::now() >= next[i] {
                ready[i] = probe.succeeds(pod.ip(), running);
                next[i] = Instant::now() + probe.period;
            }
        }
        if ready.iter().all(|r| *r) {
            break;
        }
        if start.elapsed() > bound {
            let (s, running) = sidecars
                .iter()
                .zip(&ready)
                .find(|(_, r)| !**r)
                .map(|(s, _)| s)
                .expect("one is not ready");
            return Err(RunError::SidecarNotReady {
                sidecar: s.name.clone(),
                probe: s.probe.as_ref().expect("probed").describe(pod.ip()),
                waited: bound,
                log: running.log_tail(30),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs the Task's steps in order, in one pod with its sidecars.
///
/// # Errors
/// A [`RunError`] when the manifest and the binaries disagree or the pod cannot start (a
/// sidecar never Ready). A step that fails at run time (exit 1) is not an error here: it shows
/// in the [`Outcome`] (with the results written so far), and later steps do not run unless it
/// has `onError: continue`.
///
/// # Panics
/// If the pod's network cannot be made (not root) or a container cannot be started.
pub fn run(spec: &RunSpec) -> Result<Outcome, RunError> {
    let text = std::fs::read_to_string(&spec.task_file)
        .map_err(|e| RunError::Task(format!("{}: {e}", spec.task_file.display())))?;
    let task: Value = serde_yaml_ng::from_str(&text).map_err(|e| RunError::Task(e.to_string()))?;
    if task["kind"] != "Task" || task["apiVersion"] != "tekton.dev/v1" {
        return Err(RunError::Task("not a tekton.dev/v1 Task".into()));
    }
    if let Some(want) = &spec.task_ref {
        let name = task["metadata"]["name"].as_str().unwrap_or_default();
        if name != want {
            return Err(RunError::Task(format!(
                "the TaskRun refers to Task {want}, but the Task is named {name}"
            )));
        }
    }
    let tspec = &task["spec"];
    let params = task_params(spec, tspec)?;
    let root = volumes_root(spec);
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let fs_group = spec.pod_security.fs_group;
    let workspaces = bind_workspaces(spec, tspec)?;
    let results: BTreeSet<String> = tspec["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let ctx = Context {
        spec,
        task_name: task["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        params,
        workspaces,
        results,
    };
    let objects = load_objects(&spec.objects)?;
    // The results directory is an emptyDir in Tekton's pod.
    empty_dir(&spec.results_dir, fs_group)?;
    let volumes = materialise_volumes(&ctx, &objects, &tspec["volumes"])?;
    let pod_name = format!("{}-pod", spec.task_run_name);
    let pod_dir = root.join("pod");
    let files = pod_files(spec, &pod_name, &pod_dir)?;

    // Like Tekton, check every step and sidecar before running any.
    let mut steps = Vec::new();
    for raw in tspec["steps"].as_array().into_iter().flatten() {
        let step = merged_step(&tspec["stepTemplate"], raw);
        steps.push(prepare_step(&ctx, &objects, &volumes, &files, &step)?);
    }
    let mut prepared = Vec::new();
    for sc in tspec["sidecars"].as_array().into_iter().flatten() {
        prepared.push(prepare_sidecar(&ctx, &objects, &volumes, &files, sc)?);
    }

    let pod = Pod::new(&pod_name, &pod_dir);
    let mut sidecars: Vec<(Sidecar, Running)> = prepared
        .into_iter()
        .map(|s| {
            let log = pod_dir.join(format!("{}.log", s.container.name));
            let running = pod.start(&s.container, &log);
            (s, running)
        })
        .collect();
    let bound = spec
        .sidecar_ready_timeout
        .unwrap_or(Duration::from_secs(60));
    let mut outcome = Outcome {
        steps: Vec::new(),
        results: BTreeMap::new(),
        sidecar_logs: BTreeMap::new(),
    };
    let result = wait_for_sidecars(&pod, &mut sidecars, bound)
        .and_then(|()| run_steps(spec, &ctx, &pod, steps, &mut outcome));
    for (s, running) in sidecars {
        outcome
            .sidecar_logs
            .insert(s.name.clone(), running.log_tail(400));
        drop(running);
    }
    drop(pod);
    result.map(|()| outcome)
}

/// The Task's workspaces: each bound one at `/workspace/<name>` (or its `mountPath`), read-only
/// when the Task or the TaskRun says so, owned as `fsGroup` says; an unbound optional one `None`.
fn bind_workspaces(
    spec: &RunSpec,
    tspec: &Value,
) -> Result<BTreeMap<String, Option<Bound>>, RunError> {
    let fs_group = spec.pod_security.fs_group;
    let mut workspaces = BTreeMap::new();
    for w in tspec["workspaces"].as_array().into_iter().flatten() {
        let name = w["name"].as_str().unwrap_or_default().to_owned();
        let bound = spec.workspaces.get(&name).cloned();
        if bound.is_none() && w["optional"] != Value::Bool(true) {
            return Err(RunError::Task(format!(
                "workspace {name} is required but not bound"
            )));
        }
        let bound = match bound {
            Some(host) => {
                let read_only =
                    w["readOnly"] == Value::Bool(true) || spec.read_only_workspaces.contains(&name);
                std::fs::create_dir_all(&host).map_err(io_err(&host))?;
                if let Some(g) = fs_group {
                    set_volume_ownership(&host, g, read_only)?;
                }
                Some(Bound {
                    path: w["mountPath"]
                        .as_str()
                        .map_or_else(|| format!("/workspace/{name}"), str::to_owned),
                    host,
                    read_only,
                })
            }
            None => None,
        };
        workspaces.insert(name, bound);
    }
    Ok(workspaces)
}

/// Every param the Task declares, from the TaskRun or its default; an undeclared one refused.
fn task_params(spec: &RunSpec, tspec: &Value) -> Result<BTreeMap<String, Param>, RunError> {
    let mut params = BTreeMap::new();
    for p in tspec["params"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let array = p["type"] == "array";
        let value = if array {
            spec.array_params
                .get(&name)
                .cloned()
                .or_else(|| {
                    p["default"].as_array().map(|a| {
                        a.iter()
                            .map(|i| i.as_str().unwrap_or_default().to_owned())
                            .collect()
                    })
                })
                .map(Param::Array)
        } else {
            spec.params
                .get(&name)
                .cloned()
                .or_else(|| p["default"].as_str().map(str::to_owned))
                .map(Param::Str)
        };
        let value = value
            .ok_or_else(|| RunError::Task(format!("param {name} has no value and no default")))?;
        params.insert(name, value);
    }
    if let Some(extra) = spec
        .params
        .keys()
        .chain(spec.array_params.keys())
        .find(|k| !params.contains_key(*k))
    {
        return Err(RunError::Task(format!(
            "the TaskRun gives param {extra}, which the Task does not declare"
        )));
    }
    Ok(params)
}

fn run_steps(
    spec: &RunSpec,
    ctx: &Context<'_>,
    pod: &Pod,
    steps: Vec<Step>,
    outcome: &mut Outcome,
) -> Result<(), RunError> {
    for step in steps {
        let (code, stderr) = pod.run(&step.container, &step.name, spec.echo);
        if code == 2 {
            return Err(RunError::Config {
                step: step.name,
                binary: step.binary,
                stderr,
            });
        }
        let failed = code != 0 && !step.continues;
        outcome.steps.push(StepOutcome {
            name: step.name,
            code,
            stderr,
            continues_on_error: step.continues,
        });
        if failed {
            // Like Tekton, a failed TaskRun still shows the results its steps wrote.
            for r in &ctx.results {
                if let Ok(v) = std::fs::read_to_string(spec.results_dir.join(r)) {
                    outcome.results.insert(r.clone(), v);
                }
            }
            return Ok(());
        }
    }
    for r in &ctx.results {
        match std::fs::read_to_string(spec.results_dir.join(r)) {
            Ok(v) => {
                outcome.results.insert(r.clone(), v);
            }
            Err(_) => return Err(RunError::MissingResult(r.clone())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_secret_values_decode() {
        assert_eq!(decode_base64("aHVudGVyMg==").as_deref(), Some("hunter2"));
        assert_eq!(decode_base64("!!"), None);
    }

    #[test]
    fn step_env_merges_by_name_and_own_env_from_replaces() {
        let template = serde_json::json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
                                          "envFrom": [{"secretRef": {"name": "t"}}],
                                          "securityContext": {"runAsUser": 1, "readOnlyRootFilesystem": true}});
        let step = serde_json::json!({"name": "s", "env": [{"name": "B", "value": "2"}],
                                      "envFrom": [{"configMapRef": {"name": "c"}}],
                                      "securityContext": {"runAsUser": 2}});
        let m = merged_step(&template, &step);
        assert_eq!(
            m["env"],
            serde_json::json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            m["envFrom"],
            serde_json::json!([{"configMapRef": {"name": "c"}}])
        );
        assert_eq!(
            m["securityContext"],
            serde_json::json!({"runAsUser": 2, "readOnlyRootFilesystem": true})
        );
    }

    #[test]
    fn the_step_image_is_read_from_the_containerfile_and_the_makefile() {
        let root = venv::workspace_root();
        let image = parse_step_image(
            &std::fs::read_to_string(root.join("images/Containerfile")).unwrap(),
            &std::fs::read_to_string(root.join("Makefile")).unwrap(),
        )
        .unwrap();
        assert_eq!((image.uid, image.gid), (65532, 65532));
        assert!(
            image
                .env
                .contains(&("PATH".to_owned(), "/usr/local/bin".to_owned())),
            "{:?}",
            image.env
        );
        assert!(
            image.passwd.contains("nonroot:x:65532:65532:"),
            "{}",
            image.passwd
        );
        assert!(
            image.group.ends_with("nonroot:x:65532:\n"),
            "{}",
            image.group
        );
    }

    #[test]
    fn array_params_splice_into_command_lists_and_strings_refuse_them() {
        let spec = RunSpec::default();
        let ctx = Context {
            spec: &spec,
            task_name: "t".into(),
            params: BTreeMap::from([
                ("a".to_owned(), Param::Array(vec!["x".into(), "y z".into()])),
                ("e".to_owned(), Param::Array(vec![])),
                ("s".to_owned(), Param::Str("v".into())),
            ]),
            workspaces: BTreeMap::new(),
            results: BTreeSet::new(),
        };
        let list = serde_json::json!(["$(params.a[*])", "-f=$(params.s)", "$(params.e[*])"]);
        assert_eq!(ctx.resolve_list("s", &list).unwrap(), ["x", "y z", "-f=v"]);
        assert_eq!(ctx.resolve("s", "$(params.a[1])").unwrap(), "y z");
        assert!(ctx.resolve("s", "$(params.a)").is_err());
        assert!(
            ctx.resolve_list("s", &serde_json::json!(["$(params.s[*])"]))
                .is_err()
        );
    }

    #[test]
    fn volume_ownership_is_the_kubelets() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("v");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        std::fs::set_permissions(d.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        set_volume_ownership(&d, 4242, false).unwrap();
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!((m.gid(), m.mode() & 0o7777), (4242, 0o2775));
        let f = std::fs::metadata(d.join("f")).unwrap();
        assert_eq!((f.gid(), f.mode() & 0o7777), (4242, 0o660));
    }
}
