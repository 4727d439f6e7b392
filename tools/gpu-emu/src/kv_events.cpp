#include "kv_events.h"

#include <msgpack.h>
#include <zmq.h>

#include <cstring>
#include <stdexcept>

namespace kvsteer::emu {
namespace {

void pack_str(msgpack_packer &pk, const char *s) {
    const size_t n = std::strlen(s);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, s, n);
}

}  // namespace

std::string encode_kv_batch(const std::vector<model::BlockEvent> &evs, double ts,
                            uint32_t block_tokens) {
    // Group runs: Stored events continuing one chain, or any Removed events in a row.
    struct Group {
        model::BlockEvent::Type type;
        std::vector<uint64_t> hashes;
        uint64_t parent;
        bool has_parent;
    };
    std::vector<Group> groups;
    for (const auto &e : evs) {
        if (!groups.empty() && groups.back().type == e.type &&
            (e.type == model::BlockEvent::Removed ||
             (e.has_parent && e.parent == groups.back().hashes.back()))) {
            groups.back().hashes.push_back(e.hash);
            continue;
        }
        groups.push_back({e.type, {e.hash}, e.parent, e.has_parent});
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, ts);
    msgpack_pack_array(&pk, groups.size());
    for (const auto &g : groups) {
        if (g.type == model::BlockEvent::Stored) {
            msgpack_pack_array(&pk, 7);
            pack_str(pk, "BlockStored");
            msgpack_pack_array(&pk, g.hashes.size());
            for (uint64_t h : g.hashes) msgpack_pack_uint64(&pk, h);
            if (g.has_parent)
                msgpack_pack_uint64(&pk, g.parent);
            else
                msgpack_pack_nil(&pk);
            msgpack_pack_array(&pk, 0);  // token_ids
            msgpack_pack_uint32(&pk, block_tokens);
            msgpack_pack_nil(&pk);  // lora_id
            pack_str(pk, "GPU");
        } else {
            msgpack_pack_array(&pk, 3);
            pack_str(pk, "BlockRemoved");
            msgpack_pack_array(&pk, g.hashes.size());
            for (uint64_t h : g.hashes) msgpack_pack_uint64(&pk, h);
            pack_str(pk, "GPU");
        }
    }
    std::string out(sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy(&sbuf);
    return out;
}

KvEventPublisher::KvEventPublisher(const std::string &endpoint, std::string topic,
                                   uint32_t block_tokens)
    : topic_(std::move(topic)), block_tokens_(block_tokens) {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_PUB);
    const int linger = 0, hwm = 100000;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock_, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_bind(sock_, endpoint.c_str()) != 0) {
        const std::string err = zmq_strerror(zmq_errno());
        zmq_close(sock_);
        zmq_ctx_term(ctx_);
        throw std::runtime_error("cannot bind KV events socket '" + endpoint + "': " + err);
    }
}

KvEventPublisher::~KvEventPublisher() {
    zmq_close(sock_);
    zmq_ctx_term(ctx_);
}

std::string KvEventPublisher::endpoint() const {
    char buf[256];
    size_t n = sizeof buf;
    if (zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, buf, &n) != 0) return {};
    return std::string(buf);
}

void KvEventPublisher::publish(const std::vector<model::BlockEvent> &evs, double ts) {
    if (evs.empty()) return;
    const std::string payload = encode_kv_batch(evs, ts, block_tokens_);
    unsigned char seq[8];
    for (int i = 0; i < 8; ++i) seq[i] = static_cast<unsigned char>(seq_ >> (56 - 8 * i));
    ++seq_;
    // A PUB socket drops rather than blocks at its high-water mark; DONTWAIT makes that explicit.
    if (zmq_send(sock_, topic_.data(), topic_.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(sock_, seq, sizeof seq, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(sock_, payload.data(), payload.size(), ZMQ_DONTWAIT) < 0)
        ++dropped_;
}

}  // namespace kvsteer::emu
