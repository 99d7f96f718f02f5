# collectives: libbcoll.a (shm and tcp transports; ring, recursive doubling,
# Rabenseifner, tree algorithms; blocking and non-blocking), its test and
# bcoll-bench. libbcoll depends on libc and pthreads only: no services code.
bcoll_SRCS := $(filter-out collectives/test-%.c collectives/bench.c collectives/verbs%.c,$(wildcard collectives/*.c))
BCOLL_LIB := $(LIBDIR)/libbcoll.a
$(BCOLL_LIB): $(call objs,$(bcoll_SRCS))
ALL_BINS += $(BCOLL_LIB) $(BIN)/bcoll-bench

$(BIN)/bcoll-bench: $(call objs,collectives/bench.c) $(BCOLL_LIB)

$(BIN)/test-bcoll: $(call objs,collectives/test-bcoll.c) $(BCOLL_LIB)
UNIT_TESTS += $(BIN)/test-bcoll
