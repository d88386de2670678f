#!/usr/bin/env bash
# Unpacks each step image (an OCI layout written by `make images`) and runs its binary in a
# chroot of the image's root filesystem, as the non-root user the image declares: `--version`
# must print the version and an empty environment must be a configuration error (exit 2).
# Prints each binary's and image's size against the targets (10 MiB binary, 12 MiB image).
# Usage: tests/images.sh OCI_DIR VERSION STEP...
set -euo pipefail
oci=$1 version=$2; shift 2
chroot_bin=$(command -v chroot)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
fail=0
printf '%-16s %12s %12s  %s\n' step binary_MiB image_MiB result
for step in "$@"; do
  bundle=$work/$step
  umoci unpack --rootless --image "$oci/$step:$version" "$bundle" >/dev/null
  root=$bundle/rootfs
  bin=$root/usr/local/bin/$step
  # Nothing but the binary, the CA bundle and the user database.
  extra=$(cd "$root" && find . -type f | sort | grep -vxE "\./usr/local/bin/$step|\./etc/passwd|\./etc/group|\./etc/ssl/certs/ca-certificates.crt" || true)
  [ -z "$extra" ] || { echo "$step: unexpected files in the image: $extra"; fail=1; }
  file -L "$bin" | grep -Eq 'static(-pie)? linked' || { echo "$step: not statically linked: $(file -b "$bin")"; fail=1; }
  user=$(python3 -c 'import json,sys; u=json.load(open(sys.argv[1]))["process"]["user"]; print(u["uid"], u["gid"])' "$bundle/config.json")
  [ "$user" = "65532 65532" ] || { echo "$step: runs as uid/gid $user, want 65532 65532"; fail=1; }
  out=$(env -i "$chroot_bin" --userspec=65532:65532 "$root" "/usr/local/bin/$step" --version)
  [ "$out" = "$step $version" ] || { echo "$step: --version printed '$out'"; fail=1; }
  set +e
  err=$(env -i "$chroot_bin" --userspec=65532:65532 "$root" "/usr/local/bin/$step" 2>&1 >/dev/null); code=$?
  set -e
  [ "$code" = 2 ] || { echo "$step: empty environment exited $code, want 2: $err"; fail=1; }
  err=$(printf '%s\n' "$err" | head -1 | sed 's/^[^ ]* *ERROR [^ ]* //')
  bin_bytes=$(stat -c %s "$bin")
  # The image as a registry stores it: the compressed layers plus config and manifest.
  image_bytes=$(du -cb "$oci/$step/blobs/sha256/"* | tail -1 | cut -f1)
  [ "$bin_bytes" -lt $((10 << 20)) ] || { echo "$step: binary over 10 MiB"; fail=1; }
  [ "$image_bytes" -lt $((12 << 20)) ] || { echo "$step: image over 12 MiB"; fail=1; }
  printf '%-16s %12s %12s  %s\n' "$step" "$(mib "$bin_bytes")" "$(mib "$image_bytes")" "ok: --version, exit 2 on empty env: $err"
done
exit $fail
