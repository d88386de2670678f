//! An in-process stand-in for the part of the Kubernetes API the prune step uses.
//!
//! No API server installs on these machines, and the published fake client (`kube-fake-client`
//! 0.3) pins an older kube, ignores set-based selectors and never returns a `continue` token: it
//! cannot show that paging or `in`/`notin` work. So this is a small HTTP server on 127.0.0.1
//! that speaks the real wire protocol for TaskRuns (`tekton.dev/v1`), and writes a kubeconfig
//! pointing at itself (plain http, a bearer token) so that the step's client code is exactly
//! what runs in a cluster.
//!
//! What it serves, as the API server does:
//! - `GET /apis/tekton.dev/v1/namespaces/{ns}/taskruns` with `labelSelector` (equality and
//!   set-based: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`;
//!   a malformed selector is a 400 `Status`), `limit` and `continue`. Items are in name order;
//!   `limit` counts matching items, and a `continue` token is returned whenever keys remain after
//!   the page, so, as with etcd, the last page can be empty. `remainingItemCount` is set only
//!   without a selector.
//! - `GET .../taskruns/{name}`: the object, or a 404 `Status`.
//! - `DELETE .../taskruns/{name}`: removes the run and returns it; records the
//!   `propagationPolicy` from the `DeleteOptions` body or the query; a 404 `Status` for a missing
//!   run; a 500 `Status` for a name given to [`KubeStandIn::fail_delete`] (the run stays).
//! - Any request without `Authorization: Bearer <the kubeconfig's token>`: 401 `Status`.
//! - `metadata.ownerReferences` naming a `PipelineRun` for runs built with
//!   [`TaskRun::owned_by_pipeline_run`] or [`TaskRun::in_pipeline_run`] (what Tekton's PipelineRun
//!   controller sets), served as data only.
//! - On request, a slow or hung server: [`KubeStandIn::delay_lists`] and
//!   [`KubeStandIn::delay_deletes`] hold each answer back (the request is recorded when it is
//!   answered), so a test can show that a client bounds its wait or stops on a signal.
//!
//! What it does not model: watch, `resourceVersion` semantics (list consistency, conflicts,
//! `resourceVersionMatch`; a `continue` token just resumes after a name, so runs added or
//! deleted meanwhile show up or vanish, and tokens never expire with 410), field selectors,
//! `dryRun`, finalizers and garbage collection (owner references are data only: no pods exist and
//! background propagation is only recorded, never carried out), admission, RBAC (any holder of the token may do
//! anything), TLS, server-side apply, other resources and API discovery.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How a TaskRun's `Succeeded` condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `status: "True"`.
    Succeeded,
    /// `status: "False"`.
    Failed,
    /// `status: "Unknown"`: still running.
    Running,
    /// No status at all yet (just created).
    Pending,
}

/// A TaskRun to seed into the stand-in, built fluently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRun {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` puts it in the stand-in's default namespace.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`; `None` leaves it out.
    pub created: Option<DateTime<Utc>>,
    /// `status.completionTime`; `None` leaves it out.
    pub completed: Option<DateTime<Utc>>,
    /// The `Succeeded` condition.
    pub state: RunState,
    /// The PipelineRun named as its controller in `metadata.ownerReferences`, if any.
    pub owner_pipeline_run: Option<String>,
}

