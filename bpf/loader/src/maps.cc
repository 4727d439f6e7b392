// open_pinned_maps / read_xdp_stats: the pinned-map contract of kvsteer/bpf/maps.h.
#include "kvsteer/bpf/maps.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "kvsteer/bpf/loader.h"

namespace kvsteer::bpf {

namespace {

std::string errstr(int e) {
    return std::strerror(e < 0 ? -e : e);
}

// One pinned map as the XDP object defines it, and the PinnedMaps members it lands in
// (`mem` is null for maps that are not mmapped).
struct MapSpec {
    const char *name;
    std::uint32_t value_size;
    std::uint32_t max_entries;
    int PinnedMaps::*fd;
    void **(*mem)(PinnedMaps &);
};

#define KVS_MEM(field) [](PinnedMaps &m) { return reinterpret_cast<void **>(&m.field); }

const MapSpec kSpecs[] = {
    {KVS_MAP_CONFIG, sizeof(kvs_config), 1, &PinnedMaps::config_fd, KVS_MEM(config)},
    {KVS_MAP_BACKENDS, sizeof(kvs_backend), KVS_MAX_BACKENDS, &PinnedMaps::backends_fd,
     KVS_MEM(backends)},
    {KVS_MAP_BACKEND_LOAD, sizeof(kvs_backend_load), KVS_MAX_BACKENDS, &PinnedMaps::load_fd,
     KVS_MEM(load)},
    {KVS_MAP_MAGLEV, sizeof(kvs_maglev_table), 1, &PinnedMaps::maglev_fd, KVS_MEM(maglev)},
    {KVS_MAP_AFFINITY, sizeof(kvs_affinity_entry), 2 * KVS_AFFINITY_SLOTS, &PinnedMaps::affinity_fd,
     KVS_MEM(affinity)},
    {KVS_MAP_FLOWS, sizeof(kvs_flow), KVS_FLOW_MAX, &PinnedMaps::flows_fd, nullptr},
    {KVS_MAP_STATS, sizeof(std::uint64_t), KVS_STATS_MAX, &PinnedMaps::stats_fd, nullptr},
    {KVS_MAP_RING_CTL, sizeof(kvs_ring_ctl), KVS_MAX_WORKERS, &PinnedMaps::ring_ctl_fd,
     KVS_MEM(ring_ctl)},
    {KVS_MAP_BIND_RING, sizeof(kvs_bind_report), KVS_MAX_WORKERS *KVS_BIND_RING_SLOTS,
     &PinnedMaps::ring_fd, KVS_MEM(ring)},
    {KVS_MAP_DP_STATS, sizeof(std::uint64_t), KVS_MAX_WORKERS *KVS_STATS_MAX,
     &PinnedMaps::dp_stats_fd, KVS_MEM(dp_stats)},
    {KVS_MAP_FLEET, sizeof(kvs_fleet), 1, &PinnedMaps::fleet_fd, KVS_MEM(fleet)},
    {KVS_MAP_OWNER, sizeof(kvs_owner_entry), 2 * KVS_OWNER_BUCKETS, &PinnedMaps::owner_fd,
     KVS_MEM(owner)},
    {KVS_MAP_FLEET_HEARD, sizeof(std::uint64_t), KVS_FLEET_HEARD_ENTRIES,
     &PinnedMaps::fleet_heard_fd, KVS_MEM(fleet_heard)},
};
#undef KVS_MEM

// The kernel lays out (and mmaps) array elements at an 8-byte stride.
size_t mmap_len(const MapSpec &s) {
    size_t stride = (s.value_size + 7u) & ~size_t{7};
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return (stride * s.max_entries + page - 1) / page * page;
}

static_assert(sizeof(kvs_backend) % 8 == 0, "mmapped array values need an 8-byte multiple size");
static_assert(sizeof(kvs_config) % 8 == 0, "mmapped array values need an 8-byte multiple size");
static_assert(sizeof(kvs_affinity_entry) % 8 == 0, "mmapped array values need 8-byte size");
static_assert(sizeof(kvs_bind_report) % 8 == 0, "mmapped array values need 8-byte size");
static_assert(sizeof(kvs_ring_ctl) % 8 == 0, "mmapped array values need 8-byte size");
static_assert(sizeof(kvs_backend_load) % 8 == 0, "mmapped array values need 8-byte size");
static_assert(sizeof(kvs_fleet) % 8 == 0, "mmapped array values need 8-byte size");
static_assert(sizeof(kvs_owner_entry) % 8 == 0, "mmapped array values need 8-byte size");

bool on_bpffs(const std::string &dir) {
    struct statfs st {};
    return statfs(dir.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

}  // namespace

PinnedMaps::~PinnedMaps() {
    for (const auto &s : kSpecs) {
        if (s.mem && *s.mem(*this)) munmap(*s.mem(*this), mmap_len(s));
        if (this->*s.fd >= 0) close(this->*s.fd);
    }
}

namespace {

// Opens the pin of `s` under `dir` and checks it has the layout this build expects.
int open_checked(const std::string &dir, const MapSpec &s, std::string *err) {
    std::string path = dir + "/" + s.name;
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) {
        *err = "opening pinned map " + path + ": " + errstr(errno);
        return -1;
    }
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
        *err = "reading info of map " + path + ": " + errstr(errno);
        close(fd);
        return -1;
    }
    if (info.value_size != s.value_size || info.max_entries != s.max_entries) {
        *err = "pinned map " + path + " has value_size " + std::to_string(info.value_size) +
               " max_entries " + std::to_string(info.max_entries) + ", this build expects " +
               std::to_string(s.value_size) + "/" + std::to_string(s.max_entries) +
               " (stale pin from another build? remove it)";
        close(fd);
        return -1;
    }
    return fd;
}

}  // namespace

std::unique_ptr<PinnedMaps> open_pinned_maps(const std::string &dir, bool create, std::string *err,
                                             bool *missing) {
    std::string e;
    if (missing) *missing = false;
    auto fail = [err](std::string msg) -> std::unique_ptr<PinnedMaps> {
        if (err) *err = std::move(msg);
        return nullptr;
    };
    if (create) {
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) return fail("creating " + dir + ": " + ec.message());
    } else if (access(dir.c_str(), F_OK) != 0) {
        if (missing) *missing = errno == ENOENT;
        return fail(std::string("no pinned maps: ") + dir + " does not exist (" + KVS_MAP_CONFIG +
                    " and the others are created by kvsteer-xdp load/attach or kvsteerd)");
    }
    if (!on_bpffs(dir)) return fail(dir + " is not on a bpffs (mount -t bpf bpf <dir>)");

