# The commands a person types. `make demo` and `make test` set everything up
# on a fresh Debian machine (Python venv, Docker engine, test images) first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
DISTRO ?= bookworm
SCENARIOS ?= default venv container
# `make test-platforms`: the Debian releases the role supports, and what runs on each.
PLATFORMS ?= bullseye bookworm trixie
PLATFORM_SCENARIOS ?= default container
# `make test-ansible`: the ansible-core series that run on this Python, each
# pinned in tests/requirements/ansible-SERIES.txt. fast: the default scenario's
# whole sequence, verified by its host proofs (test_default.py); full: also
# the guardrails (test_guardrails.py).
ANSIBLE_SERIES ?= 2.15 2.16 2.17 2.18 2.19
ANSIBLE_VERIFY ?= fast
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The playbooks name the role as its users do (backlogops.uwsgi). Ansible finds
# this checkout under that name through a link kept outside the tree (one per
# checkout), so the tree holds no link back into itself and an install carries none.
ROLES_LINK_DIR := $(HOME)/.cache/backlogops-uwsgi/$(shell printf '%s' '$(CURDIR)' | sha256sum | cut -c1-12)/roles
export ANSIBLE_ROLES_PATH := $(ROLES_LINK_DIR)
export MOLECULE_DISTRO := $(DISTRO)
export PY_COLORS := 1
export ANSIBLE_FORCE_COLOR := 1

step = @printf '\n\033[1m==> %s\033[0m\n' "$(1)"

.PHONY: help venv docker images docs lint unit test-install release test test-extended molecule test-fleet test-platforms test-ansible demo demo-clean bench bench-reload bench-fleet clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/:.*## /\t/'

venv: $(VENV)/.installed $(ROLES_LINK_DIR)/backlogops.uwsgi  ## Create the pinned Python venv (.venv) and the roles path link

$(ROLES_LINK_DIR)/backlogops.uwsgi:
	@mkdir -p $(ROLES_LINK_DIR) && ln -sfn $(CURDIR) $@

$(VENV)/.installed: requirements-test.txt
	$(call step,Python venv with the pinned test tools (requirements-test.txt))
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	@touch $@

docker:  ## Install and start Docker from Debian's packages if needed
	$(call step,Docker engine)
	@tests/harness/docker-up.sh

images: docker  ## Build the test images for DISTRO (default bookworm: a host with systemd, a container base without) if missing
	$(call step,Test image uwsgi-role-test:$(DISTRO))
	@tests/harness/build-image.sh $(DISTRO)
	@tests/harness/build-image.sh $(DISTRO) container

docs: venv  ## Regenerate the README's variable table (meta/argument_specs.yml) and example playbooks (playbooks/)
	python tests/harness/readme_vars.py

