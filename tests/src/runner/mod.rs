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
//! - `HOME`, which a container runtime may add from the image's `/etc/passwd`: no step binary
//!   reads it, and OpenBao's server does not need it.
//! - The image's `/etc/passwd` entry is not used to pick supplementary groups; a container's
//!   groups are its gid, `fsGroup` and `supplementalGroups`.
//! - `fsGroupChangePolicy` (always the default, recursive) and volumes whose driver does not
//!   support ownership management (a hostPath PVC keeps its owner on a cluster).
//! - Sidecar restarts, liveness and startup probes, graceful termination (SIGTERM and
//!   `terminationGracePeriodSeconds`): Tekton stops sidecars when the steps end; here they are
//!   killed.
//! - DNS: there is no cluster DNS and no `/etc/hosts` or `/etc/resolv.conf` in the roots (a
//!   kubelet mounts them); Secrets carry addresses. A name such as `vault.vault.svc` does not
//!   resolve here (the shipped example's `VAULT_ADDR` is replaced by the test bed).
//! - `/sys`, `/dev/shm`, `/dev/termination-log` and a tty: not mounted; nothing here uses them
//!   (`/proc` and `/dev/{null,zero,full,random,urandom}` are).
//! - A TaskRun's workspace `subPath` (refused; no shipped TaskRun uses one) and workspace kinds:
//!   every binding is a host directory, whatever the TaskRun says (emptyDir, PVC).
//! - Network policies and the pod's route to the world: a pod here reaches only the test-bed
//!   bridge.

mod container;
mod context;
mod image;
mod probe;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::pod::{Pod, Running};

use container::{Sidecar, Step, prepare_sidecar, prepare_step};
use context::{Bound, Context, Param, load_objects, merged_step};
use probe::wait_for_sidecars;
use volumes::{
    empty_dir, io_err, materialise_volumes, pod_files, set_volume_ownership, volumes_root,
};

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
        if w.get("subPath").is_some() {
            return Err(RunError::Task(format!(
                "{}: workspace {name} has a subPath, which the runner does not model",
                path.display()
            )));
        }
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
