# services/common: libbursar-common.a, linked into every daemon and tool.
common_SRCS := $(wildcard services/common/*.c)
COMMON_LIB := $(LIBDIR)/libbursar-common.a
$(COMMON_LIB): $(call objs,$(common_SRCS))
