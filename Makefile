# mcshim: an LD_PRELOAD memcached cluster client.
#
#   make                  build build/libmcshim.so (and the helper tools)
#   make test             every test: unit, core layering, integration, and the same under ASan/UBSan
#   make demo             start local memcached servers and show a client spreading keys through the shim
#   make bench            direct vs shim vs twemproxy, alternating, medians and ratios
#   make install          PREFIX=/usr/local DESTDIR=
#   make SANITIZE=1 ...   build into build/sanitize with -fsanitize=address,undefined
#
# The user's CFLAGS/LDFLAGS are respected; the flags the project needs are added separately.

CC       ?= cc
CFLAGS   ?= -O2 -g
LDFLAGS  ?=
PREFIX   ?= /usr/local
DESTDIR  ?=
PYTHON   ?= /usr/bin/python3

ifeq ($(SANITIZE),1)
BUILD    ?= build/sanitize
SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD    ?= build
SAN_FLAGS =
endif

WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
           -Wformat=2 -Wcast-qual -Wvla -Wundef -Wno-unused-parameter
MCS_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden -I. $(WARN) $(SAN_FLAGS) -MMD -MP

# Layers: hash <- core <- engine <- shim. hash/ and preload/core/ form the sans-IO archive.
HASH_SRC   = $(wildcard hash/*.c)
CORE_SRC   = $(wildcard preload/core/*.c)
LIB_SRC    = $(wildcard preload/lib/*.c)
ENGINE_SRC = $(wildcard preload/engine/*.c)
SHIM_SRC   = $(wildcard preload/shim/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
CORE_OBJ = $(call obj,$(HASH_SRC) $(CORE_SRC))
SO_OBJ   = $(call obj,$(LIB_SRC) $(ENGINE_SRC) $(SHIM_SRC))

UNIT_SRC  = $(wildcard tests/unit/test_*.c)
UNIT_BIN  = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_SRC  = $(wildcard tests/tools/*.c)
TOOL_BIN  = $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))

LIB      = $(BUILD)/libmcshim.so
CORE_A   = $(BUILD)/libmcscore.a
STATS    = $(BUILD)/mcshim-stats
SHARED_O = $(call obj,preload/lib/shared.c)

.PHONY: all test unit integration integration-paths check-core test-sanitize demo bench fuzz fuzz-short install clean deps

all: $(LIB) $(TOOL_BIN) $(STATS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(MCS_CFLAGS) $(CFLAGS) -c $< -o $@

$(CORE_A): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIB): $(SO_OBJ) $(CORE_A) preload/shim/exports.map
	$(CC) -shared -o $@ $(SO_OBJ) $(CORE_A) $(SAN_FLAGS) $(CFLAGS) $(LDFLAGS) \
	    -Wl,--version-script=preload/shim/exports.map -Wl,--no-undefined -Wl,-z,now -Wl,-z,relro -ldl -lpthread

$(BUILD)/tests/%: tests/unit/%.c $(CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(MCS_CFLAGS) $(CFLAGS) -o $@ $< $(CORE_A) $(LDFLAGS) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c $(CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(MCS_CFLAGS) $(CFLAGS) -o $@ $< $(CORE_A) $(LDFLAGS) -lpthread

# `mcshim stats` (tools/mcshim-stats.c) and the test helper that writes segments both map the
# segment file with preload/lib/shared.c (libc only).
$(STATS): $(call obj,tools/mcshim-stats.c) $(SHARED_O) $(CORE_A)
	$(CC) -o $@ $^ $(SAN_FLAGS) $(CFLAGS) $(LDFLAGS)

$(BUILD)/tools/segwrite: tests/tools/segwrite.c $(SHARED_O) $(CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(MCS_CFLAGS) $(CFLAGS) -o $@ $^ $(LDFLAGS)

# The sans-IO core must not reach the OS: scripts/check-core fails on any symbol of the
# archive outside its allow-list of pure libc (memory, strings, maths) and on any #include
# outside its allow-list; its self-test first proves that it rejects what it should.
check-core: $(CORE_A)
	@CC='$(CC)' $(PYTHON) scripts/check-core --self-test
	@$(PYTHON) scripts/check-core $(CORE_A)

deps:
	@scripts/deps test

# A skipped unit test is a check not made: cmocka's skip() fails the run (no allow-list
# here: a unit test has nothing outside it to miss).
unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t > $(BUILD)/unit.log 2>&1 || { cat $(BUILD)/unit.log; exit 1; }; \
	    tail -1 $(BUILD)/unit.log; if grep -q 'SKIPPED' $(BUILD)/unit.log; then \
	    grep 'SKIPPED' $(BUILD)/unit.log; echo "unit: $$t skipped a test (a check not made)"; exit 1; fi; done

integration: all
	MCSHIM_BUILD=$(abspath $(BUILD)) SANITIZE=$(SANITIZE) $(PYTHON) tests/integration/run.py

test-sanitize:
	$(MAKE) SANITIZE=1 unit integration

# The same clients both ways (docs/fastpath.md): pymemcache with blocking sockets, so
# the fast path carries the chaos and client tests, then with the fast path off.
FASTPATH_TESTS = test_availability*,test_failures*,test_pymemcache*
integration-paths: all
	MCSHIM_TEST_BLOCKING=1 MCSHIM_TEST_PATTERN='$(FASTPATH_TESTS)' MCSHIM_BUILD=$(abspath $(BUILD)) \
	    $(PYTHON) tests/integration/run.py
	MCSHIM_TEST_BLOCKING=1 MCSHIM_TEST_FAST_PATH=off MCSHIM_TEST_PATTERN='$(FASTPATH_TESTS)' \
	    MCSHIM_BUILD=$(abspath $(BUILD)) $(PYTHON) tests/integration/run.py

test: deps
	$(MAKE) all
	$(MAKE) check-core
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) integration-paths
	$(MAKE) test-sanitize
	$(MAKE) fuzz-short

# libFuzzer targets (clang): tests/fuzz/fuzz_<parser>.c against the core sources;
# fuzz_engine plays the servers against the engine, so it links the engine and its helpers too.
FUZZ_SRC     = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN     = $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
# 4 targets at about 2k, 8k, 2k and 0.5k executions/s on a 2-core machine: over 10 million in all
FUZZ_SECONDS ?= 900
FUZZ_CC      ?= clang
FUZZ_FLAGS   = -std=c11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

build/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(HASH_SRC) $(CORE_SRC) $(wildcard preload/core/*.h hash/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(HASH_SRC) $(CORE_SRC)

build/fuzz/fuzz_engine: tests/fuzz/fuzz_engine.c tests/fuzz/fuzz_common.h $(HASH_SRC) $(CORE_SRC) $(LIB_SRC) \
                        $(ENGINE_SRC) $(wildcard preload/core/*.h preload/lib/*.h preload/engine/*.h hash/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(HASH_SRC) $(CORE_SRC) $(LIB_SRC) $(ENGINE_SRC) -ldl -lpthread

# Each target runs FUZZ_SECONDS from its seed corpus (a copy: the tree is not written to).
fuzz: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); \
	    rm -rf build/fuzz/$$n.corpus; mkdir -p build/fuzz/$$n.corpus; \
	    cp tests/fuzz/corpus/$${n#fuzz_}/* build/fuzz/$$n.corpus/ 2>/dev/null || true; \
	    echo "== $$n for $(FUZZ_SECONDS)s"; \
	    if ! $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -artifact_prefix=build/fuzz/$$n- \
	        build/fuzz/$$n.corpus > build/fuzz/$$n.log 2>&1; then \
	        tail -40 build/fuzz/$$n.log; echo "fuzz: $$n found a problem (build/fuzz/$$n-*)"; exit 1; fi; \
	    tail -2 build/fuzz/$$n.log; done

fuzz-short:
	$(MAKE) fuzz FUZZ_SECONDS=20

demo: all
	@scripts/deps demo
	scripts/demo

bench: all
	@scripts/deps bench
	scripts/bench

install: $(LIB) $(STATS)
	install -d $(DESTDIR)$(PREFIX)/lib/mcshim $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/mcshim
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libmcshim.so
	install -m 0755 $(STATS) $(DESTDIR)$(PREFIX)/lib/mcshim/mcshim-stats
	sed 's|@LIBDIR@|$(PREFIX)/lib|' scripts/mcshim > $(DESTDIR)$(PREFIX)/bin/mcshim
	chmod 0755 $(DESTDIR)$(PREFIX)/bin/mcshim
	install -m 0644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/mcshim/

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)
