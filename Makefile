# herold - one plain Makefile (redis, hiredis, beanstalkd style).
#
#   make            build bin/heroldd and bin/herold
#   make test       unit + integration tests, plain and under ASan+UBSan,
#                   then a short libFuzzer run of each fuzz target
#   make demo       private Redis + mock provider + heroldd: a preview, an
#                   announcement, an alert and a rejected job, then a report
#   make bench      the webhook, e-mail and audience fan-out benchmarks (bench/)
#   make install    PREFIX=/usr/local DESTDIR=
#   make valgrind   unit tests, then heroldd in integration tests, under valgrind
#   make clean
#
# Missing Debian packages are installed by scripts/deps.sh (apt-get as
# root; otherwise it names the packages and stops).

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PYTHON  ?= /usr/bin/python3

WARN    := -std=c11 -Wall -Wextra -Werror -Wstrict-prototypes \
           -Wmissing-prototypes -Wwrite-strings -Wformat=2 -Wshadow
DEFS    := -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
           -DHEROLD_TEMPLATE_DIR='"$(PREFIX)/share/herold/templates"'
PKGS    := hiredis jansson libcurl openssl libesmtp-1.0
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lunistring -lopendkim -lcsv -ldl -lm

SAN     ?=
ifeq ($(SAN),1)
BUILD   := build/asan
OPT     := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
           -fno-omit-frame-pointer
else
BUILD   := build/plain
OPT     := -O2
endif
BIN     := $(if $(filter 1,$(SAN)),build/asan/bin,bin)

CFLAGS  ?=
CFLAGS  += $(WARN) $(DEFS) -g $(OPT) $(PKG_CFLAGS) -I.
LDFLAGS += $(OPT)

COMMON  := dispatcher/herr.c dispatcher/alloc.c dispatcher/log.c \
           dispatcher/job.c dispatcher/redisq.c dispatcher/track.c \
           dispatcher/scripts.c dispatcher/clock.c config/config.c \
           channels/registry.c channels/classify.c channels/http.c \
           channels/webhook.c templates/render.c templates/limits.c \
           templates/msgset.c channels/mime.c channels/dkim.c \
           channels/smtp_pool.c channels/email.c dispatcher/contact.c \
           dispatcher/tz.c dispatcher/citizen.c dispatcher/ratelimit.c \
           dispatcher/flowscripts.c
DAEMON  := dispatcher/heroldd.c dispatcher/consumer.c dispatcher/fanout.c \
           dispatcher/audience.c
CLI     := dispatcher/cli.c dispatcher/cli_citizen.c dispatcher/csvimport.c \
           dispatcher/cli_flow.c

COMMON_O := $(COMMON:%.c=$(BUILD)/%.o)
DAEMON_O := $(DAEMON:%.c=$(BUILD)/%.o)
CLI_O    := $(CLI:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps test test-unit test-integration test-plain test-asan \
        demo bench bench-audience bench-flow install clean valgrind fuzz

all: deps-check $(BIN)/heroldd $(BIN)/herold

# deps-check is cheap when everything is present; scripts/deps.sh does the work.
deps-check:
	@sh scripts/deps.sh

deps: deps-check

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BIN)/heroldd: $(DAEMON_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

$(BIN)/herold: $(CLI_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

$(BUILD)/tests/test_%: tests/unit/test_%.c $(COMMON_O) $(filter-out $(BUILD)/dispatcher/heroldd.o,$(DAEMON_O))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka -lpthread

unit-bins: $(UNIT_BIN)

# test: both builds; any failure fails the target.
test: deps-check
	$(MAKE) --no-print-directory test-plain
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory fuzz

test-plain: all unit-bins
	@sh scripts/lint.sh
	@sh scripts/run-unit.sh $(UNIT_BIN)
	$(PYTHON) tests/harness/selftest.py
	rm -rf build/mime-samples && HEROLD_MIME_OUT=build/mime-samples build/plain/tests/test_mime >/dev/null
	$(PYTHON) tests/integration/mime_check.py build/mime-samples
	HEROLD_BIN=bin $(PYTHON) tests/integration/run.py

test-asan:
	$(MAKE) --no-print-directory SAN=1 build/asan/bin/heroldd build/asan/bin/herold unit-bins
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  sh scripts/run-unit.sh $(subst build/plain,build/asan,$(UNIT_BIN))
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	HEROLD_BIN=build/asan/bin HEROLD_SANITIZED=1 $(PYTHON) tests/integration/run.py

# fuzz: libFuzzer targets under tests/fuzz, each for FUZZ_SECONDS with the
# committed seed corpus (tests/fuzz/corpus/<target>/); make test runs it.
FUZZ_SECONDS ?= 20
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz:
	@mkdir -p build/fuzz
	@for f in $(FUZZ_SRC); do \
	  n=$$(basename $$f .c); \
	  clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined $(DEFS) -I. $(PKG_CFLAGS) \
	    -o build/fuzz/$$n $$f $(COMMON) $(PKG_LIBS) -lpthread || exit 1; \
	  mkdir -p build/fuzz/corpus-$$n; \
	  build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	    build/fuzz/corpus-$$n tests/fuzz/corpus/$$n 2>build/fuzz/$$n.log \
	    || { tail -40 build/fuzz/$$n.log; exit 1; }; \
	  echo "fuzz $$n: $$(grep -c '' build/fuzz/$$n.log) log lines, no findings"; \
	done

# valgrind: the unit tests, then heroldd itself in a few integration tests
# (its errors and definite leaks fail the test; see SANITIZER_RX).
VALGRIND_IT ?= delivery_signed sigterm_drain template_delivery redis_restart \
               flow_500_forever_dlq flow_cancel_midfanout
valgrind: all unit-bins
	sh scripts/run-unit.sh --valgrind $(UNIT_BIN)
	HEROLD_WRAP="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite" \
	HEROLD_DEADLINE_SCALE=10 $(PYTHON) tests/integration/run.py $(VALGRIND_IT)

demo: all
	$(PYTHON) scripts/demo.py

bench: all
	@sh scripts/deps.sh --bench
	$(PYTHON) bench/webhook_bench.py && $(PYTHON) bench/email_bench.py && \
	  $(PYTHON) bench/audience_bench.py

bench-flow: all
	@sh scripts/deps.sh --bench
	$(PYTHON) bench/flow_bench.py $(FLOW_ARGS)

bench-audience: all
	@sh scripts/deps.sh --bench
	$(PYTHON) bench/audience_bench.py

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/herold
	install -m 0755 bin/heroldd bin/herold $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 config/herold.example.json $(DESTDIR)$(PREFIX)/share/herold/
	rm -rf $(DESTDIR)$(PREFIX)/share/herold/templates
	cp -R templates/default $(DESTDIR)$(PREFIX)/share/herold/templates

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)

.PHONY: deps-check unit-bins
