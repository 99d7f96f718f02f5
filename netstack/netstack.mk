# netstack: libbnet.a (packet layer and RC queue pair, pure C, no DPDK) and,
# when pkg-config finds libdpdk, libbnet-dpdk.a (the DPDK port, ARP, the
# polling loop) and bnet-peer, the two-process test and benchmark tool.
bnet_SRCS := netstack/crc.c netstack/pkt.c netstack/qp.c
BNET_LIB := $(LIBDIR)/libbnet.a
$(BNET_LIB): $(call objs,$(bnet_SRCS))
ALL_BINS += $(BNET_LIB)

$(BIN)/test-bnet-pkt: $(call objs,netstack/test-bnet-pkt.c) $(BNET_LIB)
$(BIN)/test-bnet-qp: $(call objs,netstack/test-bnet-qp.c) $(BNET_LIB)
UNIT_TESTS += $(BIN)/test-bnet-pkt $(BIN)/test-bnet-qp
# the kernel-TCP baseline of tests/bench/bench-netstack.sh
$(BIN)/bnet-tcpstream: $(call objs,netstack/tcpstream.c)
ALL_BINS += $(BIN)/bnet-tcpstream
CFLAGS_netstack := -Itests

ifneq ($(shell pkg-config --exists libdpdk 2>/dev/null && echo yes),)
BNET_DPDK_LIB := $(LIBDIR)/libbnet-dpdk.a
$(BNET_DPDK_LIB): $(call objs,netstack/port.c netstack/verbs.c)
ALL_BINS += $(BNET_DPDK_LIB) $(BIN)/bnet-peer
$(BIN)/bnet-peer: $(call objs,netstack/peer.c) $(BNET_DPDK_LIB) $(BNET_LIB)
LDLIBS_bnet-peer := $(shell pkg-config --libs libdpdk)
$(OBJ)/netstack/port.o $(OBJ)/netstack/peer.o: CFLAGS += $(shell pkg-config --cflags libdpdk) -Wno-error=deprecated-declarations

# libbcoll's verbs transport (BCOLL_TRANSPORT=verbs, collectives/verbs*.c)
# over libbnet: linked into bcoll-bench as objects, since comm.c only holds a
# weak reference to it.
bcoll_verbs_SRCS := collectives/verbs.c collectives/verbs_setup.c
$(BIN)/bcoll-bench: $(call objs,$(bcoll_verbs_SRCS)) $(BNET_DPDK_LIB) $(BNET_LIB)
LDLIBS_bcoll-bench := $(shell pkg-config --libs libdpdk) -ldl

# libbcoll's test suite, unchanged, over the verbs transport (setenv wrapped;
# see netstack/test-bcoll-verbs.c); run by tests/collectives/test-verbs.sh
$(BIN)/test-bcoll-verbs: $(call objs,collectives/test-bcoll.c netstack/test-bcoll-verbs.c $(bcoll_verbs_SRCS)) $(BCOLL_LIB) $(BNET_DPDK_LIB) $(BNET_LIB)
LDLIBS_test-bcoll-verbs := -Wl,--wrap=setenv $(shell pkg-config --libs libdpdk) -ldl -lm
ALL_BINS += $(BIN)/test-bcoll-verbs
endif
