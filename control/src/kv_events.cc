// vLLM KV cache events: a bounded msgpack reader, the batch decoder, per-server accounting and the
// ZMQ subscriber thread (format and limits: kv_events.h).
#include "kvsteer/control/kv_events.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#ifdef KVS_KV_EVENTS
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#endif

namespace kvsteer::control {

namespace {

// A msgpack reader over untrusted bytes. msgpack-c's unpacker allocates each array's declared
// size before it has seen the elements (a 5-byte message can ask for gigabytes); this one checks
// every declared count against the bytes left (each element takes at least one byte) and never
// recurses, so garbage costs at most a pass over the message.
class MsgpackReader {
public:
    enum class Type : std::uint8_t { Nil, Bool, UInt, Int, Float, Str, Bin, Ext, Array, Map };
    struct Head {
        Type type = Type::Nil;
        std::uint64_t u = 0;  // UInt; Bool (0/1)
        std::int64_t i = 0;   // Int (negative values only)
        double d = 0;         // Float
        std::uint32_t len = 0;  // Str/Bin/Ext: bytes; Array: elements; Map: pairs
        std::string_view bytes;  // Str/Bin/Ext payload
    };

    explicit MsgpackReader(std::span<const std::uint8_t> b) : p_(b.data()), begin_(b.data()), end_(b.data() + b.size()) {}

    std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }
    bool done() const { return p_ == end_; }
    std::size_t offset() const { return static_cast<std::size_t>(p_ - begin_); }

    // Reads the next object's header (for strings, binaries and extensions, its payload too).
    bool head(Head *h)
    {
        if (!left())
            return false;
        const std::uint8_t t = *p_++;
        *h = Head{};
        if (t <= 0x7f) {
            h->type = Type::UInt;
            h->u = t;
            return true;
        }
        if (t >= 0xe0) {
            h->type = Type::Int;
            h->i = static_cast<std::int8_t>(t);
            return true;
        }
        if (t >= 0x80 && t <= 0x8f)
            return container(h, Type::Map, t & 0x0f);
        if (t >= 0x90 && t <= 0x9f)
            return container(h, Type::Array, t & 0x0f);
        if (t >= 0xa0 && t <= 0xbf)
            return payload(h, Type::Str, t & 0x1f);
        std::uint64_t v = 0;
        switch (t) {
        case 0xc0: h->type = Type::Nil; return true;
        case 0xc2: case 0xc3: h->type = Type::Bool; h->u = t == 0xc3; return true;
        case 0xc4: return be(1, &v) && payload(h, Type::Bin, v);
        case 0xc5: return be(2, &v) && payload(h, Type::Bin, v);
        case 0xc6: return be(4, &v) && payload(h, Type::Bin, v);
        case 0xc7: return be(1, &v) && payload(h, Type::Ext, v + 1);  // + the type byte
        case 0xc8: return be(2, &v) && payload(h, Type::Ext, v + 1);
        case 0xc9: return be(4, &v) && payload(h, Type::Ext, v + 1);
        case 0xca: {
            if (!be(4, &v))
                return false;
            float f;
            const auto bits = static_cast<std::uint32_t>(v);
            std::memcpy(&f, &bits, 4);
            h->type = Type::Float;
            h->d = f;
            return true;
        }
        case 0xcb:
            if (!be(8, &v))
                return false;
            h->type = Type::Float;
            std::memcpy(&h->d, &v, 8);
            return true;
        case 0xcc: h->type = Type::UInt; return be(1, &h->u);
        case 0xcd: h->type = Type::UInt; return be(2, &h->u);
        case 0xce: h->type = Type::UInt; return be(4, &h->u);
        case 0xcf: h->type = Type::UInt; return be(8, &h->u);
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            const unsigned n = 1u << (t - 0xd0);
            if (!be(n, &v))
                return false;
            // Sign-extend from n bytes; msgpack encoders use these for negative values, but a
            // non-negative one is legal too.
            const unsigned shift = 64 - 8 * n;
            const auto s = static_cast<std::int64_t>(v << shift) >> shift;
            if (s >= 0) {
                h->type = Type::UInt;
                h->u = static_cast<std::uint64_t>(s);
            } else {
                h->type = Type::Int;
                h->i = s;
            }
            return true;
        }
        case 0xd4: return payload(h, Type::Ext, 2);
        case 0xd5: return payload(h, Type::Ext, 3);
        case 0xd6: return payload(h, Type::Ext, 5);
        case 0xd7: return payload(h, Type::Ext, 9);
        case 0xd8: return payload(h, Type::Ext, 17);
        case 0xd9: return be(1, &v) && payload(h, Type::Str, v);
        case 0xda: return be(2, &v) && payload(h, Type::Str, v);
        case 0xdb: return be(4, &v) && payload(h, Type::Str, v);
        case 0xdc: return be(2, &v) && container(h, Type::Array, v);
        case 0xdd: return be(4, &v) && container(h, Type::Array, v);
        case 0xde: return be(2, &v) && container(h, Type::Map, v);
        case 0xdf: return be(4, &v) && container(h, Type::Map, v);
        default: return false;  // 0xc1: never used
        }
    }

