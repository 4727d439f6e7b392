// etcd's v3 JSON gateway: request bodies, answers (including errors), and the fleet's values.
#include "kvsteer/control/etcd.h"

#include <gtest/gtest.h>

#include "kvsteer/control/fleet_etcd.h"

namespace kvsteer::control {
namespace {

using nlohmann::json;

HttpResult http(int status, std::string body) {
    HttpResult r;
    r.ok = true;
    r.status = status;
    r.body = std::move(body);
    return r;
}

TEST(Base64, RoundTripsEveryLength) {
    EXPECT_EQ(base64_encode(""), "");
    EXPECT_EQ(base64_encode("f"), "Zg==");
    EXPECT_EQ(base64_encode("fo"), "Zm8=");
    EXPECT_EQ(base64_encode("foo"), "Zm9v");
    EXPECT_EQ(base64_encode("/kvsteer/fleet/epochs"), "L2t2c3RlZXIvZmxlZXQvZXBvY2hz");
    std::string all;
    for (int i = 0; i < 256; i++) all += static_cast<char>(i);
    for (std::size_t n = 0; n <= all.size(); n += 7)
        EXPECT_EQ(base64_decode(base64_encode(all.substr(0, n))), all.substr(0, n));
}

TEST(Base64, RefusesBadInput) {
    EXPECT_FALSE(base64_decode("Zg="));       // length
    EXPECT_FALSE(base64_decode("Z==="));      // three pads
    EXPECT_FALSE(base64_decode("Zg==Zm8="));  // padding before the end
    EXPECT_FALSE(base64_decode("Zm9*"));      // alphabet
    EXPECT_EQ(base64_decode(""), "");
}

TEST(EtcdRequests, RangePutTxnLease) {
    EXPECT_EQ(etcd_prefix_end("/kvsteer/"), "/kvsteer0");
    EXPECT_EQ(etcd_prefix_end(std::string("a\xff", 2)), "b");
    EXPECT_EQ(etcd_range_request("/k/", true),
              (json{{"key", base64_encode("/k/")}, {"range_end", base64_encode("/k0")}}));
    EXPECT_EQ(etcd_range_request("/k", false), (json{{"key", base64_encode("/k")}}));
    EXPECT_EQ(etcd_put_request("k", "v", 0x1234),
              (json{{"key", "aw=="}, {"value", "dg=="}, {"lease", "4660"}}));
    EXPECT_FALSE(etcd_put_request("k", "v").contains("lease"));
    const json t = etcd_txn_request({{"k", 7}}, {{"k", "v"}, {"p", "w"}});
    ASSERT_EQ(t["compare"].size(), 1u);
    EXPECT_EQ(
        t["compare"][0],
        (json{{"key", "aw=="}, {"target", "MOD"}, {"result", "EQUAL"}, {"mod_revision", "7"}}));
    ASSERT_EQ(t["success"].size(), 2u);
    EXPECT_EQ(t["success"][1]["request_put"], (json{{"key", "cA=="}, {"value", "dw=="}}));
    EXPECT_EQ(etcd_lease_grant_request(3), (json{{"TTL", "3"}}));
    EXPECT_EQ(etcd_lease_keepalive_request(42), (json{{"ID", "42"}}));
}

TEST(EtcdReplies, RangeAnswer) {
    // As etcd 3.4's gateway writes it (int64s as strings).
    auto r = etcd_reply(http(200, R"({"header":{"cluster_id":"1","member_id":"2","revision":"17",
        "raft_term":"2"},"kvs":[{"key":"L2svZQ==","create_revision":"5","mod_revision":"9",
        "version":"3","value":"W1swXV0=","lease":"99"}],"count":"1"})"));
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.revision, 17);
    std::string err;
    auto kvs = etcd_range_kvs(*r.json, &err);
    ASSERT_TRUE(kvs) << err;
    ASSERT_EQ(kvs->size(), 1u);
    EXPECT_EQ((*kvs)[0].key, "/k/e");
    EXPECT_EQ((*kvs)[0].value, "[[0]]");
    EXPECT_EQ((*kvs)[0].mod_revision, 9);
    EXPECT_EQ((*kvs)[0].version, 3);
    EXPECT_EQ((*kvs)[0].lease, 99);
    // No kvs: an empty range (proto3 leaves the field out).
    auto e = etcd_reply(http(200, R"({"header":{"revision":"4"}})"));
    ASSERT_TRUE(e.ok());
    EXPECT_TRUE(etcd_range_kvs(*e.json, &err)->empty());
    // A key that is not base64.
    auto bad = etcd_reply(http(200, R"({"header":{"revision":"4"},"kvs":[{"key":"***"}]})"));
    EXPECT_FALSE(etcd_range_kvs(*bad.json, &err));
    EXPECT_NE(err.find("base64"), std::string::npos);
}