impl TaskRun {
    /// A pending run named `name`, created now, with no labels.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: None,
            labels: BTreeMap::new(),
            created: Some(Utc::now()),
            completed: None,
            state: RunState::Pending,
            owner_pipeline_run: None,
        }
    }

    /// Names the PipelineRun `pipeline_run` as its controlling owner in
    /// `metadata.ownerReferences`, without the label (as for a label removed by hand).
    #[must_use]
    pub fn owned_by_pipeline_run(mut self, pipeline_run: &str) -> Self {
        self.owner_pipeline_run = Some(pipeline_run.to_owned());
        self
    }

    /// What Tekton's PipelineRun controller creates: the owner reference and the label
    /// `tekton.dev/pipelineRun=<pipeline_run>`.
    #[must_use]
    pub fn in_pipeline_run(self, pipeline_run: &str) -> Self {
        self.owned_by_pipeline_run(pipeline_run)
            .label("tekton.dev/pipelineRun", pipeline_run)
    }

    /// Sets the label Tekton puts on runs of a Task: `tekton.dev/task=<task>`.
    #[must_use]
    pub fn task(self, task: &str) -> Self {
        self.label("tekton.dev/task", task)
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Puts it in `namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Sets (or, with `None`, removes) the creation time.
    #[must_use]
    pub fn created(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.created = at;
        self
    }

    /// Marks it succeeded at `at` (`None`: succeeded with no `completionTime`).
    #[must_use]
    pub fn succeeded(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.state = RunState::Succeeded;
        self.completed = at;
        self
    }

    /// Marks it failed at `at` (`None`: failed with no `completionTime`).
    #[must_use]
    pub fn failed(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.state = RunState::Failed;
        self.completed = at;
        self
    }

    /// Marks it running (`Succeeded` is `Unknown`, no completion).
    #[must_use]
    pub fn running(mut self) -> Self {
        self.state = RunState::Running;
        self.completed = None;
        self
    }

    fn to_json(&self, namespace: &str, uid: u64) -> Value {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut metadata = json!({
            "name": self.name,
            "namespace": namespace,
            "uid": format!("00000000-0000-4000-8000-{uid:012x}"),
            "resourceVersion": uid.to_string(),
            "generation": 1,
            "labels": self.labels,
        });
        if let Some(created) = self.created {
            metadata["creationTimestamp"] = json!(time(created));
        }
        if let Some(owner) = &self.owner_pipeline_run {
            metadata["ownerReferences"] = json!([{
                "apiVersion": "tekton.dev/v1",
                "kind": "PipelineRun",
                "name": owner,
                "uid": format!("00000000-0000-4000-9000-{uid:012x}"),
                "controller": true,
                "blockOwnerDeletion": true,
            }]);
        }
        let condition = |status: &str, reason: &str| {
            json!([{"type": "Succeeded", "status": status, "reason": reason,
                    "lastTransitionTime": time(self.completed.or(self.created).unwrap_or_default())}])
        };
        let mut status = match self.state {
            RunState::Succeeded => json!({"conditions": condition("True", "Succeeded")}),
            RunState::Failed => json!({"conditions": condition("False", "Failed")}),
            RunState::Running => json!({"conditions": condition("Unknown", "Running")}),
            RunState::Pending => json!({}),
        };
        if let Some(created) = self.created {
            status["startTime"] = json!(time(created));
            status["podName"] = json!(format!("{}-pod", self.name));
        }
        if let Some(completed) = self.completed {
            status["completionTime"] = json!(time(completed));
        }
        let task = self
            .labels
            .get("tekton.dev/task")
            .map_or("unknown", String::as_str);
        json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": metadata,
            "spec": {"taskRef": {"kind": "Task", "name": task}, "serviceAccountName": "vault-backup"},
            "status": status,
        })
    }
}

/// One DELETE request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The namespace in the path.
    pub namespace: String,
    /// The name in the path.
    pub name: String,
    /// `propagationPolicy` from the body (`DeleteOptions`) or, failing that, the query.
    pub propagation_policy: Option<String>,
    /// The HTTP status it answered: 200 deleted, 404 not there, 500 injected failure.
    pub status: u16,
}

/// One list request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// The namespace in the path.
    pub namespace: String,
    /// `labelSelector`, as sent.
    pub label_selector: Option<String>,
    /// `limit`, as sent.
    pub limit: Option<usize>,
    /// Whether a `continue` token was sent.
    pub continued: bool,
    /// Items returned.
    pub returned: usize,
    /// The HTTP status it answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    /// (namespace, name) → object; a BTreeMap so lists come out in key order, as from etcd.
    runs: BTreeMap<(String, String), Value>,
    deletions: Vec<Deletion>,
    lists: Vec<ListRequest>,
    fail_delete: HashSet<String>,
    next_uid: u64,
    list_delay: Duration,
    delete_delay: Duration,
    received: usize,
}

struct Shared {
    state: Mutex<State>,
    token: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler thread must not hide the state from the test that inspects it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running stand-in; stops when dropped. Usable from sync and async code alike: it serves
/// from its own thread with its own runtime.
pub struct KubeStandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    namespace: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KubeStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStandIn")
            .field("addr", &self.addr)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeStandIn {
    /// Starts a stand-in whose kubeconfig context uses the namespace `backups`.
    pub fn start() -> Self {
        Self::start_in("backups")
    }

    /// Starts a stand-in whose kubeconfig context uses `namespace`.
    ///
    /// # Panics
    /// If it cannot bind the test-bed host (127.0.0.1, or the pod network's host address in a
    /// process that runs Tasks), write its kubeconfig or start its thread.
    pub fn start_in(namespace: &str) -> Self {
        let listener = std::net::TcpListener::bind((crate::podnet::bind_host(), 0))
            .expect("bind the test-bed host, port 0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let token = format!("standin-token-{:x}-{nanos:x}", std::process::id());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            token: token.clone(),
        });

        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr, namespace, &token))
            .expect("write kubeconfig");

        let (tx, rx) = tokio::sync::oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kube-standin".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("stand-in runtime");
                runtime.block_on(serve(listener, serving, rx));
            })
            .expect("spawn stand-in thread");
        Self {
            shared,
            addr,
            namespace: namespace.to_owned(),
            kubeconfig,
            _dir: dir,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The kubeconfig file pointing at this stand-in (context namespace: [`Self::namespace`]).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `http://<host>:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kubeconfig context's namespace, where runs without one are put.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The bearer token in the kubeconfig (so a test can check it never reaches a log).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Adds (or replaces) a TaskRun.
    pub fn add_taskrun(&self, run: &TaskRun) {
        let mut state = self.shared.lock();
        state.next_uid += 1;
        let namespace = run
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let object = run.to_json(&namespace, state.next_uid);
        state.runs.insert((namespace, run.name.clone()), object);
    }

    /// Adds many TaskRuns.
    pub fn add_taskruns<'a>(&self, runs: impl IntoIterator<Item = &'a TaskRun>) {
        for run in runs {
            self.add_taskrun(run);
        }
    }

    /// Names of the TaskRuns now in the default namespace, sorted.
    pub fn taskruns(&self) -> Vec<String> {
        self.taskruns_in(&self.namespace)
    }

    /// Names of the TaskRuns now in `namespace`, sorted.
    pub fn taskruns_in(&self, namespace: &str) -> Vec<String> {
        self.shared
            .lock()
            .runs
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Every DELETE received so far, in order of arrival.
    pub fn deletions(&self) -> Vec<Deletion> {
        self.shared.lock().deletions.clone()
    }

    /// Every list request received so far, in order of arrival.
    pub fn list_requests(&self) -> Vec<ListRequest> {
        self.shared.lock().lists.clone()
    }

    /// From now on, a DELETE of `name` (in any namespace) answers 500 and leaves the run.
    pub fn fail_delete(&self, name: &str) {
        self.shared.lock().fail_delete.insert(name.to_owned());
    }

    /// From now on, each GET (list or read) is answered only after `delay` (an hour: a hung
    /// server).
    pub fn delay_lists(&self, delay: Duration) {
        self.shared.lock().list_delay = delay;
    }

    /// Requests that reached the handler with the right token so far, answered or still held
    /// back by a delay (lists and deletions are recorded only once answered).
    pub fn requests_received(&self) -> usize {
        self.shared.lock().received
    }

    /// From now on, each DELETE is carried out and answered only after `delay`.
    pub fn delay_deletes(&self, delay: Duration) {
        self.shared.lock().delete_delay = delay;
    }
}

