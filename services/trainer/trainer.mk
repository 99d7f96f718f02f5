# services/trainer: bursar-train (GPT-2 and Llama on the CPU, data parallel over libbcoll).
trainer_SRCS := $(filter-out services/trainer/test-%.c,$(wildcard services/trainer/*.c))
trainer_LIB_SRCS := $(filter-out %/train.c,$(trainer_SRCS))
CFLAGS_services_trainer := -fopenmp $(shell pkg-config --cflags openblas)
TRAINER_LIBS := -fopenmp $(shell pkg-config --libs openblas)

$(BIN)/bursar-train: $(call objs,$(trainer_SRCS)) $(BCOLL_LIB) $(COMMON_LIB)
LDLIBS_bursar-train := $(TRAINER_LIBS)
ALL_BINS += $(BIN)/bursar-train

$(BIN)/test-trainer-gpt2: $(call objs,services/trainer/test-gpt2.c $(trainer_LIB_SRCS)) \
	$(BCOLL_LIB) $(COMMON_LIB)
LDLIBS_test-trainer-gpt2 := $(TRAINER_LIBS)
UNIT_TESTS += $(BIN)/test-trainer-gpt2

$(BIN)/test-trainer-fuzz: $(call objs,services/trainer/test-fuzz.c $(trainer_LIB_SRCS)) \
	$(BCOLL_LIB) $(COMMON_LIB)
LDLIBS_test-trainer-fuzz := $(TRAINER_LIBS)
UNIT_TESTS += $(BIN)/test-trainer-fuzz

$(BIN)/test-trainer-fuzz-tok: $(call objs,services/trainer/test-fuzz-tok.c $(trainer_LIB_SRCS)) \
	$(BCOLL_LIB) $(COMMON_LIB)
LDLIBS_test-trainer-fuzz-tok := $(TRAINER_LIBS)
UNIT_TESTS += $(BIN)/test-trainer-fuzz-tok
