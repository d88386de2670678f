//! A local step runner: runs `tekton/task.yaml` as written, the way Tekton would, with each
//! step's image mapped to the locally built binary.
//!
//! It exists so that the manifests and the binaries cannot drift apart. It resolves params
//! (with their defaults), `$(workspaces.<name>.path|bound)`, `$(results.<name>.path)` and
//! `$(context.taskRun.name|namespace)`, `$(context.task.name)`, merges the `stepTemplate` into
//! each step as Tekton does (`env` by name, a step's own `envFrom` replacing the template's),
//! fills `envFrom` and `valueFrom` from local Secret and ConfigMap YAML files, and runs the steps
//! in order, stopping at the first failure unless the step says `onError: continue`. It fails on
//! any `$(...)` it cannot resolve, any image or command that is not one of our binaries, any
//! `env` name the step's binary does not read, a binary that exits 2 (a configuration the YAML
//! does not provide) and any declared result left unwritten.
//!
//! Task `volumes` of kind `configMap` and `secret` (honouring `optional`) and `emptyDir` are
//! materialised as local directories, and a step's `volumeMounts` are modelled by rewriting
//! every env value that names a path under a `mountPath` to the local directory, so
//! `VAULT_CACERT=/etc/.../ca.crt` reaches the binary as a file that exists.
//!
//! `sidecars` run as local processes for the length of the steps: an `openbao/openbao` image is
//! the test bed's `bao` binary (its `command` must be `bao ...`). A pod has a loopback of its
//! own, which a test machine running many pods does not: each `containerPort` a sidecar declares
//! is mapped to a free local port, and `127.0.0.1:PORT` / `localhost:PORT` are rewritten to it in
//! the steps' env values, the sidecars' args and the ConfigMap files mounted into sidecars
//! (where mount paths are rewritten to the local directories too). A sidecar's `readinessProbe`
//! with a `tcpSocket` port is honoured: the first step waits until that port accepts connections.
//!
//! What it does not model: the rest of the pod (the entrypoint binary, `/tekton/` downward
//! files, the service-account volume), resource limits and security contexts (checked by
//! linters instead), `when` expressions, array and object params, and step results.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::process::{Server, free_port};
use crate::venv;

/// Everything a run needs besides the Task file.
#[derive(Debug, Default, Clone)]
pub struct RunSpec {
    /// The Task YAML (`tekton/task.yaml`).
    pub task_file: PathBuf,
    /// Param values given by the TaskRun; others take their defaults.
    pub params: BTreeMap<String, String>,
    /// Bound workspaces, by name; an optional workspace left out is unbound.
    pub workspaces: BTreeMap<String, PathBuf>,
    /// Secret and ConfigMap YAML files that `envFrom`/`valueFrom` may refer to.
    pub objects: Vec<PathBuf>,
    /// The directory holding the step binaries, named as the images' last path segment.
    pub bin_dir: PathBuf,
    /// Variables each binary reads, by binary name (from its config struct and results).
    pub known_env: BTreeMap<String, BTreeSet<String>>,
    /// The TaskRun's name and namespace (`$(context.taskRun.*)`).
    pub task_run_name: String,
    /// See [`RunSpec::task_run_name`].
    pub namespace: String,
    /// Variables the pod's environment provides beyond the YAML (what Kubernetes would give a
    /// pod, such as a kubeconfig standing in for the service account).
    pub pod_env: Vec<(String, String)>,
    /// Where results are written (Tekton's `/tekton/results`).
    pub results_dir: PathBuf,
    /// Print each step's log lines, prefixed with the step name, as they come.
    pub echo: bool,
    /// The Task the TaskRun refers to (`spec.taskRef.name`); checked against the Task's name.
    pub task_ref: Option<String>,
    /// Where the Task's `volumes` are materialised; empty: `volumes` beside `results_dir`.
    pub volumes_dir: PathBuf,
}

/// What a TaskRun file gives a run: the Task it refers to, its params and its workspaces.
#[derive(Debug, Clone, Default)]
pub struct TaskRunFile {
    /// `spec.taskRef.name`.
    pub task_ref: String,
    /// `spec.params`, by name.
    pub params: BTreeMap<String, String>,
    /// The names in `spec.workspaces`.
    pub workspaces: Vec<String>,
}