impl Drop for KubeStandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn kubeconfig_yaml(addr: SocketAddr, namespace: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-standin
  cluster:
    server: http://{addr}
users:
- name: kube-standin
  user:
    token: {token}
contexts:
- name: kube-standin
  context:
    cluster: kube-standin
    user: kube-standin
    namespace: {namespace}
current-context: kube-standin
"
    )
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(code: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// A `meta.k8s.io/v1` `Status` failure, as the API server sends it.
fn status(code: StatusCode, reason: &str, message: &str, name: Option<&str>) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(name) = name {
        body["details"] = json!({"name": name, "group": "tekton.dev", "kind": "taskruns"});
    }
    reply(code, &body)
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(shared.token.as_str());
    if !authorized {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let delay = {
        let mut state = shared.lock();
        state.received += 1;
        match method {
            Method::GET => state.list_delay,
            Method::DELETE => state.delete_delay,
            _ => Duration::ZERO,
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading body: {e}"),
                None,
            );
        }
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["apis", "tekton.dev", "v1", "namespaces", ns, "taskruns"]) => {
            list(shared, ns, &query)
        }
        (
            Method::GET,
            [
                "apis",
                "tekton.dev",
                "v1",
                "namespaces",
                ns,
                "taskruns",
                name,
            ],
        ) => {
            let state = shared.lock();
            match state.runs.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(object) => reply(StatusCode::OK, object),
                None => not_found(name),
            }
        }
        (
            Method::DELETE,
            [
                "apis",
                "tekton.dev",
                "v1",
                "namespaces",
                ns,
                "taskruns",
                name,
            ],
        ) => delete(shared, ns, name, &query, &body),
        (_, ["apis", "tekton.dev", "v1", "namespaces", _, "taskruns", ..]) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the stand-in serves only list, get and delete of taskruns",
            None,
        ),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            None,
        ),
    }
}

