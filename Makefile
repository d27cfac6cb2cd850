# The commands a person types. `make demo` and `make test` set everything up
# on a fresh Debian machine (Python venv, Docker engine, test images) first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
DISTRO ?= bookworm
SCENARIOS ?= default fleet
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Playbooks name the role as Galaxy users do (backlogops.uwsgi): point the
# roles path at a link to this checkout, whatever its folder is called.
export ANSIBLE_ROLES_PATH := $(CURDIR)/.cache/roles
export MOLECULE_DISTRO := $(DISTRO)
export PY_COLORS := 1
export ANSIBLE_FORCE_COLOR := 1

step = @printf '\n\033[1m==> %s\033[0m\n' "$(1)"

.PHONY: help venv docker images docs lint test molecule demo clean demo-clean bench bench-fleet

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/:.*## /\t/'

venv: $(VENV)/.installed .cache/roles/backlogops.uwsgi  ## Create the pinned Python venv (.venv)

$(VENV)/.installed: requirements-test.txt
	$(call step,Python venv with the pinned test tools (requirements-test.txt))
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	@touch $@

.cache/roles/backlogops.uwsgi:
	@mkdir -p .cache/roles && ln -sfn ../.. $@

docker:  ## Install and start Docker from Debian's packages if needed
	$(call step,Docker engine)
	@tests/harness/docker-up.sh

images: docker  ## Build the test image for DISTRO (default bookworm) if missing
	$(call step,Test image uwsgi-role-test:$(DISTRO))
	@tests/harness/build-image.sh $(DISTRO)

docs: venv  ## Regenerate the README's variable table from meta/argument_specs.yml
	python tests/harness/readme_vars.py

lint: venv  ## yamllint, ansible-lint (production profile), README table vs specs
	$(call step,README variable table and defaults vs meta/argument_specs.yml)
	python tests/harness/readme_vars.py --check
	$(call step,yamllint)
	yamllint --strict .
	$(call step,ansible-lint --profile production)
	ansible-lint --profile production

molecule: venv images  ## Run the molecule SCENARIOS (default: default) on DISTRO
	@set -e; for s in $(SCENARIOS); do \
	  printf '\n\033[1m==> molecule test -s %s (%s)\033[0m\n' "$$s" "$(DISTRO)"; \
	  molecule test -s $$s; \
	done

test: lint molecule  ## Everything: lint, then every molecule scenario

demo: venv images  ## Show the problem and the role's fix on a local container host (DEMO_KEEP=0 removes it)
	$(call step,Demo host: container uwsgi-demo (net.core.somaxconn=128) with the classic setup)
	python benchmarks/demo.py setup
	$(call step,Before: backlog in effect; a burst of 1000 connects; wrk at 400 connections through nginx)
	python benchmarks/demo.py measure before
	$(call step,Apply the role: ansible-playbook -i benchmarks/inventory/demo.yml playbooks/site.yml)
	ANSIBLE_PIPELINING=true ansible-playbook -i benchmarks/inventory/demo.yml playbooks/site.yml
	$(call step,After: the same measurements)
	python benchmarks/demo.py measure after
	$(call step,Before and after)
	python benchmarks/demo.py report
	@if [ "$${DEMO_KEEP:-1}" = 0 ]; then docker rm -f uwsgi-demo >/dev/null && echo "uwsgi-demo removed"; \
	else echo "uwsgi-demo kept: docker exec -it uwsgi-demo bash; make demo-clean removes it"; fi

demo-clean:  ## Remove the demo's container
	$(call step,Remove the demo container uwsgi-demo)
	-docker rm -f uwsgi-demo
	rm -rf .cache/demo

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.installed
	$(call step,matplotlib for the benchmark's plot (requirements-bench.txt))
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	@touch $@

bench: venv images $(VENV)/.bench-installed  ## Bursts, HTTP load and Ansible cost on local containers; results in benchmarks/results/
	$(call step,Benchmark on containers uwsgi-bench*: bursts; HTTP load through nginx; Ansible cost)
	python benchmarks/bench.py

bench-fleet: venv images  ## Wall time to converge 1, 5 and 10 hosts and rerun; results in benchmarks/results/fleet.md
	$(call step,Fleet benchmark on containers uwsgi-fbench-*: 1, 5 and 10 hosts)
	python benchmarks/fleet_bench.py

clean:  ## Remove the venv and the test containers
	-molecule destroy --all 2>/dev/null
	rm -rf $(VENV)
