//! The Task's text: Secret and ConfigMap objects, params, `$(...)` references and the
//! `stepTemplate` merge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use super::{RESULTS_PATH, RunError, RunSpec};

pub(super) type Objects = BTreeMap<(String, String), BTreeMap<String, String>>;

pub(super) fn load_objects(files: &[PathBuf]) -> Result<Objects, RunError> {
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

pub(super) fn decode_base64(s: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// A param's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param {
    Str(String),
    Array(Vec<String>),
}

/// A bound workspace: its host directory, where it is mounted, and whether read-only.
#[derive(Debug, Clone)]
pub(super) struct Bound {
    pub(super) host: PathBuf,
    pub(super) path: String,
    pub(super) read_only: bool,
}

pub(super) struct Context<'a> {
    pub(super) spec: &'a RunSpec,
    pub(super) task_name: String,
    pub(super) params: BTreeMap<String, Param>,
    pub(super) workspaces: BTreeMap<String, Option<Bound>>,
    pub(super) results: BTreeSet<String>,
}

impl Context<'_> {
    pub(super) fn resolve(&self, step: &str, text: &str) -> Result<String, RunError> {
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
    pub(super) fn resolve_list(&self, step: &str, list: &Value) -> Result<Vec<String>, RunError> {
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
pub(super) fn merged_step(template: &Value, step: &Value) -> Value {
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
}
