# kvsteer: the entry point. `make demo` and `make test` are all a newcomer needs.
BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc)
# CI builds treat warnings as errors.
WERROR     ?= $(if $(CI),ON,OFF)
# CI: every optional dependency present, or the configuration fails (no suite silently left out).
REQUIRE_ALL ?= $(if $(CI),ON,OFF)
SANITIZE   ?= OFF
# `make fuzz` runs each libFuzzer target for FUZZ_RUNS executions (10M), stopping one that has not
# got there after FUZZ_SECONDS; the report gives each one's count, and a target short of FUZZ_RUNS
# fails it. The targets run side by side, JOBS at a time (the slowest, kvsteer-control-fuzz-config,
# needs about 1.5 h of one core for 10M; README.md). FUZZ_RUNS=-1: as many as FUZZ_SECONDS allow.
# `make fuzz-smoke` (CI) runs each for FUZZ_SMOKE_SECONDS.
FUZZ_RUNS          ?= 10000000
FUZZ_SECONDS       ?= 10800
FUZZ_SMOKE_SECONDS ?= 5

# Every Debian package the project needs to build, test, benchmark and demo.
PKGS := dpdk dpdk-dev libdpdk-dev libbpf-dev bpftool libxdp-dev xdp-tools \
        libboost-program-options-dev libspdlog-dev libfmt-dev libgtest-dev \
        libbenchmark-dev libxxhash-dev pkg-config clang llvm libclang-rt-14-dev \
        cmake ninja-build g++ make iproute2 ethtool curl wrk haproxy python3 \
        netcat-openbsd procps psmisc iputils-ping tcpdump \
        nlohmann-json3-dev libzmq3-dev libmsgpack-dev python3-matplotlib \
        libssl-dev libboost-dev clang-format etcd-server etcd-client bird2 nftables

.PHONY: FORCE all deps configure build test e2e chaos bench bench-smoke fuzz fuzz-build fuzz-smoke demo study clean help \
        format format-check

all: build

help:
	@echo "make demo        install, build, run round-robin vs kvsteer on 8 emulated GPU servers"
	@echo "make test        install missing packages, build, run every test"
	@echo "make bench       run the benchmarks, write $(BUILD)/bench/results.json"
	@echo "make bench-smoke a short benchmark run (what CI checks)"
	@echo "make chaos       the chaos suite (faults in namespaces), report kept in docs/chaos/ (root)"
	@echo "make study       regenerate the routing-policy study in docs/study/ (simulator)"
	@echo "make fuzz        run each libFuzzer target for $(FUZZ_RUNS) executions (at most FUZZ_SECONDS=$(FUZZ_SECONDS) s)"
	@echo "make format      apply .clang-format to every C/C++ source"
	@echo "make format-check  fail if any C/C++ source is not formatted (what CI checks)"
	@echo "make fuzz-smoke  build the libFuzzer targets, run each for $(FUZZ_SMOKE_SECONDS) s (what CI checks)"
	@echo "make deps        install missing Debian packages (apt-get, non-interactive)"
	@echo "make clean       remove build trees"

