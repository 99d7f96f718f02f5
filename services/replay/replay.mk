# services/replay — bursar-replay: replays a job trace through admitd's queue
# policy (services/admitd/sched.c) with a simulated clock.
replay_SRCS := services/replay/replay.c services/admitd/sched.c
CFLAGS_services_replay := -Iservices/admitd
$(BIN)/bursar-replay: $(call objs,$(replay_SRCS)) $(COMMON_LIB)
ALL_BINS += $(BIN)/bursar-replay