/// Reads a TaskRun file (`tekton/taskrun.yaml`), so a run uses the params and workspaces a
/// real TaskRun would.
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
    let names = |list: &Value| -> Vec<(String, Value)> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i["name"].as_str().unwrap_or_default().to_owned(),
                    i["value"].clone(),
                )
            })
            .collect()
    };
    Ok(TaskRunFile {
        task_ref: spec["taskRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        params: names(&spec["params"])
            .into_iter()
            .map(|(n, v)| (n, v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        workspaces: names(&spec["workspaces"])
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
    })
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

/// Why the Task could not be run as written: the manifest and the binaries disagree.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The YAML is unreadable or not a Task.
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

struct Context<'a> {
    spec: &'a RunSpec,
    task_name: String,
    params: BTreeMap<String, String>,
    workspaces: BTreeMap<String, Option<PathBuf>>,
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

    fn lookup(&self, step: &str, var: &str) -> Result<String, RunError> {
        let unresolved = || RunError::Unresolved {
            step: step.into(),
            var: var.into(),
        };
        let parts: Vec<&str> = var.split('.').collect();
        match parts.as_slice() {
            ["params", name] => self.params.get(*name).cloned().ok_or_else(unresolved),
            ["workspaces", name, "path"] => match self.workspaces.get(*name) {
                Some(Some(p)) => Ok(p.display().to_string()),
                Some(None) => Ok(String::new()),
                None => Err(unresolved()),
            },
            ["workspaces", name, "bound"] => self
                .workspaces
                .get(*name)
                .map(|w| w.is_some().to_string())
                .ok_or_else(unresolved),
            ["results", name, "path"] if self.results.contains(*name) => {
                Ok(self.spec.results_dir.join(name).display().to_string())
            }
            ["context", "taskRun", "name"] => Ok(self.spec.task_run_name.clone()),
            ["context", "taskRun", "namespace"] => Ok(self.spec.namespace.clone()),
            ["context", "task", "name"] => Ok(self.task_name.clone()),
            _ => Err(unresolved()),
        }
    }
}

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
        } else {
            merged[k] = v.clone();
        }
    }
    merged
}

/// Runs the Task's steps in order.
///
/// # Errors
/// A [`RunError`] when the manifest and the binaries disagree. A step that fails at run time
/// (exit 1) is not an error here: it shows in the [`Outcome`] (with the results written so far),
/// and later steps do not run unless it has `onError: continue`.
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
    let mut params = BTreeMap::new();
    for p in tspec["params"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let value = spec
            .params
            .get(&name)
            .cloned()
            .or_else(|| p["default"].as_str().map(str::to_owned));
        let value = value
            .ok_or_else(|| RunError::Task(format!("param {name} has no value and no default")))?;
        params.insert(name, value);
    }
    if let Some(extra) = spec.params.keys().find(|k| !params.contains_key(*k)) {
        return Err(RunError::Task(format!(
            "the TaskRun gives param {extra}, which the Task does not declare"
        )));
    }
    let mut workspaces = BTreeMap::new();
    for w in tspec["workspaces"].as_array().into_iter().flatten() {
        let name = w["name"].as_str().unwrap_or_default().to_owned();
        let bound = spec.workspaces.get(&name).cloned();
        if bound.is_none() && w["optional"] != Value::Bool(true) {
            return Err(RunError::Task(format!(
                "workspace {name} is required but not bound"
            )));
        }
        workspaces.insert(name, bound);
    }
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
    std::fs::create_dir_all(&spec.results_dir).map_err(|e| RunError::Task(e.to_string()))?;
    let volumes = materialise_volumes(&ctx, &objects, &tspec["volumes"])?;
    let ports = pod_ports(&tspec["sidecars"]);

    // Like Tekton, check every step before running any.
    let prepared = prepare_steps(&ctx, &objects, &volumes, &ports, tspec)?;
    let sidecars = start_sidecars(&ctx, &volumes, &ports, &tspec["sidecars"])?;
    let mut outcome = Outcome {
        steps: Vec::new(),
        results: BTreeMap::new(),
        sidecar_logs: BTreeMap::new(),
    };
    let outcome_result = run_steps(spec, &ctx, prepared, &mut outcome);
    for (name, server) in sidecars {
        outcome.sidecar_logs.insert(name, server.log_tail(400));
        drop(server);
    }
    outcome_result.map(|()| outcome)
}

