#include "flow_install.h"

#include <bpf/bpf.h>

namespace kvsteer::dp {

// A hash map's batch update writes entries in order and stops at the first that fails (the
// map full, no memory), reporting how many it wrote: that entry's pair fails, its first entry
// is removed again if it was written, and a new batch starts with the next pair. A call refused
// as a whole (a kernel or map without batch updates, a bad argument) writes nothing and leaves
// the count as it was: the pairs then go in one at a time, one call an entry.
unsigned install_pairs(int fd, const kvs_flow_key *keys, const kvs_flow *vals, unsigned n, bool *ok,
                       BatchUpdate batch_update) {
    if (!batch_update) batch_update = bpf_map_update_batch;
    unsigned calls = 0;
    for (unsigned first = 0; first < n;) {
        const __u32 want = 2 * (n - first);
        __u32 count = want;
        ++calls;
        const int rc = batch_update(fd, keys + 2 * first, vals + 2 * first, &count, nullptr);
        if (rc == 0 && count == want) {
            for (unsigned i = first; i < n; ++i) ok[i] = true;
            return calls;
        }
        if (count >= want) {  // refused as a whole: nothing written
            for (unsigned i = first; i < n; ++i) {
                calls += 2;
                ok[i] = bpf_map_update_elem(fd, &keys[2 * i], &vals[2 * i], BPF_ANY) == 0;
                if (ok[i] && bpf_map_update_elem(fd, &keys[2 * i + 1], &vals[2 * i + 1], BPF_ANY)) {
                    bpf_map_delete_elem(fd, &keys[2 * i]);
                    ok[i] = false;
                }
            }
            return calls;
        }
        const unsigned failed = first + count / 2;
        for (unsigned i = first; i < failed; ++i) ok[i] = true;
        ok[failed] = false;
        if (count % 2 == 1) bpf_map_delete_elem(fd, &keys[2 * failed]);  // half a pair
        first = failed + 1;
    }
    return calls;
}

bool same_installation(int fd, const kvs_flow_key &key, std::uint64_t created_ns, kvs_flow *out) {
    return bpf_map_lookup_elem(fd, &key, out) == 0 && out->created_ns == created_ns;
}

}  // namespace kvsteer::dp
