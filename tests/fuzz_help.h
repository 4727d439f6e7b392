// --help for a libFuzzer target. libFuzzer's own flags are single-dash (`-help=1` lists them) and
// it takes any other argument for a corpus directory, so `--help` used to start a fuzzing run
// that never ends. KVS_FUZZ_HELP("what it fuzzes") defines LLVMFuzzerInitialize, which answers
// --help and -h with the usage and exits before libFuzzer reads the arguments.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>

#define KVS_FUZZ_HELP(what)                                                                   \
    extern "C" int LLVMFuzzerInitialize(int *argc, char ***argv) {                            \
        for (int i = 1; i < *argc; ++i) {                                                     \
            if (std::strcmp((*argv)[i], "--help") != 0 && std::strcmp((*argv)[i], "-h") != 0) \
                continue;                                                                     \
            const char *self = (*argv)[0];                                                    \
            std::printf(                                                                      \
                "usage: %s [libFuzzer flags] [CORPUS_DIR...]\n\n%s\n\n"                       \
                "libFuzzer's flags: %s -help=1. Example, one minute on a scratch "            \
                "corpus:\n  mkdir -p corpus && %s -max_total_time=60 corpus\n",               \
                self, what, self, self);                                                      \
            std::exit(0);                                                                     \
        }                                                                                     \
        return 0;                                                                             \
    }