type Prepared = Vec<(String, String, PathBuf, Vec<(String, String)>, bool)>;

/// Each step merged with the template, its binary, its env (mounts and ports rewritten) and
/// whether it continues on error.
fn prepare_steps(
    ctx: &Context<'_>,
    objects: &Objects,
    volumes: &Volumes,
    ports: &[(u16, u16)],
    tspec: &Value,
) -> Result<Prepared, RunError> {
    let mut prepared = Vec::new();
    for raw_step in tspec["steps"].as_array().into_iter().flatten() {
        let step = merged_step(&tspec["stepTemplate"], raw_step);
        let name = step["name"].as_str().unwrap_or_default().to_owned();
        if step.get("script").is_some() {
            return Err(RunError::Task(format!(
                "step {name} uses script:; every step must be its binary"
            )));
        }
        let (binary, path) = binary_for(ctx, &name, &step)?;
        let mounts = step_mounts(ctx, volumes, &name, &step)?;
        let env: Vec<(String, String)> = step_env(ctx, objects, &name, &binary, &step)?
            .into_iter()
            .map(|(k, v)| (k, rewrite_ports(ports, &rewrite_mounted(&mounts, &v))))
            .collect();
        let continues = match step["onError"].as_str() {
            None | Some("stopAndFail") => false,
            Some("continue") => true,
            Some(other) => {
                return Err(RunError::Task(format!(
                    "step {name}: onError {other:?} is neither continue nor stopAndFail"
                )));
            }
        };
        prepared.push((name, binary, path, env, continues));
    }
    Ok(prepared)
}