deps:
	@missing=$$(for p in $(PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "[deps] installing:" $$missing; \
	    if [ "$$(id -u)" != 0 ]; then echo "[deps] need root to apt-get install" >&2; exit 1; fi; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "[deps] all packages present"; fi

# The build tree follows BUILD_TYPE, WERROR and SANITIZE: one configured with other values is
# configured again (they applied only when the tree was first made: `make test WERROR=ON` on a
# tree built without it checked nothing).
KVS_CONFIG := BUILD_TYPE=$(BUILD_TYPE) WERROR=$(WERROR) SANITIZE=$(SANITIZE) REQUIRE_ALL=$(REQUIRE_ALL)
$(BUILD)/.kvs-config: FORCE
	@mkdir -p $(BUILD); [ "$$(cat $@ 2>/dev/null)" = "$(KVS_CONFIG)" ] || echo "$(KVS_CONFIG)" >$@

$(BUILD)/build.ninja: CMakeLists.txt $(BUILD)/.kvs-config
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DKVS_WERROR=$(WERROR) -DKVS_SANITIZE=$(SANITIZE) -DKVS_REQUIRE_ALL=$(REQUIRE_ALL)
	touch $@
	ln -sf $(BUILD)/compile_commands.json compile_commands.json

FORCE:

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure --timeout 600 || \
	    { $(CURDIR)/tests/failure_digest.sh .; exit 1; }

e2e: build
	cd $(BUILD) && ctest --output-on-failure -L e2e --timeout 600

# The chaos suite, full length (tests/chaos/run.sh; `make test` runs its short form as a ctest).
# The report is kept in docs/chaos/ whether the run passed or not; the exit status is the run's.
chaos: build
	mkdir -p $(BUILD)/chaos docs/chaos
	BUILD=$(BUILD) tests/chaos/run.sh full; rc=$$?; \
	    cp $(BUILD)/chaos/REPORT.md $(BUILD)/chaos/results.json docs/chaos/ && exit $$rc

bench: build
	mkdir -p $(BUILD)/bench
	BUILD=$(BUILD) tools/bench/run.sh full

bench-smoke: build
	mkdir -p $(BUILD)/bench
	BUILD=$(BUILD) tools/bench/run.sh smoke

demo: build
	BUILD=$(BUILD) tools/demo/demo.sh

study: build
	SIM=$(BUILD)/bin/kvsteer-sim tools/sim/study.sh

# The fuzz tree (clang) builds only the libFuzzer targets (kvsteer-fuzz, tests/CMakeLists.txt):
# the tests labelled fuzz need nothing else.
fuzz-build: deps
	cmake -S . -B $(BUILD)-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
	cmake --build $(BUILD)-fuzz -j $(JOBS) --target kvsteer-fuzz

# Every fuzz test there is: one missing from a run (a target dropped from the build) fails it.
FUZZ_TESTS := core_fuzz_locator_smoke control_fuzz_kv_events_smoke control_fuzz_prometheus_smoke \
              control_fuzz_http_response_smoke control_fuzz_config_smoke
# $(call fuzz_run,SECONDS,RUNS): every test labelled fuzz for RUNS executions or SECONDS, JOBS at a
# time, then each target's execution count (libFuzzer's final stats, which ctest keeps in its log);
# a target without one, short of RUNS (when RUNS > 0) or, in a smoke run, under 100 executions (an
# early exit), or one of FUZZ_TESTS not run, fails (awk's status: no pipe to hide it).
define fuzz_run
	cd $(BUILD)-fuzz && FUZZ_SECONDS=$(1) FUZZ_RUNS=$(2) ctest -j $(JOBS) --output-on-failure --no-tests=error -L fuzz --timeout $$(( $(1) + 300 ))
	@awk -v want=$(2) -v expect="$(FUZZ_TESTS)" '/^[0-9]+\/[0-9]+ Test: /{t=$$3; all[t]=1} \
	     /^stat::number_of_executed_units:/{n[t]=$$2} /^stat::average_exec_per_sec:/{r[t]=$$2} \
	     END{bad=!length(all); k=split(expect, e, " "); for(i=1;i<=k;i++) if(!(e[i] in all)) {printf "[fuzz] %s: not run\n", e[i] > "/dev/stderr"; bad=1} \
	         for(t in all){if(!(t in n)) {printf "[fuzz] %s: no execution count\n", t > "/dev/stderr"; bad=1; continue} \
	         short=(want>0 && n[t]<want) || (want<0 && n[t]<100); if(short) bad=1; \
	         printf "[fuzz] %s: %s executions (%s/s)%s\n", t, n[t], r[t], short ? " SHORT of " (want>0 ? want : 100) : ""} exit bad}' \
	    $(BUILD)-fuzz/Testing/Temporary/LastTest.log > $(BUILD)-fuzz/REPORT.txt; \
	    rc=$$?; cat $(BUILD)-fuzz/REPORT.txt; exit $$rc
endef

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_SECONDS),$(FUZZ_RUNS))

fuzz-smoke: fuzz-build
	$(call fuzz_run,$(FUZZ_SMOKE_SECONDS),-1)

# Every tracked C/C++ source, formatted by the one .clang-format.
FORMAT_FILES = $(shell git ls-files '*.c' '*.h' '*.cc' '*.cpp' 2>/dev/null)

format:
	clang-format -i $(FORMAT_FILES)

format-check: deps
	@test -n "$(strip $(FORMAT_FILES))" || { echo "[format] no files to check (git ls-files found none)" >&2; exit 1; }
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "[format] $(words $(FORMAT_FILES)) files formatted"

clean:
	rm -rf $(BUILD) $(BUILD)-* compile_commands.json