TEST(EtcdReplies, TxnAndLease) {
    EXPECT_TRUE(etcd_txn_succeeded(*etcd_reply(http(200, R"({"succeeded":true})")).json));
    EXPECT_FALSE(etcd_txn_succeeded(*etcd_reply(http(200, R"({"header":{}})")).json));
    std::string err;
    EXPECT_EQ(etcd_lease_id(*etcd_reply(http(200, R"({"ID":"7587","TTL":"3"})")).json, &err), 7587);
    EXPECT_FALSE(etcd_lease_id(*etcd_reply(http(200, R"({"TTL":"3"})")).json, &err));
    // keepalive is a stream: one {"result": ...} per message; TTL absent: the lease is gone.
    auto k = etcd_reply(http(200, R"({"result":{"header":{"revision":"8"},"ID":"1","TTL":"2"}})"));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(k.revision, 8);
    EXPECT_EQ(etcd_keepalive_ttl(*k.json), 2);
    EXPECT_EQ(etcd_keepalive_ttl(*etcd_reply(http(200, R"({"result":{"ID":"1"}})")).json), 0);
}

TEST(EtcdReplies, ErrorsAreOneLine) {
    auto a = etcd_reply(http(400, R"({"error":"etcdserver: requested lease not found","code":5,
        "message":"etcdserver: requested lease not found"})"));
    EXPECT_FALSE(a.ok());
    EXPECT_EQ(a.error, "HTTP 400: etcdserver: requested lease not found");
    auto s = etcd_reply(http(200, R"({"error":{"grpc_code":5,"http_code":404,
        "message":"etcdserver: requested lease not found"}})"));
    EXPECT_EQ(s.error, "HTTP 200: etcdserver: requested lease not found");
    EXPECT_EQ(etcd_reply(http(404, "404 page not found\n")).error, "HTTP 404: 404 page not found ");
    EXPECT_EQ(etcd_reply(http(200, "not json")).error, "bad answer: not a JSON object");
    EXPECT_NE(etcd_reply(http(200, R"({"header":{"revision":"x"}})")).error.find("revision"),
              std::string::npos);
    HttpResult down;
    down.error = "connect: Connection refused";
    EXPECT_EQ(etcd_reply(down).error, "connect: Connection refused");
}

TEST(FleetEtcdValues, EpochsAndCookieKeys) {
    EXPECT_EQ(fleet_epochs_value({0b1, 0b11}), "[[0],[0,1]]");
    std::string err;
    EXPECT_EQ(parse_fleet_epochs_value("[[0],[0,1]]", &err), (std::vector<MemberSet>{1, 3}));
    EXPECT_FALSE(parse_fleet_epochs_value("[[16]]", &err));
    EXPECT_FALSE(parse_fleet_epochs_value("{}", &err));
    const std::array<std::uint64_t, 2> k{0x7766554433221100ull, 0xffeeddccbbaa9988ull};
    EXPECT_EQ(cookie_key_hex(k), "00112233445566778899aabbccddeeff");
    EXPECT_EQ(parse_cookie_key_hex("00112233445566778899aabbccddeeff", &err), k);
    EXPECT_FALSE(parse_cookie_key_hex("0011", &err));
}

TEST(FleetEtcdValues, HotListEncodesCompactAndRoundTrips) {
    const std::vector<FleetHotKey> keys = {
        {0x0123456789abcdefull, 0xff, 12.34, true, {"10.0.0.5:8000", "[fd00::1]:8000"}},
        {0x11, 2, 3.05, false, {}},
    };
    const std::string v = fleet_hot_value(keys);
    EXPECT_EQ(v,
              "[{\"key\":\"0123456789abcdef\",\"depth\":255,\"rate\":12.3,\"hot\":true,"
              "\"holders\":[\"10.0.0.5:8000\",\"[fd00::1]:8000\"]},"
              "{\"key\":\"0000000000000011\",\"depth\":2,\"rate\":3.1,\"hot\":false,"
              "\"holders\":[]}]");
    std::string err;
    auto back = parse_fleet_hot_value(v, &err);
    ASSERT_TRUE(back) << err;
    ASSERT_EQ(back->size(), 2u);
    EXPECT_EQ((*back)[0].key, 0x0123456789abcdefull);
    EXPECT_EQ((*back)[0].depth, 0xff);
    EXPECT_DOUBLE_EQ((*back)[0].rate, 12.3);
    EXPECT_TRUE((*back)[0].hot);
    EXPECT_EQ((*back)[0].holders, keys[0].holders);
    EXPECT_EQ((*back)[1].key, 0x11u);
    EXPECT_DOUBLE_EQ((*back)[1].rate, 3.1);
    EXPECT_EQ(fleet_hot_value({}), "[]");
    EXPECT_EQ(parse_fleet_hot_value("[]", &err), std::vector<FleetHotKey>{});
    // Upper-case hex and fields this version does not know are accepted.
    auto up = parse_fleet_hot_value(
        R"([{"key":"00000000000000AB","depth":0,"rate":0,"hot":false,"holders":[],"x":1}])", &err);
    ASSERT_TRUE(up) << err;
    EXPECT_EQ((*up)[0].key, 0xabu);
}