fn run_steps(
    spec: &RunSpec,
    ctx: &Context<'_>,
    prepared: Prepared,
    outcome: &mut Outcome,
) -> Result<(), RunError> {
    for (name, binary, path, env, continues) in prepared {
        let mut result = run_step(spec, &name, &path, &env);
        result.continues_on_error = continues;
        if result.code == 2 {
            return Err(RunError::Config {
                step: name,
                binary,
                stderr: result.stderr,
            });
        }
        let failed = result.code != 0 && !continues;
        outcome.steps.push(result);
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

/// Each `containerPort` the sidecars declare, mapped to a free local port.
fn pod_ports(sidecars: &Value) -> Vec<(u16, u16)> {
    sidecars
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["containerPort"].as_u64())
        .filter_map(|p| u16::try_from(p).ok())
        .map(|p| (p, free_port()))
        .collect()
}

/// `127.0.0.1:PORT` and `localhost:PORT` of the pod, pointed at the mapped local ports.
fn rewrite_ports(ports: &[(u16, u16)], text: &str) -> String {
    let mut out = text.to_owned();
    for (pod, local) in ports {
        for host in ["127.0.0.1", "localhost"] {
            out = replace_port(&out, &format!("{host}:{pod}"), &format!("{host}:{local}"));
        }
    }
    out
}

/// Replaces `from` where it is not followed by another digit (so `:8200` does not match `:82001`).
fn replace_port(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The program run in place of a sidecar image, by the image's last path segment.
fn sidecar_program(repo: &str) -> Option<(&'static str, PathBuf)> {
    match repo.rsplit('/').next()? {
        "openbao" => Some(("bao", venv::bao())),
        _ => None,
    }
}

fn start_sidecars(
    ctx: &Context<'_>,
    volumes: &Volumes,
    ports: &[(u16, u16)],
    sidecars: &Value,
) -> Result<Vec<(String, Server)>, RunError> {
    let mut started = Vec::new();
    for sc in sidecars.as_array().into_iter().flatten() {
        let name = sc["name"].as_str().unwrap_or_default().to_owned();
        let what = format!("sidecar {name}");
        let image = ctx.resolve(&what, sc["image"].as_str().unwrap_or_default())?;
        let (repo, tag) = image
            .rsplit_once(':')
            .filter(|(r, t)| !r.is_empty() && !r.ends_with('/') && *t != "latest")
            .ok_or_else(|| {
                RunError::Task(format!("{what}: image {image:?} is not pinned by tag"))
            })?;
        let (expected, program) = sidecar_program(repo).ok_or_else(|| {
            RunError::Task(format!(
                "{what}: image {image} is not one the runner can stand in for"
            ))
        })?;
        let mut argv: Vec<String> = Vec::new();
        for part in ["command", "args"] {
            for a in sc[part].as_array().into_iter().flatten() {
                argv.push(ctx.resolve(&what, a.as_str().unwrap_or_default())?);
            }
        }
        if argv
            .first()
            .map(|c| Path::new(c).file_name().and_then(|f| f.to_str()))
            != Some(Some(expected))
        {
            return Err(RunError::Task(format!(
                "{what}: command {argv:?} must start with {expected} (image {repo}:{tag})"
            )));
        }
        let mounts = step_mounts(ctx, volumes, &what, sc)?;
        // Files mounted into the sidecar: its own paths and ports, as they are in this pod.
        for m in sc["volumeMounts"].as_array().into_iter().flatten() {
            let volume = m["name"].as_str().unwrap_or_default();
            let dir = &volumes[volume];
            for entry in std::fs::read_dir(dir).map_err(|e| RunError::Task(e.to_string()))? {
                let file = entry.map_err(|e| RunError::Task(e.to_string()))?.path();
                if let Ok(text) = std::fs::read_to_string(&file) {
                    let mut text = rewrite_ports(ports, &text);
                    for (path, local) in &mounts {
                        text =
                            text.replace(&format!("\"{path}"), &format!("\"{}", local.display()));
                    }
                    std::fs::write(&file, text).map_err(|e| RunError::Task(e.to_string()))?;
                }
            }
        }
        let arg = |a: &str| -> String {
            let a = rewrite_ports(ports, a);
            match a.split_once('=') {
                Some((flag, value)) if flag.starts_with('-') => {
                    format!("{flag}={}", rewrite_mounted(&mounts, value))
                }
                _ => rewrite_mounted(&mounts, &a),
            }
        };
        let mut cmd = Command::new(program);
        cmd.env_clear().args(argv[1..].iter().map(|a| arg(a)));
        for item in sc["env"].as_array().into_iter().flatten() {
            let var = item["name"].as_str().unwrap_or_default();
            let value = item["value"].as_str().ok_or_else(|| {
                RunError::Task(format!("{what}: env {var} must be a plain value"))
            })?;
            cmd.env(var, arg(&ctx.resolve(&what, value)?));
        }
        let log = volumes_root(ctx).join(format!("sidecar-{name}.log"));
        started.push((name, Server::spawn(&what, cmd, &log)));
    }
    // Ready when each readinessProbe's tcpSocket port answers; a sidecar without a probe is
    // ready once started, as in Tekton.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let probed: Vec<(u16, u16)> = sidecars
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sc| sc["readinessProbe"]["tcpSocket"]["port"].as_u64())
        .filter_map(|p| ports.iter().find(|(pod, _)| u64::from(*pod) == p).copied())
        .collect();
    for (pod, local) in &probed {
        while std::net::TcpStream::connect(("127.0.0.1", *local)).is_err() {
            if std::time::Instant::now() > deadline {
                let logs: Vec<String> = started
                    .iter()
                    .map(|(n, s)| format!("--- {n} ---\n{}", s.log_tail(40)))
                    .collect();
                return Err(RunError::Task(format!(
                    "sidecar port {pod} (local {local}) never accepted a connection\n{}",
                    logs.join("\n")
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(started)
}

fn volumes_root(ctx: &Context<'_>) -> PathBuf {
    if ctx.spec.volumes_dir.as_os_str().is_empty() {
        ctx.spec.results_dir.with_file_name("volumes")
    } else {
        ctx.spec.volumes_dir.clone()
    }
}

/// Task volumes by name, as local directories.
type Volumes = BTreeMap<String, PathBuf>;

fn materialise_volumes(
    ctx: &Context<'_>,
    objects: &Objects,
    volumes: &Value,
) -> Result<Volumes, RunError> {
    let root = volumes_root(ctx);
    let mut out = Volumes::new();
    for v in volumes.as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunError::Task(format!("{}: {e}", dir.display())))?;
        let source = if let Some(cm) = v.get("configMap") {
            Some(("ConfigMap", cm, "name"))
        } else {
            v.get("secret").map(|sec| ("Secret", sec, "secretName"))
        };
        if let Some((kind, cm, name_key)) = source {
            let cm_name = ctx.resolve(
                &format!("volume {name}"),
                cm[name_key].as_str().unwrap_or_default(),
            )?;
            match objects.get(&(kind.to_owned(), cm_name.clone())) {
                Some(data) => {
                    for (key, value) in data {
                        let file = dir.join(key);
                        std::fs::write(&file, value)
                            .map_err(|e| RunError::Task(format!("{}: {e}", file.display())))?;
                    }
                }
                None if cm["optional"] == Value::Bool(true) => {}
                None => {
                    return Err(RunError::Task(format!(
                        "volume {name}: {kind} {cm_name} does not exist and is not optional"
                    )));
                }
            }
        } else if v.get("emptyDir").is_none() {
            return Err(RunError::Task(format!(
                "volume {name}: only configMap, secret and emptyDir volumes are modelled"
            )));
        }
        out.insert(name, dir);
    }
    Ok(out)
}

/// A step's mounts: (`mountPath`, local directory), longest path first.
fn step_mounts(
    ctx: &Context<'_>,
    volumes: &Volumes,
    name: &str,
    step: &Value,
) -> Result<Vec<(String, PathBuf)>, RunError> {
    let mut mounts = Vec::new();
    for m in step["volumeMounts"].as_array().into_iter().flatten() {
        let volume = m["name"].as_str().unwrap_or_default();
        let dir = volumes.get(volume).ok_or_else(|| {
            RunError::Task(format!(
                "step {name}: volumeMount of undeclared volume {volume}"
            ))
        })?;
        let path = ctx.resolve(name, m["mountPath"].as_str().unwrap_or_default())?;
        if !path.starts_with('/') {
            return Err(RunError::Task(format!(
                "step {name}: mountPath {path:?} is not absolute"
            )));
        }
        mounts.push((path.trim_end_matches('/').to_owned(), dir.clone()));
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    Ok(mounts)
}

/// An env value naming a path under a mount, pointed at the mount's local directory.
fn rewrite_mounted(mounts: &[(String, PathBuf)], value: &str) -> String {
    for (path, dir) in mounts {
        if value == path {
            return dir.display().to_string();
        }
        if let Some(rest) = value
            .strip_prefix(path.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            return dir.join(rest).display().to_string();
        }
    }
    value.to_owned()
}

fn binary_for(ctx: &Context<'_>, name: &str, step: &Value) -> Result<(String, PathBuf), RunError> {
    let image = ctx.resolve(name, step["image"].as_str().unwrap_or_default())?;
    let (repo, tag) = image
        .rsplit_once(':')
        .filter(|(r, _)| !r.is_empty() && !r.ends_with('/'))
        .ok_or_else(|| {
            RunError::Task(format!(
                "step {name}: image {image:?} has no tag; images must be pinned"
            ))
        })?;
    if tag == "latest" {
        return Err(RunError::Task(format!(
            "step {name}: image {image} uses the latest tag"
        )));
    }
    let binary = repo.rsplit('/').next().unwrap_or_default().to_owned();
    let path = ctx.spec.bin_dir.join(&binary);
    if !path.exists() {
        return Err(RunError::Task(format!(
            "step {name}: image {image} is not one of the built binaries ({})",
            path.display()
        )));
    }
    let command: Vec<&str> = step["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if command.len() != 1
        || Path::new(command[0]).file_name().and_then(|f| f.to_str()) != Some(binary.as_str())
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
    Ok((binary, path))
}

fn step_env(
    ctx: &Context<'_>,
    objects: &Objects,
    name: &str,
    binary: &str,
    step: &Value,
) -> Result<Vec<(String, String)>, RunError> {
    let mut env: BTreeMap<String, String> = ctx.spec.pod_env.iter().cloned().collect();
    for source in step["envFrom"].as_array().into_iter().flatten() {
        let (kind, r) = if source.get("secretRef").is_some() {
            ("Secret", &source["secretRef"])
        } else {
            ("ConfigMap", &source["configMapRef"])
        };
        let obj_name = ctx.resolve(name, r["name"].as_str().unwrap_or_default())?;
        let prefix = source["prefix"].as_str().unwrap_or_default();
        match objects.get(&(kind.to_owned(), obj_name.clone())) {
            Some(data) => env.extend(
                data.iter()
                    .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
            ),
            None if r["optional"] == Value::Bool(true) => {}
            None => {
                return Err(RunError::Task(format!(
                    "step {name}: envFrom {kind} {obj_name} does not exist"
                )));
            }
        }
    }
    let known = ctx.spec.known_env.get(binary).cloned().unwrap_or_default();
    for item in step["env"].as_array().into_iter().flatten() {
        let var = item["name"].as_str().unwrap_or_default().to_owned();
        if !known.contains(&var) {
            return Err(RunError::UnknownEnv {
                step: name.into(),
                name: var,
                binary: binary.into(),
                known: known.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let value = if let Some(v) = item["value"].as_str() {
            ctx.resolve(name, v)?
        } else {
            let from = &item["valueFrom"];
            let (kind, r) = if from.get("secretKeyRef").is_some() {
                ("Secret", &from["secretKeyRef"])
            } else {
                ("ConfigMap", &from["configMapKeyRef"])
            };
            let obj = ctx.resolve(name, r["name"].as_str().unwrap_or_default())?;
            let key = r["key"].as_str().unwrap_or_default();
            match objects
                .get(&(kind.to_owned(), obj.clone()))
                .and_then(|d| d.get(key))
            {
                Some(v) => v.clone(),
                None if r["optional"] == Value::Bool(true) => continue,
                None => {
                    return Err(RunError::Task(format!(
                        "step {name}: env {var} refers to missing {kind} {obj} key {key}"
                    )));
                }
            }
        };
        env.insert(var, value);
    }
    Ok(env.into_iter().collect())
}

fn run_step(spec: &RunSpec, name: &str, path: &Path, env: &[(String, String)]) -> StepOutcome {
    let mut child = Command::new(path)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let mut stderr = String::new();
    for line in BufReader::new(child.stderr.take().expect("stderr"))
        .lines()
        .map_while(Result::ok)
    {
        if spec.echo {
            eprintln!("[{name}] {line}");
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().expect("wait for step");
    StepOutcome {
        name: name.to_owned(),
        code: status.code().unwrap_or(-1),
        stderr,
        continues_on_error: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_under_a_mount_point_at_the_local_directory() {
        let mounts = vec![
            (
                "/etc/vault-backup/ca".to_owned(),
                PathBuf::from("/tmp/v/ca"),
            ),
            ("/etc".to_owned(), PathBuf::from("/tmp/v/etc")),
        ];
        assert_eq!(
            rewrite_mounted(&mounts, "/etc/vault-backup/ca/ca.crt"),
            "/tmp/v/ca/ca.crt"
        );
        assert_eq!(rewrite_mounted(&mounts, "/etc/hosts"), "/tmp/v/etc/hosts");
        assert_eq!(rewrite_mounted(&mounts, "/etcetera"), "/etcetera");
        assert_eq!(rewrite_mounted(&mounts, "https://x/etc"), "https://x/etc");
    }

    #[test]
    fn pod_ports_are_rewritten_whole() {
        let ports = [(8200, 41000)];
        assert_eq!(
            rewrite_ports(&ports, "http://127.0.0.1:8200/v1"),
            "http://127.0.0.1:41000/v1"
        );
        assert_eq!(rewrite_ports(&ports, "localhost:8200"), "localhost:41000");
        assert_eq!(rewrite_ports(&ports, "127.0.0.1:82001"), "127.0.0.1:82001");
        assert_eq!(rewrite_ports(&ports, "10.0.0.1:8200"), "10.0.0.1:8200");
    }

    #[test]
    fn base64_secret_values_decode() {
        assert_eq!(decode_base64("aHVudGVyMg==").as_deref(), Some("hunter2"));
        assert_eq!(decode_base64("!!"), None);
    }

    #[test]
    fn step_env_merges_by_name_and_own_env_from_replaces() {
        let template = serde_json::json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
                                          "envFrom": [{"secretRef": {"name": "t"}}]});
        let step = serde_json::json!({"name": "s", "env": [{"name": "B", "value": "2"}],
                                      "envFrom": [{"configMapRef": {"name": "c"}}]});
        let m = merged_step(&template, &step);
        assert_eq!(
            m["env"],
            serde_json::json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            m["envFrom"],
            serde_json::json!([{"configMapRef": {"name": "c"}}])
        );
    }
}
