//! `kube-standin`: the Kubernetes TaskRun stand-in as a process, for a shell demo of the prune step.
//!
//! Seeds the backup Task's runs (one an hour, newest last; every fifth failed; the newest still
//! running) and half as many runs of another Task, prints `KUBECONFIG=<path>` on stdout, and
//! serves until SIGINT or SIGTERM; it then prints the DELETEs it received on stderr.
//!
//! Usage: `kube-standin [--runs N] [--namespace NS]` (defaults: 30 runs, namespace `backups`).

use std::io::Write;
use std::process::ExitCode;

use chrono::{TimeDelta, Utc};
use vault_backup_testbed::kube_standin::{KubeStandIn, TaskRun};

fn main() -> ExitCode {
    let mut runs: i64 = 30;
    let mut namespace = "backups".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--runs", Some(n)) if n.parse::<i64>().is_ok_and(|n| n > 0) => {
                runs = n.parse().unwrap_or(30);
            }
            ("--namespace", Some(ns)) => namespace = ns,
            _ => {
                eprintln!("usage: kube-standin [--runs N] [--namespace NS]");
                return ExitCode::from(2);
            }
        }
    }

    let standin = KubeStandIn::start_in(&namespace);
    let now = Utc::now();
    for i in 0..runs {
        let at = now - TimeDelta::hours(runs - i);
        let run = TaskRun::new(format!("vault-backup-run-{i:04}"))
            .task("vault-backup")
            .created(Some(at - TimeDelta::minutes(3)));
        let run = match i {
            _ if i == runs - 1 => run.running(),
            _ if i % 5 == 4 => run.failed(Some(at)),
            _ => run.succeeded(Some(at)),
        };
        standin.add_taskrun(&run);
    }
    for i in 0..runs / 2 {
        let at = now - TimeDelta::hours(runs - i);
        standin.add_taskrun(
            &TaskRun::new(format!("other-task-run-{i:04}"))
                .task("other-task")
                .created(Some(at))
                .succeeded(Some(at)),
        );
    }
    println!("KUBECONFIG={}", standin.kubeconfig_path().display());
    let _ = std::io::stdout().flush();
    eprintln!(
        "kube-standin: serving {} TaskRuns in namespace {namespace} at {}",
        runs + runs / 2,
        standin.url()
    );

    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::from(1);
    };
    runtime.block_on(async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    for d in standin.deletions() {
        eprintln!(
            "kube-standin: DELETE {}/{} propagationPolicy={} -> {}",
            d.namespace,
            d.name,
            d.propagation_policy.as_deref().unwrap_or("-"),
            d.status
        );
    }
    eprintln!("kube-standin: {} TaskRuns left", standin.taskruns().len());
    ExitCode::SUCCESS
}
