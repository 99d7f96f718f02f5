# bursar — top-level build. One fragment per component (*.mk); this file holds
# only the shared rules. `make deps | make | make test | make demo | make bench`.
#
#   make            build everything into build/ (bin/, lib/, obj/)
#   make test       deps, build, unit tests under ASan+UBSan, then the
#                   integration and end-to-end tests; prints "N passed, N failed"
#   make demo       deps, build, run the whole job path on loopback
#   V=1             show the commands

BUILD ?= build
SAN ?=
V ?=

ifeq ($(V),1)
Q :=
else
Q := @
endif

CC := gcc
PKGS := libsystemd sqlite3 libmicrohttpd jansson libarchive libcurl libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation -Wno-missing-field-initializers -MMD -MP \
	  -D_GNU_SOURCE -fno-strict-aliasing -Iservices/common -Icollectives $(PKG_CFLAGS)
LDFLAGS :=
LDLIBS := $(PKG_LIBS) -lm -lpthread

ifeq ($(SAN),1)
CFLAGS += -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

BIN := $(BUILD)/bin
LIBDIR := $(BUILD)/lib
OBJ := $(BUILD)/obj

# objs(SRCS): the object files for a list of sources.
objs = $(patsubst %.c,$(OBJ)/%.o,$(1))

ALL_BINS :=
UNIT_TESTS :=

.PHONY: all deps bench-deps test demo bench gpu-check clean unit-tests
all:

include services/common/common.mk
include collectives/collectives.mk
include services/ledgerd/ledgerd.mk
include services/admitd/admitd.mk
include services/noded/noded.mk
include services/consoled/consoled.mk
include services/trainer/trainer.mk
-include services/trainer/cuda/cuda.mk
include services/ctl/ctl.mk
-include services/replay/replay.mk
-include netstack/netstack.mk
include tests/tests.mk

all: $(ALL_BINS)
unit-tests: $(UNIT_TESTS)

$(OBJ)/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(CFLAGS_$(subst /,_,$(patsubst %/,%,$(dir $<)))) -c $< -o $@

$(LIBDIR)/%.a:
	@mkdir -p $(@D)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# Debian packages the build, the tests and the demo need. Quick when present.
# Node.js and npm count as present when the commands exist (some machines carry
# a Node.js build of their own that bundles npm and conflicts with Debian's).
DEB_PKGS := gcc make pkg-config libsystemd-dev libsqlite3-dev sqlite3 libmicrohttpd-dev \
	libjansson-dev libarchive-dev libcurl4-openssl-dev libssl-dev libopenblas-dev \
	libzstd-dev zstd python3-numpy python3-torch chromium curl jq procps \
	libdpdk-dev dpdk tshark iproute2 libibverbs-dev rdma-core
deps:
	@missing=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(DEB_PKGS) 2>/dev/null \
		| awk '$$1=="ii"{print $$2}' | sort > /tmp/.bursar-have; \
		for p in $(DEB_PKGS); do grep -qx "$$p" /tmp/.bursar-have || echo $$p; done; \
		command -v node >/dev/null || echo nodejs; command -v npm >/dev/null || echo npm); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@$(MAKE) --no-print-directory -s -C tests/browser deps

test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 unit-tests
	$(Q)BUILD=$(BUILD) tests/run

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) tests/demo.sh

# Baselines the benchmarks compare against (Open MPI, Slurm); not needed by tests.
BENCH_PKGS := openmpi-bin libopenmpi-dev slurm-wlm munge hyperfine
bench-deps: deps
	@missing=$$(for p in $(BENCH_PKGS); do dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null \
		| grep -q '^ii' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "bench-deps: installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

bench: bench-deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) tests/bench/run

# What needs an NVIDIA GPU (CUDA checks, the trainer on the GPU, a GPU node's
# agent, transformers, the H100 benchmark), in one run; skipped without one.
gpu-check:
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) tests/gpu/check.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Every binary links its objects and libraries the same way.
$(BIN)/%:
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $(LDFLAGS_$(notdir $@)) -o $@ $(filter %.o,$^) $(filter %.a,$^) $(LDLIBS) $(LDLIBS_$(notdir $@))
