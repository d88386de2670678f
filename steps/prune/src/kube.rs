//! The only file that speaks to the Kubernetes API: load the client configuration, list
//! TaskRuns page by page, delete one, each request bounded in time.
//!
//! kube's client sets no read timeout by default (so that watches and exec sessions can stay
//! open), so a hung API server would stall the step until the TaskRun's own timeout. Here every
//! request carries `PRUNE_TIMEOUT` twice over: as kube's connect, read and write timeouts, and
//! as a bound on the whole request (kube retries 429/503/504 inside it).
//!
//! TaskRuns are read as [`DynamicObject`]s of `tekton.dev/v1` rather than through a typed CRD
//! struct: the step reads three status fields and nothing else, and an untyped object cannot fail
//! to parse when a newer Tekton adds or changes fields the step does not read.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
use serde_json::Value;
use vault_backup_common::exit::one_line;

use crate::error::{Error, Result};
use crate::policy::{Outcome, Run};

/// Loads the client configuration: the `KUBECONFIG` files if given, else kube's inference
/// (`~/.kube/config`, then the in-cluster service account); then bounds connects, reads and
/// writes by `timeout`.
///
/// # Errors
/// [`Error::NoClusterConfig`] or [`Error::Kubeconfig`], both configuration errors.
pub async fn client_config(kubeconfig: &[PathBuf], timeout: Duration) -> Result<kube::Config> {
    let mut config = load(kubeconfig).await?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // Count the read timeout from the request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    Ok(config)
}

async fn load(kubeconfig: &[PathBuf]) -> Result<kube::Config> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    if kubeconfig.is_empty() {
        return kube::Config::infer()
            .await
            .map_err(|e| Error::NoClusterConfig {
                detail: one_line(&e),
            });
    }
    let paths = kubeconfig
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    // The same merge kube applies to KUBECONFIG itself; done here so that tests can pass the
    // path in the Config instead of changing the process environment.
    let merged = kubeconfig
        .iter()
        .try_fold(Kubeconfig::default(), |merged, p| {
            Kubeconfig::read_from(p).and_then(|c| merged.merge(c))
        });
    let config = match merged {
        Ok(merged) => {
            kube::Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default()).await
        }
        Err(e) => Err(e),
    };
    config.map_err(|e| Error::Kubeconfig {
        paths,
        detail: one_line(&e),
    })
}

/// Builds the client from a loaded configuration.
///
/// # Errors
/// [`Error::Client`] if kube cannot build it (for example an unusable TLS setting).
pub fn client(config: kube::Config) -> Result<kube::Client> {
    kube::Client::try_from(config).map_err(|source| Error::Client {
        source: Box::new(source),
    })
}

/// `tekton.dev/v1` `TaskRun`, plural `taskruns`.
#[must_use]
pub fn taskrun_resource() -> ApiResource {
    ApiResource {
        group: "tekton.dev".to_owned(),
        version: "v1".to_owned(),
        api_version: "tekton.dev/v1".to_owned(),
        kind: "TaskRun".to_owned(),
        plural: "taskruns".to_owned(),
    }
}

/// What one list of all pages gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Every selected run, in the order the API server returned them.
    pub runs: Vec<Run>,
    /// How many list requests it took.
    pub pages: usize,
}

/// How a delete ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The API server accepted the delete; with background propagation the pods follow.
    Now,
    /// The run was already gone (404), for example deleted by hand or by another prune.
    AlreadyGone,
}

/// The TaskRuns of one namespace.
#[derive(Clone)]
pub struct TaskRuns {
    api: Api<DynamicObject>,
    namespace: String,
    timeout: Duration,
}

impl TaskRuns {
    /// TaskRuns in `namespace`, through `client`; each request is given up after `timeout`.
    #[must_use]
    pub fn new(client: kube::Client, namespace: &str, timeout: Duration) -> Self {
        Self {
            api: Api::namespaced_with(client, namespace, &taskrun_resource()),
            namespace: namespace.to_owned(),
            timeout,
        }
    }

