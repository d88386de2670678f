# What the vault-restore Task's login needs on the target cluster (not the backup's login, which
# stays read-only): read the raft snapshot (the safety snapshot of the target's prior state,
# taken before anything is restored) and restore one.
#
#   vault policy write vault-restore tekton/vault-restore-policy.hcl
#
# Keep it on a login used only for restores, e.g. a short-lived token in the Secret named by the
# Task's targetSecret param.
path "sys/storage/raft/snapshot" {
  capabilities = ["read", "update"]
}

# force=true: a snapshot from another cluster than the target.
path "sys/storage/raft/snapshot-force" {
  capabilities = ["update"]
}
