# tests: unit-test binaries for code that has no folder of its own (common).
# Each component's fragment adds its own tests to UNIT_TESTS.
test_common_SRCS := $(wildcard tests/unit/test-*.c)
$(foreach t,$(test_common_SRCS),$(eval $(BIN)/$(basename $(notdir $(t))): $(call objs,$(t)) $(COMMON_LIB)))
UNIT_TESTS += $(foreach t,$(test_common_SRCS),$(BIN)/$(basename $(notdir $(t))))
