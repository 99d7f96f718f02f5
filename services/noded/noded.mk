# services/noded — bursar-noded, the node agent, and its unit tests.
noded_SRCS := $(filter-out services/noded/test-% services/noded/arprobe.c,$(wildcard services/noded/*.c))
noded_LIB_SRCS := $(filter-out services/noded/noded.c,$(noded_SRCS))
$(BIN)/bursar-noded: $(call objs,$(noded_SRCS)) $(COMMON_LIB)
ALL_BINS += $(BIN)/bursar-noded

$(BIN)/test-noded-meter: $(call objs,services/noded/test-meter.c $(noded_LIB_SRCS)) $(COMMON_LIB)
$(BIN)/test-noded-spool: $(call objs,services/noded/test-spool.c $(noded_LIB_SRCS)) $(COMMON_LIB)
$(BIN)/test-noded-recover: $(call objs,services/noded/test-recover.c $(noded_LIB_SRCS)) $(COMMON_LIB)
UNIT_TESTS += $(BIN)/test-noded-meter $(BIN)/test-noded-spool $(BIN)/test-noded-recover
# the allreduce probe: two ranks of libbcoll on this node (noded runs it next to itself)
$(BIN)/bursar-arprobe: $(call objs,services/noded/arprobe.c) $(LIBDIR)/libbcoll.a
ALL_BINS += $(BIN)/bursar-arprobe
$(BIN)/test-noded-energy: $(call objs,services/noded/test-energy.c $(noded_LIB_SRCS)) $(COMMON_LIB)
UNIT_TESTS += $(BIN)/test-noded-energy