TEST(FleetEtcdValues, BadHotListsAreRefused) {
    std::string err;
    const std::string ok = R"("depth":1,"rate":2.5,"hot":false,"holders":["10.0.0.1:80"])";
    ASSERT_TRUE(parse_fleet_hot_value(R"([{"key":"00000000000000aa",)" + ok + "}]", &err)) << err;
    for (const std::string &bad : {
             std::string("not json"),
             std::string("{}"),
             std::string("[1]"),
             R"([{"key":"aa",)" + ok + "}]",                // not 16 digits
             R"([{"key":"00000000000000ag",)" + ok + "}]",  // not hex
             R"([{"key":"0000000000000000",)" + ok + "}]",  // 0 marks an empty slot
             R"([{"key":170,)" + ok + "}]",                 // a number
             std::string(R"([{"key":"00000000000000aa","rate":1,"hot":false,"holders":[]}])"),
             std::string(R"([{"key":"00000000000000aa","depth":256,"rate":1,"hot":false,)"
                         R"("holders":[]}])"),
             std::string(R"([{"key":"00000000000000aa","depth":1,"rate":-1,"hot":false,)"
                         R"("holders":[]}])"),
             std::string(R"([{"key":"00000000000000aa","depth":1,"rate":"1","hot":false,)"
                         R"("holders":[]}])"),
             std::string(R"([{"key":"00000000000000aa","depth":1,"rate":1,"hot":1,)"
                         R"("holders":[]}])"),
             std::string(R"([{"key":"00000000000000aa","depth":1,"rate":1,"hot":true,)"
                         R"("holders":[7]}])"),
             std::string(R"([{"key":"00000000000000aa","depth":1,"rate":1,"hot":true,)"
                         R"("holders":"10.0.0.1:80"}])"),
         }) {
        err.clear();
        EXPECT_FALSE(parse_fleet_hot_value(bad, &err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
        EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    }
    // At most kFleetHotMax prefixes.
    std::vector<FleetHotKey> many(kFleetHotMax + 1, FleetHotKey{0x1, 0, 1, false, {}});
    EXPECT_FALSE(parse_fleet_hot_value(fleet_hot_value(many), &err));
    many.pop_back();
    EXPECT_TRUE(parse_fleet_hot_value(fleet_hot_value(many), &err));
}

TEST(FleetEtcdValues, DeadMembersLeaveTheTable) {
    FleetState local;
    local.self = 0;
    std::string err;
    ASSERT_TRUE(local.set_mac(0, Mac{2, 0, 0, 0, 0, 0xa}, &err));
    local.epochs = {1};
    FleetEtcdView v;
    EXPECT_EQ(fleet_state_from_etcd(local, v), local);  // nothing read yet
    v.read = true;
    v.alive[0] = Mac{2, 0, 0, 0, 0, 0xa};
    v.alive[2] = Mac{2, 0, 0, 0, 0, 0xc};
    v.epochs = std::vector<MemberSet>{0b011, 0b111};  // 1 is in the epochs but has no key
    v.epochs_version = 4;
    FleetState s = fleet_state_from_etcd(local, v);
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{0b001, 0b101}));
    EXPECT_EQ(s.epoch_no, 4u);
    EXPECT_FALSE(s.macs[1]);
    // Another appliance (other self, other local config) computes the same table.
    FleetState other = local;
    other.self = 2;
    other.epochs = {4};
    EXPECT_EQ(compute_fleet_table(s).digest,
              compute_fleet_table(fleet_state_from_etcd(other, v)).digest);
}

}  // namespace
}  // namespace kvsteer::control