fn not_found(name: &str) -> Reply {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("taskruns.tekton.dev \"{name}\" not found"),
        Some(name),
    )
}

fn list(shared: &Shared, ns: &str, query: &BTreeMap<String, String>) -> Reply {
    let selector = query.get("labelSelector").cloned();
    let continue_token = query.get("continue").filter(|t| !t.is_empty());
    let mut record = ListRequest {
        namespace: ns.to_owned(),
        label_selector: selector.clone(),
        limit: None,
        continued: continue_token.is_some(),
        returned: 0,
        status: 400,
    };
    let mut state = shared.lock();
    let outcome = (|| {
        let requirements = parse_selector(selector.as_deref().unwrap_or(""))
            .map_err(|e| format!("unable to parse requirement: {e}"))?;
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            None | Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return Err("limit: expected a whole number".to_owned()),
        };
        record.limit = limit;
        let after = continue_token.map(|t| decode_continue(t)).transpose()?;
        Ok((requirements, limit, after))
    })();
    let (requirements, limit, after) = match outcome {
        Ok(parsed) => parsed,
        Err(message) => {
            state.lists.push(record);
            return status(StatusCode::BAD_REQUEST, "BadRequest", &message, None);
        }
    };

    let keys: Vec<&(String, String)> = state
        .runs
        .keys()
        .filter(|(n, name)| n == ns && after.as_ref().is_none_or(|a| name > a))
        .collect();
    let mut items = Vec::new();
    let mut last_index = None;
    for (i, key) in keys.iter().enumerate() {
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
        let object = &state.runs[*key];
        if matches(&requirements, object) {
            items.push(object.clone());
        }
        last_index = Some(i);
    }
    let remaining = last_index.map_or(keys.len(), |i| keys.len() - i - 1);
    let mut metadata = json!({"resourceVersion": state.next_uid.to_string()});
    if limit.is_some() && remaining > 0 {
        let last = &keys[last_index.expect("a page was read").to_owned()].1;
        metadata["continue"] = json!(encode_continue(last));
        if selector.as_deref().is_none_or(str::is_empty) {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    record.returned = items.len();
    record.status = 200;
    state.lists.push(record);
    reply(
        StatusCode::OK,
        &json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRunList", "metadata": metadata, "items": items}),
    )
}

fn delete(
    shared: &Shared,
    ns: &str,
    name: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Reply {
    let from_body = serde_json::from_slice::<Value>(body).ok().and_then(|b| {
        b.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let propagation_policy = from_body.or_else(|| query.get("propagationPolicy").cloned());
    let mut state = shared.lock();
    let key = (ns.to_owned(), name.to_owned());
    let (code, response) = if state.fail_delete.contains(name) {
        (
            500,
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("Internal error occurred: injected failure deleting taskrun {name}"),
                Some(name),
            ),
        )
    } else if let Some(object) = state.runs.remove(&key) {
        (200, reply(StatusCode::OK, &object))
    } else {
        (404, not_found(name))
    };
    state.deletions.push(Deletion {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        propagation_policy,
        status: code,
    });
    response
}

/// The token is opaque to clients; here it is the last name of the page, hex-encoded.
fn encode_continue(last: &str) -> String {
    let hex = last.bytes().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    format!("standin-{hex}")
}

fn decode_continue(token: &str) -> Result<String, String> {
    let invalid = || "continue key is not valid".to_owned();
    let hex = token.strip_prefix("standin-").ok_or_else(invalid)?;
    if hex.len() % 2 != 0 {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key` (true) or `!key` (false).
    Exists(String, bool),
    /// `key=v`, `key==v`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=v`, `key notin (a,b)`: also true when the label is absent.
    NotIn(String, Vec<String>),
    /// `key>n`.
    Gt(String, i64),
    /// `key<n`.
    Lt(String, i64),
}

/// Parses a label selector as the API server does (`k8s.io/apimachinery/pkg/labels`).
///
/// # Errors
/// A message for a malformed selector, key or value.
pub fn parse_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    if selector.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in {selector:?}"));
        }
    }
    parts.push(&selector[start..]);
    parts.into_iter().map(parse_requirement).collect()
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let part = part.trim();
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::Exists(label_key(key.trim())?, false));
    }
    let key_end = part
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')))
        .unwrap_or(part.len());
    let key = label_key(&part[..key_end])?;
    let rest = part[key_end..].trim_start();
    let word = |w: &str| {
        rest.strip_prefix(w)
            .filter(|r| r.starts_with(|c: char| c.is_whitespace() || c == '('))
            .map(str::trim)
    };
    if rest.is_empty() {
        Ok(Requirement::Exists(key, true))
    } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        Ok(Requirement::In(key, vec![label_value(v.trim())?]))
    } else if let Some(v) = rest.strip_prefix("!=") {
        Ok(Requirement::NotIn(key, vec![label_value(v.trim())?]))
    } else if let Some(set) = word("notin") {
        Ok(Requirement::NotIn(key, value_set(set)?))
    } else if let Some(set) = word("in") {
        Ok(Requirement::In(key, value_set(set)?))
    } else if let Some(n) = rest.strip_prefix('>') {
        Ok(Requirement::Gt(key, integer(n)?))
    } else if let Some(n) = rest.strip_prefix('<') {
        Ok(Requirement::Lt(key, integer(n)?))
    } else {
        Err(format!(
            "found {rest:?}, expected: in, notin, =, ==, !=, gt, lt"
        ))
    }
}