    // Skips one whole object, iteratively: `pending` is bounded by the bytes left.
    bool skip()
    {
        std::uint64_t pending = 1;
        Head h;
        while (pending) {
            if (!head(&h))
                return false;
            pending--;
            if (h.type == Type::Array)
                pending += h.len;
            else if (h.type == Type::Map)
                pending += 2ull * h.len;
        }
        return true;
    }

private:
    bool be(unsigned n, std::uint64_t *v)
    {
        if (left() < n)
            return false;
        std::uint64_t x = 0;
        for (unsigned k = 0; k < n; k++)
            x = (x << 8) | p_[k];
        p_ += n;
        *v = x;
        return true;
    }
    bool payload(Head *h, Type t, std::uint64_t n)
    {
        if (n > left())
            return false;
        h->type = t;
        h->len = static_cast<std::uint32_t>(n);
        h->bytes = std::string_view(reinterpret_cast<const char *>(p_), static_cast<std::size_t>(n));
        p_ += n;
        return true;
    }
    bool container(Head *h, Type t, std::uint64_t n)
    {
        // Every element (every key and value) takes at least one byte.
        if ((t == Type::Map ? 2 * n : n) > left())
            return false;
        h->type = t;
        h->len = static_cast<std::uint32_t>(n);
        return true;
    }

    const std::uint8_t *p_, *begin_, *end_;
};

using Type = MsgpackReader::Type;

struct Decoder {
    MsgpackReader r;
    std::string err;

    bool fail(const std::string &why)
    {
        if (err.empty())
            err = why + " (at byte " + std::to_string(r.offset()) + ")";
        return false;
    }
    bool head(MsgpackReader::Head *h, const char *what)
    {
        return r.head(h) || fail(std::string("truncated or invalid msgpack in ") + what);
    }
    bool skip(const char *what) { return r.skip() || fail(std::string("truncated or invalid msgpack in ") + what); }

    bool number(double *v, const char *what)
    {
        MsgpackReader::Head h;
        if (!head(&h, what))
            return false;
        switch (h.type) {
        case Type::Float: *v = h.d; return true;
        case Type::UInt: *v = static_cast<double>(h.u); return true;
        case Type::Int: *v = static_cast<double>(h.i); return true;
        default: return fail(std::string(what) + " is not a number");
        }
    }
    bool opt_int(std::optional<std::int64_t> *v, const char *what)
    {
        MsgpackReader::Head h;
        if (!head(&h, what))
            return false;
        if (h.type == Type::Nil)
            v->reset();
        else if (h.type == Type::UInt && h.u <= static_cast<std::uint64_t>(INT64_MAX))
            *v = static_cast<std::int64_t>(h.u);
        else if (h.type == Type::Int)
            *v = h.i;
        else
            return fail(std::string(what) + " is not an integer or nil");
        return true;
    }
    bool string(std::string_view *s, const char *what)
    {
        MsgpackReader::Head h;
        if (!head(&h, what))
            return false;
        if (h.type != Type::Str)
            return fail(std::string(what) + " is not a string");
        *s = h.bytes;
        return true;
    }
    // block_hashes: a list of integers (either sign) or byte strings; only the count is kept.
    bool hashes(std::uint32_t *n)
    {
        MsgpackReader::Head h;
        if (!head(&h, "block_hashes"))
            return false;
        if (h.type != Type::Array)
            return fail("block_hashes is not a list");
        for (std::uint32_t i = 0; i < h.len; i++) {
            MsgpackReader::Head e;
            if (!head(&e, "block_hashes"))
                return false;
            if (e.type != Type::UInt && e.type != Type::Int && e.type != Type::Bin)
                return fail("block hash is neither an integer nor bytes");
        }
        *n = h.len;
        return true;
    }
    bool medium(bool *gpu)
    {
        MsgpackReader::Head h;
        if (!head(&h, "medium"))
            return false;
        if (h.type == Type::Nil) {
            *gpu = true;
            return true;
        }
        if (h.type != Type::Str)
            return fail("medium is not a string or nil");
        *gpu = h.bytes == "GPU";
        return true;
    }
    static KvEvent::Kind kind_of(std::string_view tag)
    {
        if (tag == "BlockStored")
            return KvEvent::Kind::Stored;
        if (tag == "BlockRemoved")
            return KvEvent::Kind::Removed;
        if (tag == "AllBlocksCleared")
            return KvEvent::Kind::Cleared;
        return KvEvent::Kind::Unknown;
    }