    /// The namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Runs one request within the timeout; a timeout (this one, or kube's own read, write or
    /// connect timeout, found among the error's sources) becomes [`Error::Timeout`].
    async fn bounded<T>(
        &self,
        what: impl Fn() -> String,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>> {
        let timed_out = || Error::Timeout {
            what: what(),
            after: self.timeout,
        };
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(timed_out()),
            Ok(Err(e)) if is_timeout(&e) => Err(timed_out()),
            Ok(result) => Ok(result),
        }
    }

    /// Lists every TaskRun matching the label `selector`, `page_size` at a time, following
    /// `continue` tokens until the server gives none.
    ///
    /// # Errors
    /// [`Error::SelectorRejected`] if the server refuses the selector (400);
    /// [`Error::Timeout`] if a page takes longer than the timeout;
    /// [`Error::List`] for any other failed page; [`Error::ListLoop`] for a server that hands
    /// back the token it was given (which would loop forever).
    pub async fn list(&self, selector: &str, page_size: u32) -> Result<Listing> {
        let mut params = ListParams::default().labels(selector).limit(page_size);
        let mut runs = Vec::new();
        let mut pages = 0;
        loop {
            let what = || {
                format!(
                    "page {} of the list of TaskRuns in namespace {}",
                    pages + 1,
                    self.namespace
                )
            };
            let page = self
                .bounded(what, self.api.list(&params))
                .await?
                .map_err(|source| match source {
                    kube::Error::Api(status) if status.code == 400 && pages == 0 => {
                        Error::SelectorRejected {
                            selector: selector.to_owned(),
                            message: status.message.clone(),
                        }
                    }
                    source => Error::List {
                        namespace: self.namespace.clone(),
                        selector: selector.to_owned(),
                        source: Box::new(source),
                    },
                })?;
            pages += 1;
            runs.extend(page.items.iter().map(to_run));
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) if params.continue_token.as_deref() == Some(token.as_str()) => {
                    return Err(Error::ListLoop {
                        namespace: self.namespace.clone(),
                        pages,
                    });
                }
                Some(token) => params = params.continue_token(&token),
                None => return Ok(Listing { runs, pages }),
            }
        }
    }

    /// Deletes the TaskRun `name` with background propagation, so its pod goes too.
    ///
    /// # Errors
    /// [`Error::Timeout`] if it takes longer than the timeout; [`Error::Delete`] for any answer
    /// but success or 404.
    pub async fn delete(&self, name: &str) -> Result<Deleted> {
        let what = || format!("the delete of TaskRun {name}");
        match self
            .bounded(what, self.api.delete(name, &DeleteParams::background()))
            .await?
        {
            Ok(_) => Ok(Deleted::Now),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deleted::AlreadyGone),
            Err(source) => Err(Error::Delete {
                name: name.to_owned(),
                source: Box::new(source),
            }),
        }
    }
}

/// Whether a kube error is a timeout, judged by its sources (an `io::Error` of kind
/// `TimedOut`), never by its text.
fn is_timeout(err: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The PipelineRun a TaskRun belongs to: the controlling owner reference of kind `PipelineRun`
/// (what Tekton's PipelineRun controller sets, and what it and Kubernetes' garbage collector go
/// by), else the `tekton.dev/pipelineRun` label (which Tekton also sets, and which survives an
/// orphaning delete of the PipelineRun). Either one is enough: when unsure, keep.
fn pipeline_run(object: &DynamicObject) -> Option<String> {
    let owner = object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "PipelineRun" && o.api_version.starts_with("tekton.dev/"))
        .map(|o| o.name.clone());
    owner.or_else(|| {
        object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tekton.dev/pipelineRun"))
            .filter(|v| !v.is_empty())
            .cloned()
    })
}

