//! What an image puts into a container: the step images (`images/Containerfile` and the
//! Makefile's `images` target) and the sidecar images the runner can stand in for.

use std::path::Path;
use std::sync::OnceLock;

use crate::pod::{self, RootEntry};
use crate::venv;

use super::RunError;

/// What an image contributes to a container: its files, entrypoint and cmd, env and user.
#[derive(Debug, Clone)]
pub(super) struct Image {
    pub(super) root: Vec<RootEntry>,
    pub(super) entrypoint: Vec<String>,
    pub(super) cmd: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// `ENV` and `USER` of `images/Containerfile`, and the `/etc/passwd` and `/etc/group` lines of
/// the Makefile's `images` target: what every step image holds besides its binary.
#[derive(Debug, Clone)]
pub(super) struct StepImage {
    pub(super) env: Vec<(String, String)>,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) passwd: String,
    pub(super) group: String,
}

pub(super) fn step_image() -> Result<&'static StepImage, RunError> {
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

pub(super) fn parse_step_image(containerfile: &str, makefile: &str) -> Result<StepImage, String> {
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
pub(super) fn step_image_for(binary: &str, host: &Path) -> Result<Image, RunError> {
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
pub(super) fn sidecar_image(what: &str, repo: &str) -> Result<Image, RunError> {
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

pub(super) fn pinned<'a>(what: &str, image: &'a str) -> Result<(&'a str, &'a str), RunError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
