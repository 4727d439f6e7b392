#include "kvsteer/control/neigh.h"

#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace kvsteer::control {

namespace {

class NlSock {
   public:
    NlSock() : fd_(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) {
        if (fd_ >= 0) {
            timeval tv{1, 0};
            setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        }
    }
    ~NlSock() {
        if (fd_ >= 0) close(fd_);
    }
    int fd() const { return fd_; }

   private:
    int fd_;
};

void add_attr(std::vector<char> &buf, unsigned short type, const void *data, unsigned short len) {
    auto *nh = reinterpret_cast<nlmsghdr *>(buf.data());
    std::size_t off = NLMSG_ALIGN(nh->nlmsg_len);
    buf.resize(off + RTA_SPACE(len));
    nh = reinterpret_cast<nlmsghdr *>(buf.data());
    auto *rta = reinterpret_cast<rtattr *>(buf.data() + off);
    rta->rta_type = type;
    rta->rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
    std::memcpy(RTA_DATA(rta), data, len);
    nh->nlmsg_len = static_cast<__u32>(off + RTA_SPACE(len));
}

// Sends `req` and calls `fn` for every reply message until DONE (dump) or one reply.
template <typename Fn>
bool transact(int fd, std::vector<char> &req, bool dump, Fn fn, std::string *err) {
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (sendto(fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr *>(&sa), sizeof sa) < 0) {
        *err = std::string("netlink send: ") + std::strerror(errno);
        return false;
    }
    std::vector<char> buf(64 * 1024);
    for (;;) {
        ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        if (n < 0) {
            *err = std::string("netlink recv: ") + std::strerror(errno);
            return false;
        }
        int len = static_cast<int>(n);
        for (auto *nh = reinterpret_cast<nlmsghdr *>(buf.data()); NLMSG_OK(nh, len);
             nh = NLMSG_NEXT(nh, len)) {
            if (nh->nlmsg_type == NLMSG_DONE) return true;
            if (nh->nlmsg_type == NLMSG_ERROR) {
                auto *e = static_cast<nlmsgerr *>(NLMSG_DATA(nh));
                if (e->error == 0) return true;
                *err = std::strerror(-e->error);
                return false;
            }
            fn(nh);
            if (!dump) return true;
        }
    }
}

}  // namespace

std::optional<Mac> resolve_next_hop_mac(const Endpoint &dst, std::string *err) {
    std::string e;
    NlSock s;
    if (s.fd() < 0) {
        if (err) *err = std::string("netlink socket: ") + std::strerror(errno);
        return std::nullopt;
    }
    const unsigned char fam = dst.family == KVS_AF_INET6 ? AF_INET6 : AF_INET;
    const unsigned short alen = fam == AF_INET ? 4 : 16;

    // 1. Route lookup: gateway (if any) and output interface.
    std::vector<char> req(NLMSG_SPACE(sizeof(rtmsg)));
    auto *nh = reinterpret_cast<nlmsghdr *>(req.data());
    nh->nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
    nh->nlmsg_type = RTM_GETROUTE;
    nh->nlmsg_flags = NLM_F_REQUEST;
    auto *rt = static_cast<rtmsg *>(NLMSG_DATA(nh));
    rt->rtm_family = fam;
    rt->rtm_dst_len = static_cast<unsigned char>(alen * 8);
    add_attr(req, RTA_DST, dst.addr.data(), alen);
    std::array<std::uint32_t, 4> hop = dst.addr;
    int oif = 0;
    bool routed = transact(
        s.fd(), req, false,
        [&](nlmsghdr *m) {
            if (m->nlmsg_type != RTM_NEWROUTE) return;
            auto *r = static_cast<rtmsg *>(NLMSG_DATA(m));
            int alen_left = static_cast<int>(RTM_PAYLOAD(m));
            for (auto *a = RTM_RTA(r); RTA_OK(a, alen_left); a = RTA_NEXT(a, alen_left)) {
                if (a->rta_type == RTA_GATEWAY && RTA_PAYLOAD(a) == alen)
                    std::memcpy(hop.data(), RTA_DATA(a), alen);
                else if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) == 4)
                    std::memcpy(&oif, RTA_DATA(a), 4);
            }
        },
        &e);
    if (!routed) {
        if (err) *err = "no route to " + dst.addr_str() + ": " + e;
        return std::nullopt;
    }

    // 2. Neighbour table dump, matching the next hop on the route's interface.
    std::vector<char> nreq(NLMSG_SPACE(sizeof(ndmsg)));
    nh = reinterpret_cast<nlmsghdr *>(nreq.data());
    nh->nlmsg_len = NLMSG_LENGTH(sizeof(ndmsg));
    nh->nlmsg_type = RTM_GETNEIGH;
    nh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    static_cast<ndmsg *>(NLMSG_DATA(nh))->ndm_family = fam;
    std::optional<Mac> mac;
    bool stale_only = false;
    bool ok = transact(
        s.fd(), nreq, true,
        [&](nlmsghdr *m) {
            if (m->nlmsg_type != RTM_NEWNEIGH || mac) return;
            auto *nd = static_cast<ndmsg *>(NLMSG_DATA(m));
            if (oif && nd->ndm_ifindex != oif) return;
            int left = static_cast<int>(m->nlmsg_len - NLMSG_LENGTH(sizeof(ndmsg)));
            bool match = false;
            std::optional<Mac> ll;
            for (auto *a = reinterpret_cast<rtattr *>(reinterpret_cast<char *>(nd) +
                                                      NLMSG_ALIGN(sizeof(ndmsg)));
                 RTA_OK(a, left); a = RTA_NEXT(a, left)) {
                if (a->rta_type == NDA_DST && RTA_PAYLOAD(a) == alen)
                    match = std::memcmp(RTA_DATA(a), hop.data(), alen) == 0;
                else if (a->rta_type == NDA_LLADDR && RTA_PAYLOAD(a) == 6) {
                    Mac x;
                    std::memcpy(x.data(), RTA_DATA(a), 6);
                    ll = x;
                }
            }
            if (!match || !ll) return;
            if (nd->ndm_state & (NUD_INCOMPLETE | NUD_FAILED | NUD_NONE)) {
                stale_only = true;
                return;
            }
            mac = ll;
        },
        &e);
    if (!ok) {
        if (err) *err = "neighbour dump: " + e;
        return std::nullopt;
    }
    if (!mac && err) {
        Endpoint h = dst;
        h.addr = hop;
        *err = "no resolved neighbour entry for " + h.addr_str() +
               (stale_only ? " (incomplete/failed)" : "");
    }
    return mac;
}

}  // namespace kvsteer::control