/// Reads what the policy needs from a TaskRun; anything unreadable becomes "unknown", which the
/// policy treats as a reason to keep the run.
#[must_use]
pub fn to_run(object: &DynamicObject) -> Run {
    let status = object.data.get("status");
    let succeeded = status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Succeeded"))
        })
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str);
    let outcome = match succeeded {
        Some("True") => Outcome::Succeeded,
        Some("False") => Outcome::Failed,
        _ => Outcome::Running,
    };
    let completed = status
        .and_then(|s| s.get("completionTime"))
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc());
    let created = object.metadata.creation_timestamp.as_ref().and_then(|t| {
        let nanos = u32::try_from(t.0.subsec_nanosecond()).ok()?;
        DateTime::<Utc>::from_timestamp(t.0.as_second(), nanos)
    });
    Run {
        name: object.metadata.name.clone().unwrap_or_default(),
        created,
        completed,
        outcome,
        pipeline_run: pipeline_run(object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn object(status: &Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": {"name": "vault-backup-abc", "creationTimestamp": "2025-06-01T10:00:00Z"},
            "status": status,
        }))
        .unwrap()
    }

    #[rstest]
    #[case::succeeded(json!({"conditions": [{"type": "Succeeded", "status": "True"}], "completionTime": "2025-06-01T10:05:00Z"}), Outcome::Succeeded, true)]
    #[case::failed(json!({"conditions": [{"type": "Succeeded", "status": "False", "reason": "TaskRunTimeout"}], "completionTime": "2025-06-01T10:05:00Z"}), Outcome::Failed, true)]
    #[case::running(json!({"conditions": [{"type": "Succeeded", "status": "Unknown"}]}), Outcome::Running, false)]
    #[case::other_condition_only(json!({"conditions": [{"type": "Ready", "status": "True"}]}), Outcome::Running, false)]
    #[case::no_status(Value::Null, Outcome::Running, false)]
    #[case::bad_completion(json!({"conditions": [{"type": "Succeeded", "status": "True"}], "completionTime": "yesterday"}), Outcome::Succeeded, false)]
    fn reads_status(#[case] status: Value, #[case] outcome: Outcome, #[case] has_completion: bool) {
        let run = to_run(&object(&status));
        assert_eq!(run.name, "vault-backup-abc");
        assert_eq!(run.outcome, outcome);
        assert_eq!(run.completed.is_some(), has_completion);
        assert_eq!(
            run.created.map(|t| t.to_rfc3339()),
            Some("2025-06-01T10:00:00+00:00".to_owned())
        );
        if has_completion {
            assert_eq!(
                run.completed.unwrap().to_rfc3339(),
                "2025-06-01T10:05:00+00:00"
            );
        }
    }

    #[rstest]
    #[case::standalone(json!({}), None)]
    #[case::tekton_sets_both(
        json!({"labels": {"tekton.dev/pipelineRun": "nightly-1"}, "ownerReferences": [{"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "name": "nightly-1", "uid": "u", "controller": true}]}),
        Some("nightly-1")
    )]
    #[case::owner_only(
        json!({"ownerReferences": [{"apiVersion": "tekton.dev/v1beta1", "kind": "PipelineRun", "name": "nightly-2", "uid": "u"}]}),
        Some("nightly-2")
    )]
    #[case::label_only(json!({"labels": {"tekton.dev/pipelineRun": "nightly-3"}}), Some("nightly-3"))]
    #[case::other_owner_kind(
        json!({"ownerReferences": [{"apiVersion": "example.com/v1", "kind": "PipelineRun", "name": "x", "uid": "u"}, {"apiVersion": "v1", "kind": "ConfigMap", "name": "y", "uid": "u"}]}),
        None
    )]
    fn reads_the_pipeline_run_it_belongs_to(#[case] extra: Value, #[case] want: Option<&str>) {
        let mut metadata =
            json!({"name": "vault-backup-abc", "creationTimestamp": "2025-06-01T10:00:00Z"});
        for (k, v) in extra.as_object().unwrap() {
            metadata[k] = v.clone();
        }
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": metadata,
        }))
        .unwrap();
        assert_eq!(to_run(&object).pipeline_run.as_deref(), want);
    }
}
