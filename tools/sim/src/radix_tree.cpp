#include "radix_tree.h"

#include <algorithm>
#include <queue>

namespace kvsteer::sim {

RadixTree::RadixTree(uint32_t tenants) : nodes_(1), size_(tenants, 0) {
    // Every worker starts in the tree with nothing (the router inserts "" for each).
    for (uint32_t t = 0; t < tenants; ++t) nodes_[0].tenants.push_back({uint16_t(t), 0.0});
}

int32_t RadixTree::alloc() {
    if (!free_.empty()) {
        const int32_t i = free_.back();
        free_.pop_back();
        nodes_[size_t(i)] = Node{};
        return i;
    }
    nodes_.emplace_back();
    return int32_t(nodes_.size() - 1);
}

const std::pair<uint16_t, double> *RadixTree::find_tenant(const Node &n, uint16_t t) {
    for (const auto &p : n.tenants)
        if (p.first == t) return &p;
    return nullptr;
}

void RadixTree::touch(int32_t i, uint16_t tenant, double now) {
    Node &n = nodes_[size_t(i)];
    for (auto &p : n.tenants)
        if (p.first == tenant) {
            p.second = std::max(p.second, now);
            return;
        }
    n.tenants.push_back({tenant, now});
    size_[tenant] += n.label.size();
}

void RadixTree::insert(std::span<const uint64_t> syms, uint16_t tenant, double now) {
    int32_t cur = 0;
    touch(cur, tenant, now);
    size_t pos = 0;
    while (pos < syms.size()) {
        auto it = nodes_[size_t(cur)].children.find(syms[pos]);
        if (it == nodes_[size_t(cur)].children.end()) {
            const int32_t leaf = alloc();
            Node &l = nodes_[size_t(leaf)];
            l.label.assign(syms.begin() + long(pos), syms.end());
            l.parent = cur;
            nodes_[size_t(cur)].children.emplace(syms[pos], leaf);
            touch(leaf, tenant, now);
            return;
        }
        const int32_t c = it->second;
        const auto &lab = nodes_[size_t(c)].label;
        size_t l = 0;
        while (l < lab.size() && pos + l < syms.size() && lab[l] == syms[pos + l]) ++l;
        int32_t next = c;
        if (l < lab.size()) {
            // Split c: a new node takes the common part and every tenant of c (they all pass it).
            const int32_t m = alloc();
            Node &cn = nodes_[size_t(c)];
            Node &mn = nodes_[size_t(m)];
            mn.label.assign(cn.label.begin(), cn.label.begin() + long(l));
            mn.parent = cur;
            mn.tenants = cn.tenants;
            cn.label.erase(cn.label.begin(), cn.label.begin() + long(l));
            cn.parent = m;
            mn.children.emplace(cn.label.front(), c);
            nodes_[size_t(cur)].children[syms[pos]] = m;
            next = m;
        }
        touch(next, tenant, now);
        cur = next;
        pos += l;
    }
}

RadixTree::Match RadixTree::prefix_match(std::span<const uint64_t> syms) const {
    Match m;
    int32_t cur = 0, last = 0;
    size_t pos = 0;
    while (pos < syms.size()) {
        auto it = nodes_[size_t(cur)].children.find(syms[pos]);
        if (it == nodes_[size_t(cur)].children.end()) break;
        const auto &lab = nodes_[size_t(it->second)].label;
        size_t l = 0;
        while (l < lab.size() && pos + l < syms.size() && lab[l] == syms[pos + l]) ++l;
        pos += l;
        last = it->second;
        if (l < lab.size()) break;
        cur = it->second;
    }
    m.matched = pos;
    const Node &n = nodes_[size_t(last)];
    const std::pair<uint16_t, double> *best = nullptr;
    for (const auto &p : n.tenants)
        if (!best || p.second > best->second || (p.second == best->second && p.first < best->first))
            best = &p;
    if (best) m.tenant = best->first;
    return m;
}

uint16_t RadixTree::smallest_tenant() const {
    uint16_t best = 0;
    for (uint16_t t = 1; t < size_.size(); ++t)
        if (size_[t] < size_[best]) best = t;
    return best;
}

uint64_t RadixTree::evict(uint16_t tenant, uint64_t max_size) {
    if (size_[tenant] <= max_size) return 0;
    auto leaf_of = [&](int32_t i) {
        const Node &n = nodes_[size_t(i)];
        if (i == 0 || !find_tenant(n, tenant)) return false;
        for (const auto &[sym, c] : n.children)
            if (find_tenant(nodes_[size_t(c)], tenant)) return false;
        return true;
    };
    using Item = std::pair<double, int32_t>;  // last access, node
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> pq;
    std::vector<bool> is_free(nodes_.size(), false);
    for (int32_t f : free_) is_free[size_t(f)] = true;
    for (size_t i = 1; i < nodes_.size(); ++i)
        if (!is_free[i] && leaf_of(int32_t(i)))
            pq.push({find_tenant(nodes_[i], tenant)->second, int32_t(i)});
    uint64_t removed = 0;
    while (size_[tenant] > max_size && !pq.empty()) {
        const int32_t i = pq.top().second;
        pq.pop();
        Node &n = nodes_[size_t(i)];
        auto it = std::find_if(n.tenants.begin(), n.tenants.end(),
                               [&](const auto &p) { return p.first == tenant; });
        if (it == n.tenants.end()) continue;
        n.tenants.erase(it);
        size_[tenant] -= n.label.size();
        removed += n.label.size();
        const int32_t parent = n.parent;
        if (n.tenants.empty() && n.children.empty()) {
            nodes_[size_t(parent)].children.erase(n.label.front());
            n = Node{};
            free_.push_back(i);
        }
        if (leaf_of(parent)) pq.push({find_tenant(nodes_[size_t(parent)], tenant)->second, parent});
    }
    return removed;
}

}  // namespace kvsteer::sim