    bool event(KvEvent *ev)
    {
        MsgpackReader::Head h;
        if (!head(&h, "event"))
            return false;
        bool have_hashes = false;
        if (h.type == Type::Array) {
            // Tagged array_like struct: [tag, field...] in declaration order.
            if (h.len == 0)
                return fail("event is an empty list");
            std::string_view tag;
            if (!string(&tag, "event tag"))
                return false;
            ev->kind = kind_of(tag);
            // Index of `medium`: BlockStored (hashes, parent, token_ids, block_size, lora_id,
            // medium), BlockRemoved (hashes, medium).
            const std::uint32_t medium_at = ev->kind == KvEvent::Kind::Stored ? 6 : 2;
            for (std::uint32_t i = 1; i < h.len; i++) {
                const bool blocks = ev->kind == KvEvent::Kind::Stored || ev->kind == KvEvent::Kind::Removed;
                if (blocks && i == 1) {
                    if (!hashes(&ev->blocks))
                        return false;
                    have_hashes = true;
                } else if (blocks && i == medium_at) {
                    if (!medium(&ev->gpu))
                        return false;
                } else if (!skip("event field")) {
                    return false;
                }
            }
        } else if (h.type == Type::Map) {
            // Tagged struct as a map: {"type": tag, "block_hashes": [...], "medium": ..., ...}.
            bool have_tag = false;
            for (std::uint32_t i = 0; i < h.len; i++) {
                std::string_view key;
                if (!string(&key, "event field name"))
                    return false;
                if (key == "type") {
                    std::string_view tag;
                    if (!string(&tag, "event tag"))
                        return false;
                    ev->kind = kind_of(tag);
                    have_tag = true;
                } else if (key == "block_hashes") {
                    if (!hashes(&ev->blocks))
                        return false;
                    have_hashes = true;
                } else if (key == "medium") {
                    if (!medium(&ev->gpu))
                        return false;
                } else if (!skip("event field")) {
                    return false;
                }
            }
            if (!have_tag)
                return fail("event has no \"type\"");
        } else {
            return fail("event is neither a list nor a map");
        }
        if ((ev->kind == KvEvent::Kind::Stored || ev->kind == KvEvent::Kind::Removed) && !have_hashes)
            return fail("block event without block_hashes");
        return true;
    }

    bool events(KvBatch *b)
    {
        MsgpackReader::Head h;
        if (!head(&h, "events"))
            return false;
        if (h.type != Type::Array)
            return fail("events is not a list");
        b->events.reserve(h.len);  // bounded: h.len <= bytes left
        for (std::uint32_t i = 0; i < h.len; i++) {
            KvEvent ev;
            if (!event(&ev))
                return false;
            b->events.push_back(ev);
        }
        return true;
    }

    bool batch(KvBatch *b)
    {
        MsgpackReader::Head h;
        if (!head(&h, "batch"))
            return false;
        if (h.type == Type::Array) {
            if (h.len < 2)
                return fail("batch has fewer than 2 fields (ts, events)");
            if (!number(&b->ts, "batch ts") || !events(b))
                return false;
            if (h.len >= 3 && !opt_int(&b->dp_rank, "data_parallel_rank"))
                return false;
            for (std::uint32_t i = 3; i < h.len; i++)
                if (!skip("batch field"))
                    return false;
        } else if (h.type == Type::Map) {
            bool have_ts = false, have_events = false;
            for (std::uint32_t i = 0; i < h.len; i++) {
                std::string_view key;
                if (!string(&key, "batch field name"))
                    return false;
                if (key == "ts") {
                    if (!number(&b->ts, "batch ts"))
                        return false;
                    have_ts = true;
                } else if (key == "events") {
                    if (!events(b))
                        return false;
                    have_events = true;
                } else if (key == "data_parallel_rank") {
                    if (!opt_int(&b->dp_rank, "data_parallel_rank"))
                        return false;
                } else if (!skip("batch field")) {
                    return false;
                }
            }
            if (!have_ts || !have_events)
                return fail("batch has no ts or no events");
        } else {
            return fail("batch is neither a list nor a map");
        }
        if (!r.done())
            return fail(std::to_string(r.left()) + " bytes after the batch");
        return true;
    }
};

}  // namespace

