// Weighted rendezvous (highest random weight) hashing per table slot, with a capacity cap.
// Chosen over Maglev where disruption matters more than exact balance (see maglev.h).
#include <algorithm>
#include <cmath>

#include <xxhash.h>

#include "kvsteer/core/maglev.h"

namespace kvsteer {
namespace {

constexpr std::uint64_t kIdentitySeed = 0x72656e64657a766fULL;

// splitmix64 finaliser: a cheap, well-mixed per-(backend, slot) value.
std::uint64_t mix(std::uint64_t backend_key, std::uint64_t slot) {
    std::uint64_t z = backend_key ^ (slot * 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

struct Member {
    std::uint32_t id;
    std::uint64_t identity;
    std::uint64_t key;  // per-backend hash stream
    double weight;
    std::uint32_t cap;
    std::uint32_t count = 0;
};

// Weighted rendezvous "cost": -ln(u) / w, u in (0,1); the lowest cost wins the slot.
double cost(const Member &m, std::uint32_t slot) {
    const double u = (static_cast<double>(mix(m.key, slot) >> 11) + 0.5) * 0x1.0p-53;
    return -std::log(u) / m.weight;
}

// Members with equal weight form one group: inside a group the lowest cost is simply the
// highest u, so the logarithm is taken once per group and slot, not once per member.
struct Group {
    std::size_t begin, end;
};

// Index of the winning member for `slot` among those with room (all when !respect_cap).
std::size_t best_member(const std::vector<Member> &ms, const std::vector<Group> &groups,
                        std::uint32_t slot, bool respect_cap) {
    std::size_t best = ms.size();
    double best_cost = 0;
    for (const Group &g : groups) {
        std::size_t top = ms.size();
        std::uint64_t top_u = 0;
        for (std::size_t i = g.begin; i < g.end; ++i) {
            if (respect_cap && ms[i].count >= ms[i].cap) continue;
            const std::uint64_t u = mix(ms[i].key, slot);
            if (top == ms.size() || u > top_u) top = i, top_u = u;
        }
        if (top == ms.size()) continue;
        if (groups.size() == 1) return top;
        const double c = cost(ms[top], slot);
        if (best == ms.size() || c < best_cost) best = top, best_cost = c;
    }
    return best;
}

}  // namespace

std::vector<std::uint32_t> build_rendezvous_table(std::span<const MaglevBackend> backends,
                                                  std::uint32_t size, double max_overload) {
    std::vector<std::uint32_t> table(size, KVS_BACKEND_NONE);
    std::vector<Member> ms;
    double total_w = 0;
    for (const MaglevBackend &b : backends) {
        if (b.weight == 0) continue;
        ms.push_back(Member{b.id, b.identity,
                            XXH3_64bits_withSeed(&b.identity, sizeof b.identity, kIdentitySeed),
                            static_cast<double>(b.weight), 0});
        total_w += b.weight;
    }
    if (ms.empty() || size == 0) return table;
    std::sort(ms.begin(), ms.end(), [](const Member &a, const Member &b) {
        if (a.weight != b.weight) return a.weight < b.weight;
        return a.identity != b.identity ? a.identity < b.identity : a.id < b.id;
    });
    std::vector<Group> groups;
    for (std::size_t i = 0; i < ms.size(); ++i) {
        if (groups.empty() || ms[groups.back().begin].weight != ms[i].weight)
            groups.push_back({i, i});
        groups.back().end = i + 1;
    }
    const double slack = 1.0 + std::max(0.0, max_overload);
    for (Member &m : ms) {
        m.cap = static_cast<std::uint32_t>(
            std::min<double>(size, std::ceil(size * m.weight / total_w * slack)));
    }

    std::vector<std::uint32_t> owner(size);  // index into ms
    for (std::uint32_t s = 0; s < size; ++s) {
        owner[s] = static_cast<std::uint32_t>(best_member(ms, groups, s, false));
        ++ms[owner[s]].count;
    }

    // Over-cap members give up their weakest slots (highest cost), handed out in slot order.
    std::vector<std::uint32_t> evicted;
    for (std::size_t i = 0; i < ms.size(); ++i) {
        if (ms[i].count <= ms[i].cap) continue;
        std::vector<std::pair<double, std::uint32_t>> mine;  // (cost, slot)
        for (std::uint32_t s = 0; s < size; ++s) {
            if (owner[s] == i) mine.emplace_back(cost(ms[i], s), s);
        }
        std::sort(mine.begin(), mine.end(), [](const auto &a, const auto &b) {
            return a.first != b.first ? a.first > b.first : a.second < b.second;
        });
        const std::uint32_t surplus = ms[i].count - ms[i].cap;
        for (std::uint32_t k = 0; k < surplus; ++k) evicted.push_back(mine[k].second);
        ms[i].count = ms[i].cap;
    }
    std::sort(evicted.begin(), evicted.end());
    for (const std::uint32_t s : evicted) {
        // The caps sum to at least `size`, so some member always has room.
        owner[s] = static_cast<std::uint32_t>(best_member(ms, groups, s, true));
        ++ms[owner[s]].count;
    }
    // A member whose weight is below one slot's share may win none: it takes its own best slot
    // (lowest cost) from an owner holding more than one, so every weighted backend is in the
    // table (a miss while it was the least loaded walked the whole table to find it).
    for (std::size_t i = 0; i < ms.size() && ms.size() <= size; ++i) {
        if (ms[i].count) continue;
        std::uint32_t pick = size;
        double pick_cost = 0;
        for (std::uint32_t s = 0; s < size; ++s) {
            if (ms[owner[s]].count < 2) continue;
            const double c = cost(ms[i], s);
            if (pick == size || c < pick_cost) pick = s, pick_cost = c;
        }
        if (pick == size) break;
        --ms[owner[pick]].count;
        owner[pick] = static_cast<std::uint32_t>(i);
        ms[i].count = 1;
    }
    for (std::uint32_t s = 0; s < size; ++s) table[s] = ms[owner[s]].id;
    return table;
}

}  // namespace kvsteer
