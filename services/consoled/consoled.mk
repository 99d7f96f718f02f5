# services/consoled — bursar-consoled (web console + REST API) and its unit tests.
consoled_SRCS := $(filter-out services/consoled/test-%.c,$(wildcard services/consoled/*.c))
CFLAGS_services_consoled := -Itests -DCONSOLED_WWW='"$(abspath services/consoled/www)"'
$(BIN)/bursar-consoled: $(call objs,$(consoled_SRCS)) $(COMMON_LIB)
ALL_BINS += $(BIN)/bursar-consoled
# path checks and extraction, linked without main()
$(BIN)/test-consoled-upload: $(call objs,services/consoled/test-upload.c services/consoled/upload.c services/consoled/auth.c) $(COMMON_LIB)
UNIT_TESTS += $(BIN)/test-consoled-upload
