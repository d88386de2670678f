//! The Tasks as written, through the step runner, with the cloud stores: the backup Task with a
//! GCS bucket (fake-gcs-server) beside the directory, and the weekly drill from an Azure Blob
//! container (Azurite). The emulators listen on the pod network's host address, where the
//! runner's pods reach them as they would reach a cloud endpoint.

#[path = "support/known_env.rs"]
mod support;

use support::known_env;
use vault_backup_testbed::azurite::{self, Azurite};
use vault_backup_testbed::e2e::{self, Environment, Setup};
use vault_backup_testbed::fake_gcs::FakeGcs;

/// The environment of these runs: no S3, so the only object store is the cloud one.
fn environment() -> Environment {
    Environment::start_with(&Setup {
        s3: false,
        ..Setup::default()
    })
}

#[test]
fn the_backup_task_copies_to_gcs_and_the_directory_and_the_gcs_copy_restores() {
    let env = environment();
    // After the environment: the pod network exists, so the emulator listens where pods reach.
    let gcs = FakeGcs::start("vault-backups");
    for (key, value) in gcs.env() {
        env.add_config(&key, &value);
    }
    env.add_config("GCS_PREFIX", "prod/");

    let outcome = env
        .run_task(known_env(), false)
        .expect("the Task runs as written");
    for step in &outcome.steps {
        assert_eq!(
            step.code,
            0,
            "step {} failed:\n{}\n--- fake-gcs-server ---\n{}",
            step.name,
            step.stderr,
            gcs.log()
        );
    }
    let name = outcome.results["snapshot-name"].clone();
    let mut stores: Vec<&str> = outcome.results["synced-stores"].split(',').collect();
    stores.sort_unstable();
    assert_eq!(stores, ["dir", "gcs"]);
    // GCS states no checksum that proves the verified bytes: the copy was read back.
    let mut checked: Vec<&str> = outcome.results["store-verification"].split(',').collect();
    checked.sort_unstable();
    assert_eq!(checked, ["dir=sha256", "gcs=sha256"]);

    // The bucket, seen through the emulator's own API: the three files under the prefix.
    let snap = format!("{name}.snap");
    let mut want = vec![
        format!("prod/{snap}"),
        format!("prod/{snap}.json"),
        format!("prod/{snap}.sha256"),
    ];
    want.sort();
    assert_eq!(gcs.keys("prod/"), want);
    // Downloaded as a person would, checked with sha256sum -c, and restored.
    let dl = env.path().join("from-gcs");
    std::fs::create_dir_all(&dl).unwrap();
    for f in [snap.clone(), format!("{snap}.sha256")] {
        std::fs::write(dl.join(&f), gcs.get(&format!("prod/{f}"))).unwrap();
    }
    e2e::sha256sum_check(&dl, &format!("{snap}.sha256"));
    let restored =
        env.cluster
            .restore_into_fresh_node_and_read(&dl.join(&snap), "secret/db", "password");
    assert_eq!(restored, "correct horse battery staple");

    let sync_log = &outcome.step("sync").unwrap().stderr;
    assert!(
        sync_log.contains("gs://vault-backups/prod/"),
        "the sync step names the GCS copy:\n{sync_log}"
    );
}

#[test]
fn the_drill_restores_the_azure_copy_into_its_sidecar_and_finds_this_runs_canary() {
    let env = environment();
    let azure = Azurite::start("vault-backups");
    for (key, value) in azure.env() {
        env.add_config(&key, &value);
    }
    env.add_config("AZURE_PREFIX", "prod/");
    // The drill's TaskRun binds the backups PVC too: read Azure, not the directory.
    env.add_config("RESTORE_FROM", "azure");

    let backup = env
        .run_task(known_env(), false)
        .expect("the backup Task runs");
    assert!(
        backup.succeeded(),
        "{:?}\n--- azurite ---\n{}",
        backup.steps,
        azure.log()
    );
    let name = backup.results["snapshot-name"].clone();
    let mut checked: Vec<&str> = backup.results["store-verification"].split(',').collect();
    checked.sort_unstable();
    assert_eq!(checked, ["azure=sha256", "dir=sha256"]);
    assert!(
        azure.keys("prod/").contains(&format!("prod/{name}.snap")),
        "{:?}",
        azure.keys("prod/")
    );
    // Nothing left in the directory store: only the Azure copy can feed the drill.
    for entry in std::fs::read_dir(&env.backups).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }

    let drill = env
        .run_drill("vault-restore-drill-w48", known_env(), false)
        .expect("the drill Task runs as written");
    for step in &drill.steps {
        assert_eq!(
            step.code,
            0,
            "step {} failed:\n{}\n--- sidecar ---\n{}\n--- azurite ---\n{}",
            step.name,
            step.stderr,
            drill.sidecar_logs["openbao"],
            azure.log()
        );
    }
    assert_eq!(drill.results["restored-snapshot"], name);
    assert_eq!(drill.results["canary"], "ok");
    let logs: String = drill.steps.iter().map(|s| s.stderr.as_str()).collect();
    assert!(
        logs.contains(&format!(
            "{}/vault-backups/prod/{name}.snap",
            azure.endpoint()
        )),
        "the drill fetched from Azure:\n{logs}"
    );
    for step in backup.steps.iter().chain(&drill.steps) {
        assert!(
            !step.stderr.contains(azurite::ACCOUNT_KEY),
            "the account key in the {} log",
            step.name
        );
    }
}
