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

# The step's first check, before a byte of the snapshot is fetched: may this login restore at
# all? OpenBao's and Vault's built-in "default" policy grants it already; a token created with
# -no-default-policy needs it here.
path "sys/capabilities-self" {
  capabilities = ["update"]
}
