//! `make demo`: the whole backup job on this machine, end to end.
//!
//! Starts a 3-node OpenBao raft cluster (with a few secrets), SeaweedFS as the S3 store, a
//! directory as the PVC store and a stand-in for the Kubernetes API; runs `tekton/task.yaml`
//! through the local step runner; shows where the snapshot landed with its checksum; proves it
//! restores into a fresh OpenBao node; ends with the restore drill Task (the S3 copy restored
//! into a scratch OpenBao sidecar, its canary checked); and stops everything it started.

#[path = "../tests/support/known_env.rs"]
mod support;

use std::process::ExitCode;

use vault_backup_testbed::e2e::{Environment, OLD_RUNS, PRUNE_KEEP};

fn say(text: &str) {
    println!("\n==> {text}");
}

/// A few of the series the steps pushed, as the Pushgateway holds them.
fn print_metrics(env: &Environment) {
    if let Some(gateway) = &env.pushgateway {
        say(&format!(
            "metrics the steps pushed to the Pushgateway at {} (a few of them)",
            gateway.url()
        ));
        for sample in gateway.metrics("vault_backup_").iter().filter(|s| {
            [
                "vault_backup_last_success_timestamp_seconds",
                "vault_backup_snapshot_bytes",
                "vault_backup_store_snapshots",
                "vault_backup_taskruns_deleted",
                "vault_backup_restore_drill_duration_seconds",
            ]
            .contains(&s.name.as_str())
        }) {
            println!("    {} {}", sample.selector(), sample.value);
        }
    }
}

fn main() -> ExitCode {
    say("starting a 3-node OpenBao raft cluster, SeaweedFS (S3) and a Kubernetes API stand-in");
    let env = Environment::start();
    println!(
        "    OpenBao nodes: {}, {}, {}",
        env.cluster.addr(0),
        env.cluster.addr(1),
        env.cluster.addr(2)
    );
    println!(
        "    S3 endpoint:   {} bucket {}",
        env.s3().endpoint(),
        env.s3().bucket()
    );
    println!("    PVC stand-in:  {}", env.backups.display());
    println!(
        "    Kubernetes:    a local stand-in for the API server (no real cluster here), with {OLD_RUNS} finished \
         TaskRuns of earlier days and this run, {}",
        env.task_run_name
    );

    say(
        "running tekton/task.yaml as written (steps guard, prune, snapshot, sync) in a modelled pod, each step a container of its local binary",
    );
    let outcome = match env.run_task(support::known_env(), true) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("the Task and the binaries disagree: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !outcome.succeeded() {
        eprintln!("a step failed; see its log above");
        return ExitCode::FAILURE;
    }

    say("Task results");
    for (k, v) in &outcome.results {
        println!("    {k:<16} {v}");
    }
    let name = &outcome.results["snapshot-name"];
    say("where the snapshot landed");
    println!(
        "    s3://{}/prod/{name}.snap (+ .snap.json, .snap.sha256)",
        env.s3().bucket()
    );
    println!(
        "    {}/{name}.snap (+ .snap.json, .snap.sha256)",
        env.backups.display()
    );
    println!("    sha256 {}", outcome.results["snapshot-sha256"]);

    say("checking both copies with sha256sum -c, as a restore would");
    vault_backup_testbed::e2e::sha256sum_check(&env.backups, &format!("{name}.snap.sha256"));
    println!("    directory: {name}.snap: OK");
    let downloaded = env.download_and_check(name, "prod/");
    println!("    S3 (downloaded with aws s3 cp): {name}.snap: OK");

    say(
        "restoring the S3 copy into a fresh OpenBao node (snapshot-force, unseal with the old key)",
    );
    let value = env.cluster.restore_into_fresh_node_and_read(
        &downloaded.join(format!("{name}.snap")),
        "secret/db",
        "password",
    );
    if value != "correct horse battery staple" {
        eprintln!("restored secret/db has the wrong password: {value:?}");
        return ExitCode::FAILURE;
    }
    println!("    secret/db password read back from the restored node: OK");

    say("guard and prune");
    println!(
        "    guard: {} (no other run of the Task was running)",
        outcome.results["guard-outcome"]
    );
    println!(
        "    prune: {}: {} old TaskRuns deleted through the API stand-in, the newest {PRUNE_KEEP} and the running one kept",
        outcome.results["prune-outcome"],
        env.kube.deletions().len()
    );
    say(
        "restore drill: tekton/drill-task.yaml as written, its sidecar a scratch OpenBao started from tekton/drill-openbao.hcl",
    );
    let drill = match env.run_drill("vault-restore-drill-demo", support::known_env(), true) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("the drill Task and the binaries disagree: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !drill.succeeded() {
        eprintln!("the restore drill failed; see its log above");
        return ExitCode::FAILURE;
    }
    for (k, v) in &drill.results {
        println!("    {k:<18} {v}");
    }

    print_metrics(&env);
    say("demo passed; stopping everything it started");
    drop(env);
    ExitCode::SUCCESS
}
