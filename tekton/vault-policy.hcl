# Least privilege for the vault-backup snapshot step (vault-snapshot).
#
# The step reads sys/leader and sys/seal-status, which need no token, and then reads the raft
# snapshot from the leader. Nothing else is needed: no list, no write, no sudo.
#
#   vault policy write vault-backup tekton/vault-policy.hcl
#
# Attach it to the login the step uses (VAULT_TOKEN, an AppRole role, or a Kubernetes auth role).
path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}

# Optional: the restore canary (CANARY_PATH=vault-backup/canary on the KV v2 mount `secret`,
# CANARY_MOUNT). The snapshot step writes {"taskrun", "written_at"} there just before each
# snapshot (create, update); the restore drill logs in to the restored copy with this same login
# and reads it back (read). Leave this out, with CANARY_PATH unset, to keep the login read-only;
# change the path if you set another CANARY_MOUNT or CANARY_PATH.
path "secret/data/vault-backup/canary" {
  capabilities = ["create", "update", "read"]
}

# Optional: the cluster's health before each snapshot (raft autopilot: healthy, failure
# tolerance, voters), recorded in the manifest and pushed as metrics. Without it the step logs
# one warning and the manifest says the health is unknown; the snapshot goes on.
path "sys/storage/raft/autopilot/state" {
  capabilities = ["read"]
}
