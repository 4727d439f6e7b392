// Writing flow pairs into kvs_flows: many pairs in one bpf_map_update_batch call, each pair all
// or nothing (a half pair would strand its flow).
#pragma once

#include <cstdint>

#include "kvsteer/abi.h"

namespace kvsteer::dp {

// Writes `n` pairs, pair i being keys/vals [2i] and [2i + 1], into the hash map `fd` with as few
// bpf_map_update_batch calls as their failures allow (one when none fails). ok[i] says whether
// pair i is in place; a failed pair leaves neither entry. Returns the number of calls made.
unsigned install_pairs(int fd, const kvs_flow_key *keys, const kvs_flow *vals, unsigned n,
                       bool *ok);

}  // namespace kvsteer::dp
