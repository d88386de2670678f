# What the vault-recover Task's login needs on the cluster it writes recovered secrets into (not
# the backup's login, which stays read-only, nor the restore's, which may replace everything):
# for each KV v2 secret to recover, read its metadata (the current version, which the write is
# checked against), read that version (to leave an equal value alone), and write a new version.
#
#   vault policy write vault-recover tekton/vault-recover-policy.hcl
#
# Narrow the paths to what is recovered: "secret/data/app/*" for RECOVER_PATHS=secret/app/, or
# the one secret. The mount here is "secret"; repeat both blocks for another mount. A dry run
# needs only the two reads. The scratch node, where the snapshot is read, needs no policy: the
# step makes its own root token there from the source cluster's keys and revokes it.
path "secret/metadata/*" {
  capabilities = ["read"]
}

path "secret/data/*" {
  capabilities = ["read", "create", "update"]
}
