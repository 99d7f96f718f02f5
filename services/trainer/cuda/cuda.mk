# services/trainer/cuda: the CUDA backend, a shared library bursar-train loads
# at run time (gpu_load.c). Built only where nvcc exists; runs only where a GPU
# does. sm_80 (A100) and sm_90 (H100/H200) code.
CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(firstword $(wildcard $(CUDA_HOME)/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
CUDA_LIB := $(LIBDIR)/libbursar-cuda.so
CUDA_ARCHS ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90
NVCCFLAGS := -O3 -std=c++17 $(CUDA_ARCHS) -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Werror

ifneq ($(NVCC),)
ifneq ($(SAN),1)
cuda_SRCS := $(wildcard services/trainer/cuda/*.cu)
cuda_OBJS := $(patsubst %.cu,$(OBJ)/%.o,$(cuda_SRCS))

$(OBJ)/services/trainer/cuda/%.o: services/trainer/cuda/%.cu services/trainer/cuda/common.cuh \
		services/trainer/cuda/gpu.h services/trainer/cuda/model_int.cuh
	@mkdir -p $(@D)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(CUDA_LIB): $(cuda_OBJS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  NVLINK  $@")
	$(Q)$(NVCC) -shared -o $@ $^ -lcublasLt -Xlinker -rpath=$(CUDA_HOME)/lib64

ALL_BINS += $(CUDA_LIB)
endif
endif

# The C side: built everywhere (they report themselves skipped without a GPU).
CFLAGS_services_trainer_cuda := $(CFLAGS_services_trainer) -Iservices/trainer
$(BIN)/bench-cuda: $(call objs,services/trainer/cuda/bench-cuda.c $(trainer_LIB_SRCS)) \
	$(BCOLL_LIB) $(COMMON_LIB)
LDLIBS_bench-cuda := $(TRAINER_LIBS)
$(BIN)/test-cuda: $(call objs,services/trainer/test-cuda.c $(trainer_LIB_SRCS)) \
	$(BCOLL_LIB) $(COMMON_LIB)
LDLIBS_test-cuda := $(TRAINER_LIBS)
ALL_BINS += $(BIN)/bench-cuda $(BIN)/test-cuda
