# services/ctl: bursarctl, the command line for users and operators.
ctl_SRCS := $(wildcard services/ctl/*.c)
$(BIN)/bursarctl: $(call objs,$(ctl_SRCS)) $(COMMON_LIB)
ALL_BINS += $(BIN)/bursarctl
