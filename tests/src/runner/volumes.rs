//! Volumes as a kubelet makes them: emptyDir, configMap, secret, workspaces, results, the
//! service-account stand-in, and their ownership under `fsGroup`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::pod::Mount;

use super::context::{Context, Objects};
use super::{RESULTS_PATH, RunError, RunSpec, SERVICE_ACCOUNT_PATH, id_of};

/// Task volumes by name: host directory, and whether the kubelet mounts it read-only.
pub(super) type Volumes = BTreeMap<String, (PathBuf, bool)>;

pub(super) fn volumes_root(spec: &RunSpec) -> PathBuf {
    if spec.volumes_dir.as_os_str().is_empty() {
        spec.results_dir.with_file_name("volumes")
    } else {
        spec.volumes_dir.clone()
    }
}

pub(super) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |e| RunError::Task(format!("{}: {e}", path.display()))
}

/// A volume's ownership as kubelet's `SetVolumeOwnership` leaves it with `fsGroup`: every
/// file's group `fs_group`, mode OR `rw` for the group (`r` when read-only), directories also
/// setgid and searchable by the group; symlinks only chowned.
pub(super) fn set_volume_ownership(
    dir: &Path,
    fs_group: u32,
    read_only: bool,
) -> Result<(), RunError> {
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
pub(super) fn empty_dir(dir: &Path, fs_group: Option<u32>) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io_err(dir))?;
    if let Some(g) = fs_group {
        set_volume_ownership(dir, g, false)?;
    }
    Ok(())
}

pub(super) fn file_mode(what: &str, v: &Value, default: u32) -> Result<u32, RunError> {
    match v {
        Value::Null => Ok(default),
        v => id_of(v)
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| RunError::Task(format!("{what}: mode {v} is not 0..=0777"))),
    }
}

pub(super) fn materialise_volumes(
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
pub(super) fn container_mounts(
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
pub(super) struct PodFiles {
    /// The service-account stand-in directory (holding `kubeconfig`).
    pub(super) service_account: Option<PathBuf>,
    /// `HOSTNAME`, `KUBERNETES_*`, `KUBECONFIG`.
    pub(super) env: Vec<(String, String)>,
}

pub(super) fn pod_files(spec: &RunSpec, pod_name: &str, dir: &Path) -> Result<PodFiles, RunError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
