# The restore drill's scratch OpenBao (the vault-restore-drill Task's sidecar). kubectl apply -k
# tekton/ installs it as the ConfigMap vault-restore-drill-openbao (key config.hcl). It lives as
# long as the drill's pod: raft on an emptyDir, reachable on the pod's loopback only, so plain
# HTTP never leaves the pod.
#
# The drill initializes this node, restores the snapshot into it with snapshot-force and unseals
# it with the source cluster's keys. If the source cluster auto-unseals (transit, a cloud KMS,
# PKCS#11), add the same seal stanza here in an overlay: the restored data can only be unsealed
# by the seal it was sealed with.
storage "raft" {
  path    = "/openbao/data"
  node_id = "restore-drill"
}

listener "tcp" {
  address         = "127.0.0.1:8200"
  cluster_address = "127.0.0.1:8201"
  tls_disable     = true
}

api_addr     = "http://127.0.0.1:8200"
cluster_addr = "https://127.0.0.1:8201"
ui           = false