fn integer(text: &str) -> Result<i64, String> {
    text.trim().parse().map_err(|_| {
        format!("for 'gt', 'lt' operators, the value must be an integer, got {text:?}")
    })
}

fn value_set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {text:?}"))?;
    inner.split(',').map(|v| label_value(v.trim())).collect()
}

fn name_ok(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn label_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if prefix_ok && name_ok(name, 63) {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn label_value(value: &str) -> Result<String, String> {
    if value.is_empty() || name_ok(value, 63) {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

fn matches(requirements: &[Requirement], object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    let get = |key: &str| labels.get(key).and_then(Value::as_str);
    let number = |key: &str| get(key).and_then(|v| v.parse::<i64>().ok());
    requirements.iter().all(|r| match r {
        Requirement::Exists(key, present) => get(key).is_some() == *present,
        Requirement::In(key, values) => get(key).is_some_and(|v| values.iter().any(|x| x == v)),
        Requirement::NotIn(key, values) => get(key).is_none_or(|v| values.iter().all(|x| x != v)),
        Requirement::Gt(key, n) => number(key).is_some_and(|v| v > *n),
        Requirement::Lt(key, n) => number(key).is_some_and(|v| v < *n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(pairs: &[(&str, &str)]) -> Value {
        let labels: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn selectors_match_as_the_api_server_does() {
        let backup = labelled(&[("tekton.dev/task", "vault-backup"), ("tier", "3")]);
        let other = labelled(&[("tekton.dev/task", "lint")]);
        let bare = labelled(&[]);
        let cases: &[(&str, [bool; 3])] = &[
            ("", [true, true, true]),
            ("tekton.dev/task=vault-backup", [true, false, false]),
            ("tekton.dev/task == vault-backup", [true, false, false]),
            ("tekton.dev/task!=vault-backup", [false, true, true]),
            (
                "tekton.dev/task in (vault-backup, lint)",
                [true, true, false],
            ),
            ("tekton.dev/task notin (vault-backup)", [false, true, true]),
            ("tekton.dev/task", [true, true, false]),
            ("!tekton.dev/task", [false, false, true]),
            ("tekton.dev/task,tier", [true, false, false]),
            (
                "tekton.dev/task in (lint,vault-backup),!tier",
                [false, true, false],
            ),
            ("tier>2", [true, false, false]),
            ("tier<3", [false, false, false]),
        ];
        for (selector, want) in cases {
            let reqs = parse_selector(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            let got = [&backup, &other, &bare].map(|o| matches(&reqs, o));
            assert_eq!(&got, want, "{selector}");
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in [
            "tekton.dev/task in (a",
            "a=b,",
            "a in a,b",
            "=x",
            "a=b c",
            "Bad_Prefix/x=y",
            "a>x",
            "a~b",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue("vault-backup-0042");
        assert_eq!(decode_continue(&t).unwrap(), "vault-backup-0042");
        assert!(decode_continue("garbage").is_err());
        assert!(decode_continue("standin-zz").is_err());
    }
}
