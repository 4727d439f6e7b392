// open_fleet_maps: kvs_fleet and kvs_owner opened or created under the bpffs directory.
#include "fleet_maps.h"

#include <bpf/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvsteer::control {

namespace {

struct Spec {
    const char *name;
    std::uint32_t value_size, max_entries;
};
const Spec kFleet{KVS_MAP_FLEET, sizeof(kvs_fleet), 1};
const Spec kOwner{KVS_MAP_OWNER, sizeof(kvs_owner_entry), 2 * KVS_OWNER_BUCKETS};
static_assert(sizeof(kvs_fleet) % 8 == 0 && sizeof(kvs_owner_entry) == 8,
              "mmapped array values need an 8-byte multiple size");

std::size_t mmap_len(const Spec &s) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return (std::size_t{s.value_size} * s.max_entries + page - 1) / page * page;
}

// The pinned map's fd, created and pinned first when missing and `create`; -1 + err.
int open_one(const std::string &dir, const Spec &s, bool create, std::string *err) {
    const std::string path = dir + "/" + s.name;
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0 && errno == ENOENT && create) {
        LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_MMAPABLE);
        fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, s.name, sizeof(__u32), s.value_size, s.max_entries,
                            &o);
        if (fd < 0) {
            *err = "creating map " + path + ": " + std::strerror(errno);
            return -1;
        }
        if (bpf_obj_pin(fd, path.c_str()) != 0) {
            *err = "pinning map " + path + ": " + std::strerror(errno);
            close(fd);
            return -1;
        }
        return fd;
    }
    if (fd < 0) {
        *err = "opening pinned map " + path + ": " + std::strerror(errno);
        return -1;
    }
    bpf_map_info info{};
    __u32 len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
        *err = "reading info of map " + path + ": " + std::strerror(errno);
    } else if (info.type != BPF_MAP_TYPE_ARRAY || info.value_size != s.value_size ||
               info.max_entries != s.max_entries || !(info.map_flags & BPF_F_MMAPABLE)) {
        *err = "pinned map " + path + " has value_size " + std::to_string(info.value_size) +
               " max_entries " + std::to_string(info.max_entries) + ", this build expects an " +
               "mmapable array of " + std::to_string(s.value_size) + "/" +
               std::to_string(s.max_entries) + " (stale pin from another build? remove it)";
    } else {
        return fd;
    }
    close(fd);
    return -1;
}

void *map_one(const std::string &dir, const Spec &s, int fd, std::string *err) {
    void *p = mmap(nullptr, mmap_len(s), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) return p;
    *err = "mmap of map " + dir + "/" + s.name + ": " + std::strerror(errno);
    return nullptr;
}

}  // namespace

PinnedFleetMaps::~PinnedFleetMaps() {
    if (fleet) munmap(fleet, mmap_len(kFleet));
    if (owner) munmap(owner, mmap_len(kOwner));
    if (fleet_fd >= 0) close(fleet_fd);
    if (owner_fd >= 0) close(owner_fd);
}

std::unique_ptr<PinnedFleetMaps> open_fleet_maps(const std::string &dir, bool create,
                                                 std::string *err) {
    auto m = std::make_unique<PinnedFleetMaps>();
    if ((m->fleet_fd = open_one(dir, kFleet, create, err)) < 0 ||
        (m->owner_fd = open_one(dir, kOwner, create, err)) < 0)
        return nullptr;
    m->fleet = static_cast<kvs_fleet *>(map_one(dir, kFleet, m->fleet_fd, err));
    if (!m->fleet) return nullptr;
    m->owner = static_cast<kvs_owner_entry *>(map_one(dir, kOwner, m->owner_fd, err));
    if (!m->owner) return nullptr;
    return m;
}

}  // namespace kvsteer::control
