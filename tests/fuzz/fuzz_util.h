/*
 * fuzz_util.h - what every libFuzzer target of tests/fuzz/ shares: a contract check that aborts
 * with a message (libFuzzer then saves the input as a crash), quiet logging, and seed writing.
 *
 * A target defines `static void fuzz_seeds(void)` that writes its seed inputs with fuzz_seed(),
 * built from the library's real encoders. Running a target with ECCL_FUZZ_SEEDS=<dir> writes
 * them into <dir> and exits (tests/fuzz/run.sh --seeds regenerates every corpus's seeds so).
 * Include this header once, from the target's .c file.
 */
#ifndef ECCL_TESTS_FUZZ_UTIL_H
#define ECCL_TESTS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The parser broke its contract: abort, so that libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static void fuzz_seeds(void);

static const char *fuzz_seed_dir;

/* Writes one seed input named `name` into the seed folder. */
static void fuzz_seed(const char *name, const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/seed-%s", fuzz_seed_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("ECCL_DEBUG", "NONE", 0); /* the parsers WARN on every bad input */
    fuzz_seed_dir = getenv("ECCL_FUZZ_SEEDS");
    if (fuzz_seed_dir) {
        fuzz_seeds();
        exit(0);
    }
    return 0;
}

#endif