bool decode_kv_batch(std::span<const std::uint8_t> payload, KvBatch *out, std::string *err)
{
    Decoder d{MsgpackReader(payload), {}};
    KvBatch b;
    if (!d.batch(&b)) {
        if (err)
            *err = d.err;
        return false;
    }
    *out = std::move(b);
    return true;
}

KvReceived decode_kv_frames(const std::vector<std::string> &frames)
{
    KvReceived r;
    if (frames.size() != 3) {
        r.error = "message has " + std::to_string(frames.size()) + " frames, not 3 (topic, seq, payload)";
        return r;
    }
    if (frames[1].size() != 8) {
        r.error = "seq frame has " + std::to_string(frames[1].size()) + " bytes, not 8";
        return r;
    }
    std::uint64_t seq = 0;
    for (unsigned char c : frames[1])
        seq = (seq << 8) | c;
    r.seq = seq;
    const auto &p = frames[2];
    std::string err;
    if (!decode_kv_batch({reinterpret_cast<const std::uint8_t *>(p.data()), p.size()}, &r.batch, &err)) {
        r.error = "payload: " + err;
        return r;
    }
    r.ok = true;
    return r;
}

bool KvEventStats::account(const KvReceived &m, std::chrono::steady_clock::time_point now)
{
    messages++;
    last_message = now;
    bool reset = false;
    // The sequence is read even when the payload is not: a batch we could not decode is still
    // not a gap.
    if (m.seq) {
        if (last_seq && *m.seq <= *last_seq) {
            // Numbering starts at 0 per publisher: it restarted, so did the engine and its cache.
            publisher_restarts++;
            reset = true;
        } else if (last_seq && *m.seq - *last_seq > 1) {
            seq_gaps++;
            missed_batches += *m.seq - *last_seq - 1;
        }
        last_seq = m.seq;  // the first one seen is the baseline: batches before we joined are not gaps
    }
    if (reset)
        resident_blocks = 0;
    if (!m.ok) {
        decode_errors++;
        last_error = m.error;
    } else {
        last_batch_ts = m.batch.ts;
        for (const auto &e : m.batch.events) {
            switch (e.kind) {
            case KvEvent::Kind::Stored:
                if (!e.gpu) {
                    other_medium_blocks += e.blocks;
                    break;
                }
                blocks_stored += e.blocks;
                resident_blocks += e.blocks;
                break;
            case KvEvent::Kind::Removed:
                if (!e.gpu) {
                    other_medium_blocks += e.blocks;
                    break;
                }
                blocks_removed += e.blocks;
                // Floored: removals of blocks stored before we subscribed.
                resident_blocks = resident_blocks > e.blocks ? resident_blocks - e.blocks : 0;
                break;
            case KvEvent::Kind::Cleared:
                clears++;
                resident_blocks = 0;
                reset = true;
                break;
            case KvEvent::Kind::Unknown: unknown_events++; break;
            }
        }
    }
    if (reset)
        resets++;
    return reset;
}

bool KvEventStats::on_message(const std::vector<std::string> &frames, std::chrono::steady_clock::time_point now)
{
    return account(decode_kv_frames(frames), now);
}

struct KvEventSubscriber::Impl {
    std::function<void()> wake;
    mutable std::mutex mu;  // guards subs, next_serial
    struct Sub {
        std::uint64_t serial;  // tells a socket of an earlier subscription of the same id apart
        KvEventStats st;
    };
    std::map<std::uint16_t, Sub> subs;
    std::uint64_t next_serial = 1;
    std::atomic<std::uint64_t> resets{0};
#ifdef KVS_KV_EVENTS
    std::atomic<bool> stop{false};
    int ctl_fd = -1;  // eventfd: the subscription set changed, or stop
    void *ctx = nullptr;
    std::thread thr;

