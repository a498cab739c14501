# eccl - one Makefile for the library, the tools, the tests and the benchmarks.
#
#   make                    build/lib/libeccl.so, build/lib/libeccl.a, build/bin/*
#   make test               every test a machine without a GPU can run (tests/run.sh)
#   make test-gpu           the GPU tests (skip cleanly where no GPU is present)
#   make test-fault         the fault-injection tests, in a FAULT=1 build under build/fault
#   make fuzz               the libFuzzer targets, FUZZ_SECONDS each (default 60)
#   make check-layers       the include rules of DESIGN.md
#   make format             clang-format every source file
#
# Knobs: DEBUG=1, SAN=address,undefined | SAN=thread, FAULT=1, CUDA=0|1 (default: 1 when nvcc
# is found), CUDA_HOME (default /usr/local/cuda), V=1 (echo commands).

CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(CUDA_HOME)/bin/nvcc
ifeq ($(origin CUDA),undefined)
CUDA := $(if $(wildcard $(NVCC)),1,0)
endif
DEBUG ?= 0
FAULT ?= 0
SAN ?=
V ?= 0

BUILD := build
OBJ := $(BUILD)/obj
Q := $(if $(filter 1,$(V)),,@)

CC ?= cc
ifeq ($(CC),cc)
CC := gcc
endif

WARN_FLAGS := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2 \
	-fno-common -Werror
CPPFLAGS := -Iinclude -I. -D_GNU_SOURCE -MMD -MP
CFLAGS := -std=c11 $(WARN_FLAGS) -fPIC -fvisibility=hidden -pthread -g
ifeq ($(DEBUG),1)
CFLAGS += -O0 -DECCL_DEBUG_BUILD
else
CFLAGS += -O2
endif
ifeq ($(FAULT),1)
CPPFLAGS += -DECCL_FAULT_ENABLED
endif
ifneq ($(SAN),)
CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SAN)
endif
LDLIBS := -lcurl -ljansson -ldl -lrt -lpthread -lm

ifeq ($(CUDA),1)
CPPFLAGS += -DECCL_HAVE_CUDA -I$(CUDA_HOME)/include
NVCC_GENCODE ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCCFLAGS := -std=c++17 -O3 $(NVCC_GENCODE) -Iinclude -I. -DECCL_HAVE_CUDA \
	-Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror -Werror all-warnings
# nvcc host code (CUDA 13 kernel launch stubs) needs the C++ runtime: guarded statics, EH.
LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -lstdc++
endif

# Everything a build depends on besides sources: a change of knobs rebuilds everything.
CONFIG_STAMP := $(BUILD)/.config
CONFIG_LINE := CC=$(CC) CFLAGS=$(CFLAGS) CPPFLAGS=$(CPPFLAGS) LDFLAGS=$(LDFLAGS) CUDA=$(CUDA)
$(shell mkdir -p $(BUILD); [ "`cat $(CONFIG_STAMP) 2>/dev/null`" = '$(CONFIG_LINE)' ] || \
	echo '$(CONFIG_LINE)' > $(CONFIG_STAMP))

LIB_DIRS := common core kernels proxy store elastic
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(OBJ)/%.o)
ifeq ($(CUDA),1)
CU_SRCS := $(wildcard kernels/*.cu)
LIB_OBJS += $(CU_SRCS:%.cu=$(OBJ)/%.cu.o)
endif

TOOLS := $(notdir $(patsubst %/,%,$(dir $(wildcard tools/*/*.c))))
TOOLS := $(sort $(TOOLS))
TOOL_BINS := $(TOOLS:%=$(BUILD)/bin/%)

# Test support code shared by every test binary.
TEST_SUPPORT_SRCS := $(wildcard tests/support/*.c)
TEST_SUPPORT_OBJS := $(TEST_SUPPORT_SRCS:%.c=$(OBJ)/%.o)
TEST_SRCS := $(wildcard tests/unit/*/test_*.c tests/mp/test_*.c tests/fault/test_*.c \
	tests/gpu/test_*.c)
TEST_BINS := $(TEST_SRCS:%.c=$(BUILD)/%)

BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:%.c=$(BUILD)/%)

# Examples link against the shared library, as users' programs do.
EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLE_BINS := $(EXAMPLE_SRCS:%.c=$(BUILD)/%)

.PHONY: all lib tools tests test test-fault fuzz test-gpu check check-layers check-env-docs format clean bench demo \
	examples
all: lib tools examples

lib: $(BUILD)/lib/libeccl.so $(BUILD)/lib/libeccl.a
tools: $(TOOL_BINS)
tests: $(TEST_BINS)
bench: $(BENCH_BINS)
examples: $(EXAMPLE_BINS)

$(OBJ)/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(OBJ)/%.cu.o: %.cu $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/lib/libeccl.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/lib/libeccl.so: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,libeccl.so -Wl,--no-undefined $(LDFLAGS) $(CFLAGS) -o $@ \
		$^ $(LDLIBS)

# A tool is every .c file in tools/<name>/, linked statically against libeccl.a.
# Keep intermediate objects (test and tool objects would otherwise be deleted after linking).
.SECONDARY:
.SECONDEXPANSION:
# (foreach, not patsubst: a % in a pattern rule's prerequisites is replaced by the stem.)
$(BUILD)/bin/%: $$(foreach f,$$(wildcard tools/$$*/*.c),$(OBJ)/$$(basename $$(f)).o) $(BUILD)/lib/libeccl.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $(filter %.o,$^) $(BUILD)/lib/libeccl.a $(LDLIBS)

$(BUILD)/tests/%: $(OBJ)/tests/%.o $(TEST_SUPPORT_OBJS) $(BUILD)/lib/libeccl.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $< $(TEST_SUPPORT_OBJS) $(BUILD)/lib/libeccl.a \
		-lcmocka $(LDLIBS)

$(BUILD)/bench/%: $(OBJ)/bench/%.o $(BUILD)/lib/libeccl.a
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/lib/libeccl.a $(LDLIBS)

$(BUILD)/examples/%: examples/%.c $(BUILD)/lib/libeccl.so
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -Iinclude $(filter-out -fvisibility=hidden,$(CFLAGS)) $(LDFLAGS) -o $@ $< \
		$(BUILD)/lib/libeccl.so -Wl,-rpath,'$$ORIGIN/../lib' -lm

# The main job: an elastic run of examples/elastic_train under ecclrun, one rank killed and
# replaced (ETCD=1: on a local etcd that the script starts and stops).
ETCD ?= 0
demo: all
	ETCD=$(ETCD) BUILD=$(BUILD) scripts/demo.sh

check: check-layers check-env-docs

test: all tests check
	$(Q)ECCL_BUILD=$(BUILD) SAN="$(SAN)" tests/run.sh

# Tests whose fault sites need FAULT=1, in their own build folder so that build/ is untouched.
test-fault:
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/fault FAULT=1 all tests
	$(Q)ECCL_BUILD=$(BUILD)/fault tests/run.sh unit/
	$(Q)ECCL_BUILD=$(BUILD)/fault tests/run.sh fault/

fuzz:
	$(Q)FUZZ_BUILD=$(BUILD)/fuzz tests/unit/store/fuzz/run.sh

test-gpu: all tests
	$(Q)ECCL_BUILD=$(BUILD) tests/gpu/run.sh

check-layers:
	$(Q)tools/check-layers.sh

check-env-docs:
	$(Q)tools/check-env-docs.sh

format:
	$(Q)clang-format -i $$(git ls-files '*.c' '*.h' '*.cu')

clean:
	rm -rf $(BUILD)

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)
