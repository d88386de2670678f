# The recovery's scratch OpenBao (the vault-recover Task's sidecar). kubectl apply -k tekton/
# installs it as the ConfigMap vault-recover-openbao (key config.hcl). It lives as long as the
# recovery's pod: raft on an emptyDir, reachable on the pod's loopback only, so plain HTTP never
# leaves the pod. Keep it on 127.0.0.1: after the restore this node holds production's secrets.
#
# The recovery initializes this node, restores the snapshot into it with snapshot-force, unseals
# it with the source cluster's keys, and makes a root token there from the same keys (the
# recovery keys for an auto-unseal) to read the secrets to recover; the token is revoked before
# the step ends. If the source cluster auto-unseals (transit, a cloud KMS, PKCS#11), add the same
# seal stanza here in an overlay.
storage "raft" {
  path    = "/openbao/data"
  node_id = "recover"
}

listener "tcp" {
  address         = "127.0.0.1:8200"
  cluster_address = "127.0.0.1:8201"
  tls_disable     = true
  # The whole restore upload must arrive within this time: OpenBao stops reading a request body
  # after http_read_timeout (default 30s; a 60 MB upload at 5 MB/s against "3s" failed with 500
  # "failed to read or write snapshot data: ... i/o timeout"). With the default, a snapshot
  # whose upload takes over 30 s fails every drill. 30m allows, at 10 MB/s (a slow node disk
  # behind the spool in /tmp), 1800 s x 10 MB/s = 18 GB; at 50 MB/s, 90 GB. The restore step's
  # own bound, RESTORE_TIMEOUT (default 5m: 300 s x 10 MB/s = 3 GB), ends the upload first:
  # raise that for big snapshots, and this with it if it ever goes past 30m. Safe on a
  # loopback-only listener: nobody else can hold a slow request open.
  http_read_timeout = "30m"
  # The root token for reading the restored secrets is made through the unauthenticated
  # sys/generate-root endpoints, which OpenBao 2.5.3 and later serve only with this set
  # (CVE-2026-5807: anyone reaching the listener could cancel or start an attempt). Nobody but
  # this pod reaches 127.0.0.1 here. Without it the step fails with a 405 naming this setting.
  disable_unauthed_generate_root_endpoints = false
}

api_addr     = "http://127.0.0.1:8200"
cluster_addr = "https://127.0.0.1:8201"
ui           = false
# For a HashiCorp Vault image (scratchImage): Vault mlocks its memory by default, which needs
# IPC_LOCK (all capabilities are dropped here), and HashiCorp recommends disable_mlock = true
# with integrated storage (mlock does not work well with raft's memory-mapped files). OpenBao
# has not used mlock since 2.0: 2.7.2 starts with this config and logs one warning, "unknown or
# unsupported field disable_mlock found in configuration".
disable_mlock = true
