// vLLM KV events: msgpack payload -> KvBatch, and the multipart framing around it (format:
// kv_events.h).
//
// msgpack-c reads the bytes: msgpack::parse() drives the visitor below through the object tree in
// stream order, and checks types, lengths and truncation. It is used as an event parser, not as
// msgpack::unpack(): the unpacker builds a tree and allocates each container's declared size
// before it has seen the elements, and its unpack_limit caps each count but not the sum over the
// containers still open (a few bytes of nested headers can claim gigabytes). The visitor
// allocates nothing per declared count: it keeps a frame for each container it decodes (at most
// four deep), counts its way through the fields it skips (no recursion, no frames), and grows the
// event list only by events actually read. msgpack-c's own parse stack holds an entry per open
// container, each backed by only one byte of the message: a hostile publisher's megabytes of
// nested array headers made it hundreds of MB. So a message nesting more than kMaxNesting
// containers is refused at the first one too many (a real batch nests four or five).
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "kvsteer/control/kv_events.h"

namespace kvsteer::control {

namespace {

// Containers open at once (decoded and skipped together), the batch itself included.
constexpr std::size_t kMaxNesting = 16;

// What the next value is, from where it sits in the batch.
enum class Role : std::uint8_t {
    Batch,
    Ts,
    Events,
    DpRank,
    BatchKey,
    BatchField,
    Event,
    Tag,
    Hashes,
    Hash,
    Medium,
    EventKey,
    EventField,
};

const char *name(Role r) {
    switch (r) {
        case Role::Batch:
            return "batch";
        case Role::Ts:
            return "batch ts";
        case Role::Events:
            return "events";
        case Role::DpRank:
            return "data_parallel_rank";
        case Role::BatchKey:
            return "batch field name";
        case Role::BatchField:
            return "batch field";
        case Role::Event:
            return "event";
        case Role::Tag:
            return "event tag";
        case Role::Hashes:
        case Role::Hash:
            return "block_hashes";
        case Role::Medium:
            return "medium";
        case Role::EventKey:
            return "event field name";
        case Role::EventField:
            return "event field";
    }
    return "?";
}

KvEvent::Kind kind_of(std::string_view tag) {
    if (tag == "BlockStored") return KvEvent::Kind::Stored;
    if (tag == "BlockRemoved") return KvEvent::Kind::Removed;
    if (tag == "AllBlocksCleared") return KvEvent::Kind::Cleared;
    return KvEvent::Kind::Unknown;
}

bool block_kind(KvEvent::Kind k) {
    return k == KvEvent::Kind::Stored || k == KvEvent::Kind::Removed;
}

// One scalar as msgpack-c reports it.
struct Scalar {
    enum class Type : std::uint8_t { Nil, Bool, UInt, Int, Float, Str, Bin, Ext };
    explicit Scalar(Type t, std::uint64_t v = 0) : type(t), u(v) {}
    Type type;
    std::uint64_t u;     // UInt; Bool (0/1)
    std::int64_t i = 0;  // Int: negative values only
    double d = 0;
    std::string_view bytes;  // Str
};

class BatchVisitor {
   public:
    BatchVisitor(KvBatch *out, std::size_t size) : out_(out), size_(size) {}

    const std::string &error() const { return err_; }

    // msgpack::parse() callbacks (the null_visitor interface). false stops the parse.
    bool visit_nil() { return scalar(Scalar::Type::Nil); }
    bool visit_boolean(bool v) { return scalar(Scalar::Type::Bool, v); }
    bool visit_positive_integer(std::uint64_t v) { return scalar(Scalar::Type::UInt, v); }
    bool visit_negative_integer(std::int64_t v) {
        // msgpack-c reports every int8..int64 encoding here, non-negative values included.
        if (v >= 0) return scalar(Scalar::Type::UInt, static_cast<std::uint64_t>(v));
        Scalar s{Scalar::Type::Int};
        s.i = v;
        return scalar(s);
    }
    bool visit_float32(float v) { return visit_float64(v); }
    bool visit_float64(double v) {
        Scalar s{Scalar::Type::Float};
        s.d = v;
        return scalar(s);
    }
    bool visit_str(const char *v, std::uint32_t n) {
        Scalar s{Scalar::Type::Str};
        s.bytes = std::string_view(v, n);
        return scalar(s);
    }
    bool visit_bin(const char *, std::uint32_t) { return scalar(Scalar::Type::Bin); }
    bool visit_ext(const char *, std::uint32_t) { return scalar(Scalar::Type::Ext); }
    bool start_array(std::uint32_t n) { return container(false, n); }
    bool start_map(std::uint32_t n) { return container(true, n); }
    bool end_array() { return end(); }
    bool end_map() { return end(); }

