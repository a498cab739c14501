# fuzz.mk - builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang: the library's sources
# (and ecclrun's argument parser) once, with coverage, AddressSanitizer and UBSan, into
# $(OUT)/libeccl-fuzz.a, then one binary per target.
# Used by tests/fuzz/run.sh (make fuzz); incremental, and parallel with -j.
#   make -f tests/fuzz/fuzz.mk OUT=build/fuzz -j2 [targets]

CLANG ?= clang
OUT ?= build/fuzz
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Iinclude -I. -g -O1 -pthread $(SAN_FLAGS) \
	-Wall -Wextra -Wno-unused-parameter
LIBS := -lcurl -ljansson -lcrypto -ldl -lrt -lpthread -lm # the Makefile's LDLIBS

# kernels/reduce.c is compiled with gcc, without instrumentation: clang 14 refuses its
# __builtin_cpu_supports("f16c"), and no parser is in it.
PLAIN_CC ?= gcc
PLAIN_SRCS := kernels/reduce.c
LIB_SRCS := $(foreach d,common store proxy core kernels elastic,$(wildcard $(d)/*.c)) \
	tools/ecclrun/args.c
LIB_SRCS := $(filter-out $(PLAIN_SRCS),$(LIB_SRCS))
LIB_OBJS := $(LIB_SRCS:%.c=$(OUT)/obj/%.o) $(PLAIN_SRCS:%.c=$(OUT)/plain/%.o)
TARGETS := $(sort $(basename $(notdir $(wildcard tests/fuzz/fuzz_*.c))))

.PHONY: all
all: $(TARGETS:%=$(OUT)/%)

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(OUT)/plain/%.o: %.c
	@mkdir -p $(dir $@)
	$(PLAIN_CC) -std=c11 -D_GNU_SOURCE -Iinclude -I. -g -O2 -pthread -MMD -MP -c $< -o $@

$(OUT)/libeccl-fuzz.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(OUT)/libeccl-fuzz.a
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(OUT)/libeccl-fuzz.a $(LIBS)

-include $(LIB_OBJS:.o=.d)
