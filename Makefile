# Thin wrapper over CMake: the two commands the README promises, and install.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local

.PHONY: all run test test-sanitize test-tsan test-fuzz fuzz-long install clean

all:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

# The main job on built-in defaults: the labs, written to labs-report/.
run: all
	./$(BUILD)/linattn labs

# Every test: the release build, then the same suite under ASan + UBSan,
# the programs that split one sequence over threads under ThreadSanitizer,
# then a short libFuzzer run of each fuzz target (TSan and fuzzing SKIP
# without clang).
test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-sanitize
	$(MAKE) test-tsan
	$(MAKE) test-fuzz

test-sanitize:
	cmake -S . -B $(BUILD)-san -DCMAKE_BUILD_TYPE=Debug -DLINATTN_SANITIZE=address,undefined \
	      -DLINATTN_CUDA=OFF
	cmake --build $(BUILD)-san -j $(JOBS)
	cd $(BUILD)-san && ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer (clang) over the programs whose lanes hand states to each
# other through their own publish/wait flags (src/ops/*/split*.c) at 1-4
# threads; any report fails.
TSAN_TESTS ?= test_linear_split test_simple_gla test_gla
test-tsan:
	@if command -v clang >/dev/null 2>&1; then \
	  CC=clang cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	        -DLINATTN_CUDA=OFF -DLINATTN_SANITIZE=thread && \
	  cmake --build $(BUILD)-tsan -j $(JOBS) --target $(TSAN_TESTS) && \
	  for t in $(TSAN_TESTS); do \
	    TSAN_OPTIONS=halt_on_error=1 ./$(BUILD)-tsan/$$t || exit 1; done; \
	else echo "SKIP test-tsan: clang not found"; fi

# libFuzzer + ASan + UBSan (tests/fuzz/): every op of the registry and the
# decoder, and the model checkpoint loader; FUZZ_SECONDS per target, 15 by
# default.
FUZZ_SECONDS ?= 15
test-fuzz:
	bash tests/fuzz/run.sh $(FUZZ_SECONDS)

# A long run on all cores: make fuzz-long FUZZ_SECONDS=3600
fuzz-long:
	bash tests/fuzz/run.sh $(FUZZ_SECONDS) -jobs=$(JOBS) -workers=$(JOBS)

install: all
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(BUILD)-san $(BUILD)-tsan build-fuzz
