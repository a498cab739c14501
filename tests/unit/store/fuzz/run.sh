#!/bin/sh
# Builds the store's libFuzzer targets with clang (fuzzer, address, undefined) and runs each for
# FUZZ_SECONDS (default 60) on its corpus in tests/unit/store/fuzz/corpus/<target>/ (new inputs
# that add coverage are kept there). Usage, from the repository root:
#   tests/unit/store/fuzz/run.sh [target...]      targets: fuzz_store_proto fuzz_etcd_json
# Exit status: 0 when every target ran its time without a crash.
set -eu
CLANG=${CLANG:-clang}
SECONDS_EACH=${FUZZ_SECONDS:-60}
OUT=${FUZZ_BUILD:-build/fuzz}
HERE=tests/unit/store/fuzz
command -v "$CLANG" >/dev/null || { echo "SKIP: $CLANG not found"; exit 77; }
mkdir -p "$OUT"
FLAGS="-std=c11 -D_GNU_SOURCE -Iinclude -I. -g -O1 -pthread -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
SRCS="$(ls common/*.c store/*.c)"
TARGETS=${*:-"fuzz_store_proto fuzz_etcd_json"}
for t in $TARGETS; do
    echo "== building $t"
    # shellcheck disable=SC2086
    $CLANG $FLAGS -o "$OUT/$t" "$HERE/$t.c" $SRCS -lcurl -ljansson -ldl -lrt -lm
done
for t in $TARGETS; do
    mkdir -p "$HERE/corpus/$t"
    echo "== running $t for ${SECONDS_EACH}s"
    ECCL_DEBUG=NONE "$OUT/$t" -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 "$HERE/corpus/$t"
done
