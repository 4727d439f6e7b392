// Loads kvsteer.bpf.o (embedded skeleton), reusing the maps pinned under a bpffs directory, and
// attaches it to an interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvsteer/abi.h"

struct kvsteer_bpf;  // the bpftool skeleton (kvsteer.skel.h)
struct bpf_map;

namespace kvsteer::bpf {

enum class AttachMode { kNative, kGeneric, kAuto /* native, else generic with a warning */ };

struct LoaderOptions {
    // bpffs directory for the pinned maps: existing pins are reused (flows survive reloads),
    // missing ones are created and pinned. Empty = private, unpinned maps (tests, benchmarks).
    std::string pin_dir;
    // Overrides kvs_flows' size (0 = KVS_FLOW_MAX). Only for private maps: pinned maps must keep
    // the ABI size so every process can reuse them.
    std::uint32_t flow_max = 0;
};

class Loader {
   public:
    // Opens and loads the program. nullptr + `err` on failure.
    static std::unique_ptr<Loader> load(const LoaderOptions &opt, std::string *err);
    ~Loader();
    Loader(const Loader &) = delete;
    Loader &operator=(const Loader &) = delete;

    // Attaches through netlink, so the program stays on the interface after this process exits
    // (replacing any XDP program there). Returns false + `err` on failure.
    bool attach(int ifindex, AttachMode mode, std::string *err);
    // Detaches whatever XDP program `ifindex` has in `mode` (kAuto: both modes).
    static bool detach(int ifindex, AttachMode mode, std::string *err);

    int prog_fd() const;
    int map_fd(const char *name) const;  // -1 if no such map
    bpf_map *map(const char *name) const;
    kvsteer_bpf *skeleton() const { return skel_; }
    // Sum over CPUs of kvs_stats[0..n).
    bool read_stats(std::uint64_t *out, unsigned n, std::string *err) const;
    // Mode the last successful attach() used.
    AttachMode attached_mode() const { return attached_mode_; }

   private:
    Loader() = default;
    kvsteer_bpf *skel_ = nullptr;
    AttachMode attached_mode_ = AttachMode::kAuto;
};

// Sums a per-CPU u64 array's entries [0, n) (the layout of kvs_stats).
bool read_percpu_counters(int map_fd, std::uint64_t *out, unsigned n, std::string *err);

}  // namespace kvsteer::bpf