    if (create) {
        bool missing = false;
        for (const auto &s : kSpecs) {
            if (access((dir + "/" + s.name).c_str(), F_OK) != 0) {
                missing = true;
                continue;
            }
            int fd = open_checked(dir, s, &e);  // a stale pin would make the load below fail
            if (fd < 0) return fail(e);
            close(fd);
        }
        if (missing) {
            // Loading the object creates exactly its map definitions and pins the missing ones
            // (existing pins are reused); the program itself is dropped again.
            LoaderOptions lo;
            lo.pin_dir = dir;
            if (!Loader::load(lo, &e)) return fail("creating maps under " + dir + ": " + e);
        }
    }

    auto m = std::make_unique<PinnedMaps>();
    m->dir = dir;
    for (const auto &s : kSpecs) {
        int fd = open_checked(dir, s, &e);
        if (fd < 0) {
            if (missing)
                *missing = access((dir + "/" + s.name).c_str(), F_OK) != 0 && errno == ENOENT;
            return fail(e);
        }
        m.get()->*s.fd = fd;
        if (!s.mem) continue;
        void *p = mmap(nullptr, mmap_len(s), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            return fail("mmap of map " + dir + "/" + s.name + ": " + errstr(errno));
        *s.mem(*m) = p;
    }
    return m;
}

bool read_xdp_stats(const PinnedMaps &m, std::uint64_t *out, unsigned n, std::string *err) {
    if (m.stats_fd < 0) {
        if (err) *err = "kvs_stats is not open";
        return false;
    }
    return read_percpu_counters(m.stats_fd, out, n > KVS_STATS_MAX ? KVS_STATS_MAX : n, err);
}

}  // namespace kvsteer::bpf
