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
