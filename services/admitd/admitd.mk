# services/admitd — bursar-admitd: job admission, pricing, queue, placement,
# node heartbeats and rendezvous; state in $STATE/admitd.db.
admitd_SRCS := $(filter-out services/admitd/test-%.c,$(wildcard services/admitd/*.c))
$(BIN)/bursar-admitd: $(call objs,$(admitd_SRCS)) $(COMMON_LIB)
ALL_BINS += $(BIN)/bursar-admitd
# pricing is pure: its unit test links it without main().
$(BIN)/test-admitd-pricing: $(call objs,services/admitd/test-pricing.c services/admitd/pricing.c) $(COMMON_LIB)
UNIT_TESTS += $(BIN)/test-admitd-pricing
# the queue policy is pure too (sched.c)
$(BIN)/test-admitd-sched: $(call objs,services/admitd/test-sched.c services/admitd/sched.c) $(COMMON_LIB)
UNIT_TESTS += $(BIN)/test-admitd-sched
