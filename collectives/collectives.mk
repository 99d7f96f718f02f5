# collectives: libbcoll.a (ring allreduce/broadcast/barrier over TCP) and its test.
# libbcoll depends on libc only: no libcurl, no services code.
bcoll_SRCS := $(filter-out collectives/test-%.c,$(wildcard collectives/*.c))
BCOLL_LIB := $(LIBDIR)/libbcoll.a
$(BCOLL_LIB): $(call objs,$(bcoll_SRCS))
ALL_BINS += $(BCOLL_LIB)

$(BIN)/test-bcoll: $(call objs,collectives/test-bcoll.c) $(BCOLL_LIB)
UNIT_TESTS += $(BIN)/test-bcoll