    void poke()
    {
        std::uint64_t one = 1;
        if (ctl_fd >= 0)
            [[maybe_unused]] auto w = write(ctl_fd, &one, sizeof one);
    }
    void loop();
#else
    void poke() {}
#endif
};

KvEventSubscriber::KvEventSubscriber(std::function<void()> wake) : impl_(std::make_unique<Impl>())
{
    impl_->wake = std::move(wake);
}

void KvEventSubscriber::set(std::uint16_t id, const std::string &endpoint)
{
    {
        std::lock_guard lk(impl_->mu);
        auto &sub = impl_->subs[id];
        sub.serial = impl_->next_serial++;
        sub.st = KvEventStats{};
        sub.st.endpoint = endpoint;
    }
    impl_->poke();
}

void KvEventSubscriber::remove(std::uint16_t id)
{
    {
        std::lock_guard lk(impl_->mu);
        impl_->subs.erase(id);
    }
    impl_->poke();
}

std::optional<KvEventStats> KvEventSubscriber::stats(std::uint16_t id) const
{
    std::lock_guard lk(impl_->mu);
    auto it = impl_->subs.find(id);
    if (it == impl_->subs.end())
        return std::nullopt;
    return it->second.st;
}

std::map<std::uint16_t, KvEventStats> KvEventSubscriber::all_stats() const
{
    std::map<std::uint16_t, KvEventStats> out;
    std::lock_guard lk(impl_->mu);
    for (const auto &[id, sub] : impl_->subs)
        out.emplace(id, sub.st);
    return out;
}

std::uint64_t KvEventSubscriber::reset_events() const { return impl_->resets.load(); }

#ifdef KVS_KV_EVENTS

bool kv_events_supported() { return true; }

namespace {

// A message is at most this big: libzmq drops the connection of a peer that sends more (it
// reconnects; what was lost shows as a sequence gap). Far above a real batch.
constexpr std::int64_t kMaxMessage = 64ll << 20;
// Messages read from one socket before looking at the others and at subscription changes.
constexpr int kBurst = 256;
// Frames kept per message: a well-formed one has 3; more are read, counted and dropped.
constexpr std::size_t kMaxFrames = 8;

}  // namespace

