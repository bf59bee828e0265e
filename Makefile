# Entry points; each is a script under scripts/ or testenv/ that works without make too.
.PHONY: demo test bench image testenv crds lint

## demo: a local control plane and S3 server with s3connect's resources applied
demo:
	scripts/demo

## test: everything CI runs: formatting, lints, unit and integration tests
test:
	scripts/test

## bench: scale, rotation, steady-state, idle and S3 request CPU benchmarks (not part of test)
bench:
	scripts/bench

## image: the container image as an OCI archive (target/s3connect-image.tar), with buildah, as root
image:
	scripts/image

## testenv: install (build) the test environment's pinned components
testenv:
	testenv/setup

## crds: regenerate crds/ (and the chart's copy) from the Rust types, and docs/api.md from them
crds:
	cargo run --quiet --locked -- crd > crds/s3connect.yaml
	cp crds/s3connect.yaml charts/s3connect/files/crds.yaml
	scripts/api-reference

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