    bool start_array_item() {
        if (skipping_) return true;
        const Frame &f = frames_.back();
        switch (f.role) {
            case Role::Batch:
                next_ = f.index == 0   ? Role::Ts
                        : f.index == 1 ? Role::Events
                        : f.index == 2 ? Role::DpRank
                                       : Role::BatchField;
                break;
            case Role::Events:
                next_ = Role::Event;
                break;
            case Role::Hashes:
                next_ = Role::Hash;
                break;
            case Role::Event: {
                // Tagged array_like struct: [tag, field...] in declaration order. Index of
                // `medium`: BlockStored (hashes, parent, token_ids, block_size, lora_id, medium),
                // BlockRemoved (hashes, medium).
                const bool blocks = block_kind(event_.kind);
                const std::uint32_t medium_at = event_.kind == KvEvent::Kind::Stored ? 6 : 2;
                next_ = f.index == 0                     ? Role::Tag
                        : blocks && f.index == 1         ? Role::Hashes
                        : blocks && f.index == medium_at ? Role::Medium
                                                         : Role::EventField;
                break;
            }
            default:
                next_ = Role::BatchField;
                break;  // not reached: no other container is decoded
        }
        return true;
    }
    bool end_array_item() {
        if (!skipping_) frames_.back().index++;
        return true;
    }
    bool start_map_key() {
        if (!skipping_)
            next_ = frames_.back().role == Role::Batch ? Role::BatchKey : Role::EventKey;
        return true;
    }
    bool end_map_key() { return true; }
    bool start_map_value() {
        if (!skipping_) next_ = frames_.back().value;
        return true;
    }
    bool end_map_value() { return end_array_item(); }

    void parse_error(std::size_t, std::size_t at) {
        set_error("truncated or invalid msgpack in " + std::string(name(where())),
                  "bad type byte at byte " + std::to_string(at > 0 ? at - 1 : 0));
    }
    void insufficient_bytes(std::size_t, std::size_t) {
        set_error("truncated or invalid msgpack in " + std::string(name(where())),
                  "ends at byte " + std::to_string(size_));
    }
    bool referenced() const { return false; }
    void set_referenced(bool) {}

    bool fail(const std::string &why) {
        set_error(why);
        return false;
    }

   private:
    struct Frame {
        Role role;  // Batch, Events, Event or Hashes
        bool map;
        std::uint32_t index = 0;        // array item or map pair being read
        Role value = Role::BatchField;  // map: the role of the value after the key just read
    };

    // The role being read when the bytes ran out: the skipped field's, while skipping.
    Role where() const { return skipping_ ? skip_role_ : next_; }

    // The first error wins; inside an event it names the event (0-based).
    void set_error(std::string why, const std::string &detail = {}) {
        if (!err_.empty()) return;
        std::string where = in_event_ ? "event " + std::to_string(out_->events.size()) : "";
        if (!detail.empty()) where += (where.empty() ? "" : ", ") + detail;
        err_ = where.empty() ? std::move(why) : why + " (" + where + ")";
    }

    bool skip_container() {
        if (!skipping_) skip_role_ = next_;
        skipping_++;
        return true;
    }

    bool container(bool map, std::uint32_t n) {
        // false stops msgpack-c before it pushes the container onto its own stack.
        if (frames_.size() + skipping_ >= kMaxNesting)
            return fail("msgpack nested deeper than " + std::to_string(kMaxNesting) +
                        " lists or maps");
        if (skipping_ || next_ == Role::BatchField || next_ == Role::EventField)
            return skip_container();
        switch (next_) {
            case Role::Batch:
                if (!map && n < 2) return fail("batch has fewer than 2 fields (ts, events)");
                frames_.push_back({Role::Batch, map});
                return true;
            case Role::Events:
                if (map) return fail("events is not a list");
                frames_.push_back({Role::Events, false});
                return true;
            case Role::Event:
                if (!map && n == 0) return fail("event is an empty list");
                event_ = KvEvent{};
                have_tag_ = have_hashes_ = false;
                in_event_ = true;
                frames_.push_back({Role::Event, map});
                return true;
            case Role::Hashes:
                if (map) return fail("block_hashes is not a list");
                hashes_ = 0;
                frames_.push_back({Role::Hashes, false});
                return true;
            default:
                return wrong_type();
        }
    }

    bool end() {
        if (skipping_) {
            skipping_--;
            return true;
        }
        const Frame f = frames_.back();
        frames_.pop_back();
        switch (f.role) {
            case Role::Batch:
                if (f.map && (!have_ts_ || !have_events_))
                    return fail("batch has no ts or no events");
                return true;
            case Role::Event:
                if (f.map && !have_tag_) return fail("event has no \"type\"");
                if (block_kind(event_.kind) && !have_hashes_)
                    return fail("block event without block_hashes");
                out_->events.push_back(event_);
                in_event_ = false;
                return true;
            case Role::Hashes:
                event_.blocks = hashes_;
                have_hashes_ = true;
                return true;
            default:
                return true;
        }
    }

    // A value of the wrong type (a scalar where a container belongs, or the reverse).
    bool wrong_type() {
        switch (next_) {
            case Role::Batch:
                return fail("batch is neither a list nor a map");
            case Role::Ts:
                return fail("batch ts is not a number");
            case Role::Events:
                return fail("events is not a list");
            case Role::DpRank:
                return fail("data_parallel_rank is not an integer or nil");
            case Role::BatchKey:
                return fail("batch field name is not a string");
            case Role::Event:
                return fail("event is neither a list nor a map");
            case Role::Tag:
                return fail("event tag is not a string");
            case Role::Hashes:
                return fail("block_hashes is not a list");
            case Role::Hash:
                return fail("block hash is neither an integer nor bytes");
            case Role::Medium:
                return fail("medium is not a string or nil");
            case Role::EventKey:
                return fail("event field name is not a string");
            default:
                return fail("unexpected value");
        }
    }

