// Writing flow pairs into kvs_flows: many pairs in one bpf_map_update_batch call, each pair all
// or nothing (a half pair would strand its flow).
#pragma once

#include <cstdint>

#include "kvsteer/abi.h"

struct bpf_map_batch_opts;

namespace kvsteer::dp {

// Writes `n` pairs, pair i being keys/vals [2i] and [2i + 1], into the hash map `fd` with as few
// bpf_map_update_batch calls as their failures allow (one when none fails). ok[i] says whether
// pair i is in place; a failed pair leaves neither entry. Returns the number of calls made (batch
// calls, and single updates where the kernel refuses a batch call as a whole).
// `batch_update`: bpf_map_update_batch (tests: a kernel that refuses it).
using BatchUpdate = int (*)(int fd, const void *keys, const void *values, __u32 *count,
                            const struct bpf_map_batch_opts *opts);
unsigned install_pairs(int fd, const kvs_flow_key *keys, const kvs_flow *vals, unsigned n, bool *ok,
                       BatchUpdate batch_update = nullptr);

// True (and the entry in *out) when `key`'s entry in `fd` is still the installation made at
// `created_ns` (both entries of a pair carry one created_ns): after an eviction the key may hold
// the entry of another flow on the same 4-tuple, which is not that installation's to expire or
// delete.
bool same_installation(int fd, const kvs_flow_key &key, std::uint64_t created_ns, kvs_flow *out);

}  // namespace kvsteer::dp
