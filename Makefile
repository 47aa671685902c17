# k1s: the two commands the README opens with, and the checks CI runs.
#   make run    build and start a server on this machine (embedded store, data in /var/lib/k1s)
#   make test   install what the tests need when missing, then run every test
CARGO ?= cargo
PARTS := apiserver scheduler controllers kubelet etcd

.PHONY: run runtime-deps test deps unit features lint bench

run: runtime-deps
	$(CARGO) build --release
	./target/release/k1s server

# The container runtime the kubelet supervises (Debian's packages).
runtime-deps:
	bash packaging/runtime-deps.sh

deps:
	bash packaging/test-deps.sh

test: deps features
	$(CARGO) test --all-targets
	# The API and client suites once more, on the etcd backend.
	K1S_TEST_DATASTORE=etcd $(CARGO) test --test api_serving --test api_resources --test api_compat_kubectl --test api_compat_python --test api_compat_kube_rs

# Each part compiles alone, without warnings.
features:
	@for p in $(PARTS); do \
	  echo "cargo clippy --no-default-features --features $$p"; \
	  $(CARGO) clippy -q --no-default-features --features $$p -- -D warnings || exit 1; \
	done

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

bench:
	$(CARGO) build --release
	RUST_LOG=warn ./target/release/k1s bench store
	RUST_LOG=warn ./target/release/k1s bench api
