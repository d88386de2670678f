//! Steps and sidecars made into containers: user, environment, mounts, command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::pod::{Container, User};

use super::context::{Context, Objects};
use super::image::{Image, pinned, sidecar_image, step_image_for};
use super::probe::Probe;
use super::volumes::{PodFiles, Volumes, container_mounts};
use super::{RunError, RunSpec, id_of};

/// The uid, gid and groups of a container; refuses uid 0 under `runAsNonRoot`, as the kubelet
/// does.
pub(super) fn container_user(
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
pub(super) fn container_env(
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
pub(super) fn find_binary(spec: &RunSpec, binary: &str) -> Option<PathBuf> {
    std::env::var_os("VAULT_BACKUP_STEP_BIN_DIR")
        .map(|d| PathBuf::from(d).join(binary))
        .into_iter()
        .chain(std::iter::once(spec.bin_dir.join(binary)))
        .find(|p| p.exists())
}

/// A step checked and made into a container, with its binary and `onError`.
pub(super) struct Step {
    pub(super) name: String,
    pub(super) binary: String,
    pub(super) container: Container,
    pub(super) continues: bool,
}

pub(super) fn prepare_step(
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
pub(super) struct Sidecar {
    pub(super) name: String,
    pub(super) container: Container,
    pub(super) probe: Option<Probe>,
}

pub(super) fn prepare_sidecar(
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
