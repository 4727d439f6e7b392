// The per-request functions must not allocate: count every operator new while they run.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include "kvsteer/core/affinity.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/maglev.h"
#include "kvsteer/core/prefix_hash.h"

namespace {
std::atomic<long> g_allocs{0};
}  // namespace

void *operator new(std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void *p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept {
    std::free(p);
}
void operator delete(void *p, std::size_t) noexcept {
    std::free(p);
}

namespace kvsteer {
namespace {

TEST(CoreNoAlloc, PerRequestPathDoesNotAllocate) {
    std::string body = R"({"model":"m","messages":[)";
    for (int i = 0; i < 50; ++i)
        body += R"({"role":"user","content":"some text of the conversation \"quoted\""},)";
    body += R"({"role":"user","content":"end"}]})";
    const std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    std::vector<MaglevBackend> b;
    for (std::uint32_t i = 0; i < 16; ++i) b.push_back({i, i * 1000003ULL + 1, 1});
    const auto table = build_maglev(b);
    std::vector<std::uint32_t> load(16, 3);
    std::vector<std::uint8_t> eligible(16, 1);
    AffinityBuilder ab;
    HashParams p;
    p.block_size = 128;
    const std::span<const std::uint8_t> buf(reinterpret_cast<const std::uint8_t *>(req.data()),
                                            req.size());
    const long before_setup = g_allocs.load();
    ASSERT_TRUE(ab.insert(12345, std::vector<std::uint16_t>{1, 2}, 0));
    ASSERT_GT(g_allocs.load(), before_setup);  // the counter does see allocations

    kvs_flow_key fk{};
    const long before = g_allocs.load();
    const RequestView r = locate_request(buf);
    const PrefixHashes h = hash_prompt(p, r.hash_model(), buf.subspan(r.key_offset, r.key_len));
    const std::uint64_t ft = hash_five_tuple(p, fk);
    bool spilled = false;
    const std::uint32_t id =
        choose_bounded(table, h.prefix, LoadView{load, eligible}, 1.25, &spilled);
    const kvs_affinity_entry *e = affinity_lookup(ab.table(), h);
    const long after = g_allocs.load();

    EXPECT_EQ(after, before);
    EXPECT_EQ(r.kind, KeyKind::OpenAIChat);  // the work above really ran
    EXPECT_GT(h.n_blocks, 10u);
    EXPECT_NE(ft, 0u);
    EXPECT_LT(id, 16u);
    EXPECT_EQ(e, nullptr);
}

}  // namespace
}  // namespace kvsteer