lint: venv  ## yamllint, ruff, ansible-lint (production profile), README vs specs and playbooks
	$(call step,README: variable table and defaults vs meta/argument_specs.yml; example playbooks vs playbooks/)
	python tests/harness/readme_vars.py --check
	$(call step,yamllint)
	yamllint --strict .
	$(call step,ruff: the role's Python and the tests and benchmarks)
	ruff check .
	$(call step,ansible-lint: the production profile set in .ansible-lint)
	ansible-lint

test-install: venv  ## The role as ansible-galaxy installs it at the README's release tag: lean, no loop, lints clean in a user's project
	$(call step,Install tier: ansible-galaxy role install at the README's release, then lint and syntax-check as a user)
	pytest -q -p no:cacheprovider tests/install

# `make release VERSION=1.1.0`: the checks of CONTRIBUTING.md's "Releasing", then the tag.
release: venv  ## Tag release VERSION (its CHANGELOG section and the README's version must be in place, the tree clean)
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=X.Y.Z"; exit 1; }
	@git diff --quiet HEAD || { echo "commit everything first"; exit 1; }
	@grep -q '^## $(VERSION) - ' CHANGELOG.md || { echo "CHANGELOG.md has no '## $(VERSION) - DATE' section"; exit 1; }
	@grep -q '^    version: v$(VERSION)$$' README.md || { echo "README.md's requirements.yml does not install v$(VERSION)"; exit 1; }
	python tests/harness/readme_vars.py --check
	git tag -a v$(VERSION) -m "backlogops.uwsgi $(VERSION)"
	pytest -q -p no:cacheprovider tests/install
	@echo "tagged v$(VERSION); push it with: git push origin v$(VERSION)"

unit: venv  ## Unit tests of the role's parsers and decisions (tests/unit), in seconds
	$(call step,Unit tests: parsers against captured host output, the role's decisions)
	pytest -q -p no:cacheprovider tests/unit

# A failed scenario ends with the names of its failed tests (from the verifier's
# JUnit report), below molecule's own summary where a log's tail shows them.
REPORT_DIR := $(dir $(ROLES_LINK_DIR))reports
molecule: venv images  ## Run the molecule SCENARIOS (default: default venv container) on DISTRO
	@set -e; mkdir -p $(REPORT_DIR); for s in $(SCENARIOS); do \
	  printf '\n\033[1m==> molecule test -s %s (%s)\033[0m\n' "$$s" "$(DISTRO)"; \
	  rm -f $(REPORT_DIR)/$$s.xml; \
	  PYTEST_ADDOPTS="$$PYTEST_ADDOPTS --junitxml=$(REPORT_DIR)/$$s.xml" molecule test -s $$s || { \
	    printf '\n\033[1m==> molecule test -s %s failed:\033[0m\n' "$$s"; \
	    python tests/harness/junit_failures.py $(REPORT_DIR)/$$s.xml; exit 1; }; \
	done

test: lint unit test-install  ## Lint, unit tests, the install tier, then every molecule scenario (SCENARIOS) on DISTRO, without the extended tier
	@PYTEST_ADDOPTS="-m 'not extended'" $(MAKE) --no-print-directory molecule

test-extended: venv images  ## The extended tier (the operator's worst week beyond make test) of every scenario in SCENARIOS
	@PYTEST_ADDOPTS="-m extended" $(MAKE) --no-print-directory molecule

test-fleet: venv images  ## The fleet scenario: rolling rollout across 5 hosts behind nginx (about 10-15 min)
	@$(MAKE) --no-print-directory molecule SCENARIOS=fleet

test-platforms: venv docker  ## PLATFORM_SCENARIOS on every Debian release in PLATFORMS
	@set -e; for d in $(PLATFORMS); do \
	  start=$$SECONDS; \
	  $(MAKE) --no-print-directory molecule SCENARIOS="$(PLATFORM_SCENARIOS)" DISTRO=$$d; \
	  printf '\n\033[1m==> %s passed in %d s\033[0m\n' "$$d" "$$((SECONDS - start))"; \
	done

.cache/ansible-%/.installed: tests/requirements/ansible-%.txt
	$(call step,Python venv with ansible-core $* (tests/requirements/ansible-$*.txt))
	python3 -m venv .cache/ansible-$*
	.cache/ansible-$*/bin/pip install --quiet --disable-pip-version-check -r $<
	@touch $@

# Each series' venv is a prerequisite, not a recursive make: the loop below
# runs molecule, so it must never be part of a recipe that `make -n` executes.
test-ansible: venv images $(foreach v,$(ANSIBLE_SERIES),.cache/ansible-$(v)/.installed)  ## The default scenario on DISTRO with each ansible-core series in ANSIBLE_SERIES
	@failed=""; for v in $(ANSIBLE_SERIES); do \
	  printf '\n\033[1m==> molecule test -s default with ansible-core %s (%s, %s)\033[0m\n' "$$v" "$(DISTRO)" "$(ANSIBLE_VERIFY)"; \
	  start=$$SECONDS; \
	  if PATH="$(CURDIR)/.cache/ansible-$$v/bin:$$PATH" \
	     PYTEST_ADDOPTS="$(if $(filter fast,$(ANSIBLE_VERIFY)),-k 'not test_guardrails')" \
	     molecule test -s default; then \
	    printf '\n\033[1m==> ansible-core %s passed in %d s\033[0m\n' "$$v" "$$((SECONDS - start))"; \
	  else \
	    printf '\n\033[1;31m==> ansible-core %s FAILED after %d s\033[0m\n' "$$v" "$$((SECONDS - start))"; \
	    failed="$$failed $$v"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then printf '\nFailed with ansible-core:%s\n' "$$failed"; exit 1; fi

demo: venv images  ## Show the problem and the role's fix on a local container host (DEMO_KEEP=0 removes it)
	$(call step,Demo host: container uwsgi-demo (net.core.somaxconn=128) with the classic setup)
	python benchmarks/demo.py setup
	$(call step,Before: backlog in effect; a burst of 1000 connects (peak queue read by the sampler); wrk at 400 connections through nginx)
	python benchmarks/demo.py measure before
	$(call step,Hand over: the role never takes over a program it did not write; the classic flaskapp program goes first)
	python benchmarks/demo.py handover
	$(call step,Apply the role: ansible-playbook -i benchmarks/inventory/demo.yml playbooks/site.yml)
	ANSIBLE_PIPELINING=true ansible-playbook -i benchmarks/inventory/demo.yml playbooks/site.yml
	$(call step,After: the same measurements (the role's sampler); the fleet report playbooks/report.yml before nginx restarts)
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

bench: venv images $(VENV)/.bench-installed  ## Bursts, HTTP load, Ansible cost and the sampler's CPU on local containers; results in benchmarks/results/
	$(call step,Benchmark on containers uwsgi-bench*: bursts; HTTP load through nginx; Ansible cost)
	python benchmarks/bench.py
	$(call step,Requests lost while a change is applied: stop/start against the graceful path)
	python benchmarks/apply_bench.py
	$(call step,New code under load: prefork HUP against the role's deploy (chain reload), fast and slow imports)
	python benchmarks/deploy_bench.py
	$(call step,Every kind of change under load: requests, latency and the workers' memory; 20 deploys at -c64)
	python benchmarks/reload_bench.py
	$(call step,The listen-queue sampler's CPU cost: 10 apps at 10 Hz; 60 s inside (--bench) and 60 s outside (/proc))
	python benchmarks/sampler_bench.py
	$(call step,Ansible cost of a rerun with 2 and 40 apps against a fact-only play; beside the role at its baseline commit)
	python benchmarks/cost_bench.py

bench-reload: venv images $(VENV)/.bench-installed  ## Only the reload table (benchmarks/reload_bench.py); results in benchmarks/results/reload.md
	python benchmarks/reload_bench.py

bench-fleet: venv images  ## Wall time to converge 1, 5 and 10 hosts and rerun; results in benchmarks/results/fleet.md
	$(call step,Fleet benchmark on containers uwsgi-fbench-*: 1, 5 and 10 hosts)
	python benchmarks/fleet_bench.py

clean:  ## Remove the venv and the test containers
	-molecule destroy --all 2>/dev/null
	rm -rf $(VENV)