void KvEventSubscriber::Impl::loop()
{
    struct Sock {
        std::uint16_t id;
        std::uint64_t serial;
        void *s;  // null: connect failed (reported), not retried until the subscription changes
    };
    std::vector<Sock> socks;
    std::vector<zmq_pollitem_t> items;
    std::vector<std::size_t> polled;  // items[j + 1] is socks[polled[j]]
    std::vector<std::string> frames;
    while (!stop.load()) {
        // Follow the wanted subscriptions.
        std::vector<std::tuple<std::uint16_t, std::uint64_t, std::string>> want;
        {
            std::lock_guard lk(mu);
            for (const auto &[id, sub] : subs)
                want.emplace_back(id, sub.serial, sub.st.endpoint);
        }
        for (std::size_t i = 0; i < socks.size();) {
            bool keep = false;
            for (const auto &[id, serial, ep] : want)
                keep |= id == socks[i].id && serial == socks[i].serial;
            if (!keep) {
                if (socks[i].s)
                    zmq_close(socks[i].s);
                socks.erase(socks.begin() + static_cast<long>(i));
            } else {
                i++;
            }
        }
        for (const auto &[id, serial, ep] : want) {
            bool have = false;
            for (const auto &s : socks)
                have |= s.id == id && s.serial == serial;
            if (have)
                continue;
            void *s = zmq_socket(ctx, ZMQ_SUB);
            std::string err;
            if (!s) {
                err = std::string("zmq_socket: ") + zmq_strerror(zmq_errno());
            } else {
                const int linger = 0, hwm = 10000, ivl = 100, ivl_max = 5000, ipv6 = 1;
                const std::int64_t max_msg = kMaxMessage;
                zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
                zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
                zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
                zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
                zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
                zmq_setsockopt(s, ZMQ_IPV6, &ipv6, sizeof ipv6);  // tcp://[v6]:port (v4 still works)
                zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);  // every topic (vLLM's default is "")
                if (zmq_connect(s, ep.c_str()) != 0) {
                    err = "connect " + ep + ": " + zmq_strerror(zmq_errno());
                    zmq_close(s);
                    s = nullptr;
                }
            }
            if (!err.empty()) {
                spdlog::warn("kv-events: backend {}: {}", id, err);
                std::lock_guard lk(mu);
                auto it = subs.find(id);
                if (it != subs.end() && it->second.serial == serial)
                    it->second.st.last_error = err;
            }
            socks.push_back({id, serial, s});
        }

        items.clear();
        polled.clear();
        items.push_back({nullptr, ctl_fd, ZMQ_POLLIN, 0});
        for (std::size_t k = 0; k < socks.size(); k++) {
            if (socks[k].s) {
                items.push_back({socks[k].s, -1, ZMQ_POLLIN, 0});
                polled.push_back(k);
            }
        }
        if (zmq_poll(items.data(), static_cast<int>(items.size()), -1) < 0) {
            if (zmq_errno() == ETERM)
                break;
            continue;  // EINTR
        }
        if (items[0].revents) {
            std::uint64_t v;
            [[maybe_unused]] auto r = read(ctl_fd, &v, sizeof v);
        }
        bool any_reset = false;
        for (std::size_t j = 0; j < polled.size(); j++) {
            if (!(items[j + 1].revents & ZMQ_POLLIN))
                continue;
            const std::size_t k = polled[j];
            for (int n = 0; n < kBurst; n++) {
                frames.clear();
                std::size_t extra = 0;  // frames beyond kMaxFrames: counted, not kept
                bool more = true, got = false;
                while (more) {
                    zmq_msg_t msg;
                    zmq_msg_init(&msg);
                    if (zmq_msg_recv(&msg, socks[k].s, ZMQ_DONTWAIT) < 0) {
                        zmq_msg_close(&msg);
                        break;  // EAGAIN: nothing more (parts of one message arrive together)
                    }
                    got = true;
                    if (frames.size() < kMaxFrames)
                        frames.emplace_back(static_cast<const char *>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
                    else
                        extra++;
                    more = zmq_msg_more(&msg);
                    zmq_msg_close(&msg);
                }
                if (!got)
                    break;
                // Decoded off the lock: the daemon's reads wait only for the counting.
                KvReceived m;
                if (extra)
                    m.error = "message has " + std::to_string(frames.size() + extra) + " frames, not 3";
                else
                    m = decode_kv_frames(frames);
                std::lock_guard lk(mu);
                auto it = subs.find(socks[k].id);
                if (it == subs.end() || it->second.serial != socks[k].serial)
                    break;  // unsubscribed meanwhile
                KvEventStats &st = it->second.st;
                const bool had_errors = st.decode_errors != 0;
                if (st.account(m, std::chrono::steady_clock::now())) {
                    resets.fetch_add(1);
                    any_reset = true;
                }
                if (!m.ok && !had_errors)  // the first bad message per subscription; later ones are counted
                    spdlog::warn("kv-events: backend {} ({}): undecodable message skipped: {}", socks[k].id,
                                 st.endpoint, m.error);
            }
        }
        if (any_reset && wake)
            wake();
    }
    for (auto &s : socks)
        if (s.s)
            zmq_close(s.s);
}

KvEventSubscriber::~KvEventSubscriber()
{
    impl_->stop.store(true);
    impl_->poke();
    if (impl_->thr.joinable())
        impl_->thr.join();
    if (impl_->ctx)
        zmq_ctx_term(impl_->ctx);  // every socket is closed with linger 0: returns at once
    if (impl_->ctl_fd >= 0)
        close(impl_->ctl_fd);
}

bool KvEventSubscriber::start(std::string *err)
{
    impl_->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (impl_->ctl_fd < 0) {
        *err = std::string("kv-events: eventfd: ") + std::strerror(errno);
        return false;
    }
    impl_->ctx = zmq_ctx_new();
    if (!impl_->ctx) {
        *err = std::string("kv-events: zmq_ctx_new: ") + zmq_strerror(zmq_errno());
        return false;
    }
    zmq_ctx_set(impl_->ctx, ZMQ_IO_THREADS, 1);
    impl_->thr = std::thread([this] { impl_->loop(); });
    return true;
}

#else  // !KVS_KV_EVENTS

bool kv_events_supported() { return false; }

KvEventSubscriber::~KvEventSubscriber() = default;

bool KvEventSubscriber::start(std::string *err)
{
    *err = "kv-events: this kvsteerd was built without KV events support (libzmq was not found at build time)";
    return false;
}

#endif  // KVS_KV_EVENTS

}  // namespace kvsteer::control
