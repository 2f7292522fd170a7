# Thin wrapper over CMake: the two commands the README promises, and install.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local

.PHONY: all run test test-sanitize test-fuzz fuzz-long install clean

all:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

# The main job on built-in defaults: the labs, written to labs-report/.
run: all
	./$(BUILD)/linattn labs

# Every test: the release build, then the same suite under ASan + UBSan,
# then a short libFuzzer run of each fuzz target (SKIP without clang).
test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-sanitize
	$(MAKE) test-fuzz

test-sanitize:
	cmake -S . -B $(BUILD)-san -DCMAKE_BUILD_TYPE=Debug -DLINATTN_SANITIZE=address,undefined \
	      -DLINATTN_CUDA=OFF
	cmake --build $(BUILD)-san -j $(JOBS)
	cd $(BUILD)-san && ctest --output-on-failure -j $(JOBS)

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
	rm -rf $(BUILD) $(BUILD)-san build-fuzz
