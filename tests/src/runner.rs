//! A local step runner: runs `tekton/task.yaml` as written, the way Tekton would, with each
//! step's image mapped to the locally built binary.
//!
//! It exists so that the manifests and the binaries cannot drift apart. It resolves params
//! (with their defaults), `$(workspaces.<name>.path|bound)`, `$(results.<name>.path)` and
//! `$(context.taskRun.name|namespace)`, merges the `stepTemplate` into each step as Tekton does
//! (`env` by name, a step's own `envFrom` replacing the template's), fills `envFrom` and
//! `valueFrom` from local Secret and ConfigMap YAML files, and runs the steps in order, stopping
//! at the first failure. It fails on any `$(...)` it cannot resolve, any image or command that
//! is not one of our binaries, any `env` name the step's binary does not read, a binary that
//! exits 2 (a configuration the YAML does not provide) and any declared result left unwritten.
//!
//! What it does not model: the pod (volumes other than workspaces, sidecars, the entrypoint
//! binary, `/tekton/` downward files), resource limits and security contexts (checked by
//! linters instead), `when` expressions, array and object params, and step results.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

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
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The steps that ran, in order.
    pub steps: Vec<StepOutcome>,
    /// The Task's results, read from their files.
    pub results: BTreeMap<String, String>,
}

impl Outcome {
    /// Whether every step exited 0.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.steps.iter().all(|s| s.code == 0)
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
            ["context", "task", "name"] => Ok("vault-backup".into()),
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
/// (exit 1) is not an error here: it shows in the [`Outcome`], and later steps do not run.
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
        params,
        workspaces,
        results,
    };
    let objects = load_objects(&spec.objects)?;
    std::fs::create_dir_all(&spec.results_dir).map_err(|e| RunError::Task(e.to_string()))?;

    // Like Tekton, check every step before running any.
    let mut prepared = Vec::new();
    for raw_step in tspec["steps"].as_array().into_iter().flatten() {
        let step = merged_step(&tspec["stepTemplate"], raw_step);
        let name = step["name"].as_str().unwrap_or_default().to_owned();
        if step.get("script").is_some() {
            return Err(RunError::Task(format!(
                "step {name} uses script:; every step must be its binary"
            )));
        }
        let (binary, path) = binary_for(&ctx, &name, &step)?;
        let env = step_env(&ctx, &objects, &name, &binary, &step)?;
        prepared.push((name, binary, path, env));
    }
    let mut outcome = Outcome {
        steps: Vec::new(),
        results: BTreeMap::new(),
    };
    for (name, binary, path, env) in prepared {
        let result = run_step(spec, &name, &path, &env);
        if result.code == 2 {
            return Err(RunError::Config {
                step: name,
                binary,
                stderr: result.stderr,
            });
        }
        let failed = result.code != 0;
        outcome.steps.push(result);
        if failed {
            return Ok(outcome);
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
    Ok(outcome)
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
    }
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
