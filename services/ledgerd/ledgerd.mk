# services/ledgerd — bursar-ledgerd, the hash-chained cost ledger, and its unit tests.
ledgerd_SRCS := $(filter-out services/ledgerd/test-%.c,$(wildcard services/ledgerd/*.c))
ledgerd_LIB_SRCS := $(filter-out services/ledgerd/ledgerd.c,$(ledgerd_SRCS))
$(BIN)/bursar-ledgerd: $(call objs,$(ledgerd_SRCS)) $(COMMON_LIB)
ALL_BINS += $(BIN)/bursar-ledgerd

$(BIN)/test-ledgerd-chain: $(call objs,services/ledgerd/test-chain.c $(ledgerd_LIB_SRCS)) $(COMMON_LIB)
$(BIN)/test-ledgerd-ingest: $(call objs,services/ledgerd/test-ingest.c $(ledgerd_LIB_SRCS)) $(COMMON_LIB)
UNIT_TESTS += $(BIN)/test-ledgerd-chain $(BIN)/test-ledgerd-ingest
