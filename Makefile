# kderp — one entry point. `make help` lists the targets.
#
# Layout is discovered, not listed: every user/*.c (but main.c) goes into the
# library, every bpf/*.bpf.c becomes an object plus a skeleton, every
# tools/<name>/ directory becomes build/<name>, every tests/unit/test_*.c and
# tests/integ/test_*.c becomes one cmocka binary, every tests/fuzz/fuzz_*.c a
# libFuzzer binary. Adding a file needs no edit here.

.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD ?= build
SANFLAGS :=
endif

CC ?= cc
CLANG ?= clang
BPFTOOL ?= bpftool
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
VMLINUX_H := vmlinux/vmlinux_$(shell uname -m).h

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

WARN := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wmissing-prototypes
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(CFLAGS) $(WARN) $(SANFLAGS) -D_GNU_SOURCE -Iinclude -Iuser \
	-I$(BUILD)/bpf -MMD -MP -pthread
LDLIBS := -lssl -lcrypto -lsodium -lxdp -lbpf -lelf -lz -lpthread -lm
TEST_LDLIBS := -lcmocka $(LDLIBS)

LIB_SRCS := $(filter-out user/main.c,$(wildcard user/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libkderp.a

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)

TOOL_DIRS := $(patsubst %/,%,$(wildcard tools/*/))
TOOLS := $(TOOL_DIRS:tools/%=$(BUILD)/%)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/unit/%)
INTEG_SRCS := $(wildcard tests/integ/test_*.c)
INTEG_BINS := $(INTEG_SRCS:tests/integ/%.c=$(BUILD)/tests/integ/%)
INTEG_COMMON := $(filter-out $(INTEG_SRCS),$(wildcard tests/integ/*.c))
INTEG_COMMON_OBJS := $(INTEG_COMMON:%.c=$(BUILD)/%.o)
UNIT_COMMON := $(filter-out $(UNIT_SRCS),$(wildcard tests/unit/*.c))
UNIT_COMMON_OBJS := $(UNIT_COMMON:%.c=$(BUILD)/%.o)

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BUILD ?= build/fuzz
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_SECONDS ?= 60

.PHONY: all test test-all test-run test-san test-vm check bench bench-offload fuzz fuzz-smoke clean help run deps
all: $(BUILD)/kderpd $(TOOLS) $(BPF_OBJS)

help:
	@echo 'make            build build/kderpd, the tools and the BPF objects'
	@echo 'make run        build and start kderpd in dev mode (plain HTTP, 127.0.0.1:3340)'
	@echo 'make test       every test: unit + integration, again under ASan+UBSan, a short fuzz pass, the QEMU kernel matrix'
	@echo 'make test-vm    kTLS/sockmap probes on Debian kernels under QEMU (tests/vm/run.sh)'
	@echo 'make bench      derp-bench against kderpd with the raw-TCP baseline (not a test)'
	@echo 'make bench-offload  kderpd -offload=sockmap vs off, loopback and veth netns (root; part of make bench)'
	@echo 'make fuzz       run each fuzzer for FUZZ_SECONDS (default 60)'
	@echo 'make deps       install the Debian packages the build and the tests need'
	@echo 'make clean      remove build/'
	@echo 'V=1 shows full commands; SANITIZE=1 builds into build/san with ASan+UBSan'

deps:
	scripts/deps.sh

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(BUILD)/kderpd -dev

# Static pattern rules below: as plain pattern rules the tools' catch-all
# $(BUILD)/% won over them whenever an intermediate (.o, .tmp.o) was missing,
# and gcc compiled bpf/*.bpf.c as userspace.
# --- BPF -------------------------------------------------------------------
$(BPF_OBJS:.bpf.o=.tmp.o): $(BUILD)/bpf/%.tmp.o: bpf/%.bpf.c $(VMLINUX_H) | $(BUILD)/bpf
	$(call msg,BPF,$@)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Iinclude -Ibpf \
		-include $(VMLINUX_H) -MMD -MP -c $< -o $@

$(BPF_OBJS): $(BUILD)/bpf/%.bpf.o: $(BUILD)/bpf/%.tmp.o
	$(call msg,GEN-OBJ,$@)
	$(Q)$(BPFTOOL) gen object $@ $<

$(BPF_SKELS): $(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@

# --- userspace -------------------------------------------------------------
$(BUILD)/%.o: %.c | $(BPF_SKELS)
	@mkdir -p $(@D)
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/kderpd: $(BUILD)/user/main.o $(LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $^ $(LDLIBS) -o $@

.SECONDEXPANSION:
$(TOOLS): $(BUILD)/%: $$(patsubst %.c,$(BUILD)/%.o,$$(wildcard tools/$$*/*.c)) $(LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $^ $(LDLIBS) -o $@

$(UNIT_BINS): $(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(UNIT_COMMON_OBJS) $(LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $^ $(TEST_LDLIBS) -o $@

$(INTEG_BINS): $(BUILD)/tests/integ/%: $(BUILD)/tests/integ/%.o $(INTEG_COMMON_OBJS) $(LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $^ $(TEST_LDLIBS) -o $@

$(BUILD)/bpf:
	@mkdir -p $@

# --- tests -----------------------------------------------------------------
TEST_BINS := $(UNIT_BINS) $(INTEG_BINS)

test: deps
	$(Q)$(MAKE) --no-print-directory test-all

test-all: all $(TEST_BINS)
	$(Q)tests/run.sh $(BUILD) plain
	$(Q)$(MAKE) --no-print-directory SANITIZE=1 test-san
	$(Q)$(MAKE) --no-print-directory fuzz-smoke
	$(Q)$(MAKE) --no-print-directory test-vm

test-san: all $(TEST_BINS)
	$(Q)tests/run.sh $(BUILD) asan+ubsan

test-run: all $(TEST_BINS)
	$(Q)tests/run.sh $(BUILD) plain

check: test

# --- kernel matrix under QEMU: tests/vm/*.c make one probe run in each VM ---
VM_SRCS := $(wildcard tests/vm/*.c)
VM_BINS := $(BUILD)/vm/ktls_probe $(BUILD)/tests/integ/test_tls_relay $(BUILD)/tests/integ/test_relay \
	$(BUILD)/tests/integ/test_sockmap $(BUILD)/tests/integ/test_offload_e2e \
	$(BUILD)/tests/integ/test_offload_registry $(BUILD)/tls-bench
$(BUILD)/vm/ktls_probe: $(VM_SRCS:%.c=$(BUILD)/%.o) $(LIB)
	@mkdir -p $(@D)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $^ $(LDLIBS) -o $@

VM_TESTS := ktls:$(BUILD)/vm/ktls_probe:ktls. sockmap_ktls:$(BUILD)/vm/ktls_probe:sockmap_ktls. \
	tls_relay:$(BUILD)/tests/integ/test_tls_relay relay:$(BUILD)/tests/integ/test_relay \
	sockmap:$(BUILD)/tests/integ/test_sockmap offload:$(BUILD)/tests/integ/test_offload_e2e \
	offload_registry:$(BUILD)/tests/integ/test_offload_registry \
	tls_bench:$(BUILD)/tls-bench
test-vm: $(VM_BINS)
	$(Q)tests/vm/run.sh $(VM_TESTS)

# --- fuzzing (clang libFuzzer + ASan/UBSan, its own build of the library) ----
FUZZ_CFLAGS := -std=gnu11 -O1 -g $(WARN) -D_GNU_SOURCE -Iinclude -Iuser -I$(BUILD)/bpf -MMD -MP \
	-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -pthread

$(FUZZ_BUILD)/%.o: %.c | $(BPF_SKELS)
	@mkdir -p $(@D)
	$(call msg,CC-FUZZ,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BINS): $(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJS)
	$(call msg,LD-FUZZ,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@

fuzz: $(FUZZ_BINS)
	$(Q)tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-smoke: $(FUZZ_BINS)
	$(Q)tests/fuzz/run.sh $(FUZZ_BUILD) $${FUZZ_SMOKE_SECONDS:-10}

bench: all
	$(Q)scripts/bench.sh $(BUILD)
	$(Q)scripts/bench-offload.sh $(BUILD)

bench-offload: all
	$(Q)scripts/bench-offload.sh $(BUILD)

clean:
	rm -rf build

%.d: ;
-include $(shell find build -name '*.d' 2>/dev/null)