    bool scalar(Scalar::Type t, std::uint64_t u = 0) { return scalar(Scalar(t, u)); }
    bool scalar(const Scalar &v) {
        using T = Scalar::Type;
        if (skipping_) return true;
        switch (next_) {
            case Role::BatchField:
            case Role::EventField:
                return true;
            case Role::Ts:
                if (v.type == T::Float)
                    out_->ts = v.d;
                else if (v.type == T::UInt)
                    out_->ts = static_cast<double>(v.u);
                else if (v.type == T::Int)
                    out_->ts = static_cast<double>(v.i);
                else
                    return wrong_type();
                have_ts_ = true;
                return true;
            case Role::DpRank:
                if (v.type == T::Nil)
                    out_->dp_rank.reset();
                else if (v.type == T::UInt && v.u <= static_cast<std::uint64_t>(INT64_MAX))
                    out_->dp_rank = static_cast<std::int64_t>(v.u);
                else if (v.type == T::Int)
                    out_->dp_rank = v.i;
                else
                    return wrong_type();
                return true;
            case Role::BatchKey:
                if (v.type != T::Str) return wrong_type();
                if (v.bytes == "ts")
                    frames_.back().value = Role::Ts;
                else if (v.bytes == "events")
                    frames_.back().value = Role::Events, have_events_ = true;
                else if (v.bytes == "data_parallel_rank")
                    frames_.back().value = Role::DpRank;
                else
                    frames_.back().value = Role::BatchField;
                return true;
            case Role::EventKey:
                if (v.type != T::Str) return wrong_type();
                if (v.bytes == "type")
                    frames_.back().value = Role::Tag;
                else if (v.bytes == "block_hashes")
                    frames_.back().value = Role::Hashes;
                else if (v.bytes == "medium")
                    frames_.back().value = Role::Medium;
                else
                    frames_.back().value = Role::EventField;
                return true;
            case Role::Tag:
                if (v.type != T::Str) return wrong_type();
                event_.kind = kind_of(v.bytes);
                have_tag_ = true;
                return true;
            case Role::Hash:
                if (v.type != T::UInt && v.type != T::Int && v.type != T::Bin) return wrong_type();
                hashes_++;
                return true;
            case Role::Medium:
                if (v.type == T::Nil)
                    event_.gpu = true;
                else if (v.type == T::Str)
                    event_.gpu = v.bytes == "GPU";
                else
                    return wrong_type();
                return true;
            default:
                return wrong_type();
        }
    }

    KvBatch *out_;
    std::size_t size_;
    std::string err_;
    std::vector<Frame> frames_;  // the containers being decoded: batch, events, event, block_hashes
    Role next_ = Role::Batch;
    Role skip_role_ = Role::BatchField;
    std::uint64_t skipping_ = 0;  // depth inside a skipped field
    KvEvent event_;
    std::uint32_t hashes_ = 0;
    bool have_ts_ = false, have_events_ = false, have_tag_ = false, have_hashes_ = false,
         in_event_ = false;
};

}  // namespace

bool decode_kv_batch(std::span<const std::uint8_t> payload, KvBatch *out, std::string *err) {
    KvBatch b;
    BatchVisitor v(&b, payload.size());
    std::size_t off = 0;
    bool ok = false;
    try {
        ok = msgpack::parse(reinterpret_cast<const char *>(payload.data()), payload.size(), off, v);
    } catch (const std::exception &e) {
        v.fail(std::string("invalid msgpack: ") + e.what());
        ok = false;
    }
    if (ok && off != payload.size())
        ok = v.fail(std::to_string(payload.size() - off) + " bytes after the batch");
    if (!ok) {
        if (err) *err = v.error().empty() ? "invalid msgpack" : v.error();
        return false;
    }
    *out = std::move(b);
    return true;
}

KvReceived decode_kv_frames(const std::vector<std::string> &frames) {
    KvReceived r;
    if (frames.size() != 3) {
        r.error =
            "message has " + std::to_string(frames.size()) + " frames, not 3 (topic, seq, payload)";
        return r;
    }
    if (frames[1].size() != 8) {
        r.error = "seq frame has " + std::to_string(frames[1].size()) + " bytes, not 8";
        return r;
    }
    std::uint64_t seq = 0;
    for (unsigned char c : frames[1]) seq = (seq << 8) | c;
    r.seq = seq;
    const auto &p = frames[2];
    std::string err;
    if (!decode_kv_batch({reinterpret_cast<const std::uint8_t *>(p.data()), p.size()}, &r.batch,
                         &err)) {
        r.error = "payload: " + err;
        return r;
    }
    r.ok = true;
    return r;
}

}  // namespace kvsteer::control
