// etcd's v3 JSON gateway: request bodies, answers (including errors), and the fleet's values.
#include "kvsteer/control/etcd.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "kvsteer/control/daemon.h"
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
    // A put that reads the key first when someone else moved it: both branches put under the
    // lease, the failure one after a range of the key.
    const json m = etcd_put_read_moved_request("k", "v", 0x1234, 7);
    EXPECT_EQ(m["compare"], t["compare"]);
    const json put = {{"request_put", {{"key", "aw=="}, {"value", "dg=="}, {"lease", "4660"}}}};
    EXPECT_EQ(m["success"], json::array({put}));
    ASSERT_EQ(m["failure"].size(), 2u);
    EXPECT_EQ(m["failure"][0], (json{{"request_range", {{"key", "aw=="}}}}));
    EXPECT_EQ(m["failure"][1], put);
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
    // A negative version (it became an epoch number near 2^64) is no count.
    auto neg = etcd_reply(http(200, R"({"header":{"revision":"4"},"kvs":[{"key":"L2svZQ==",
        "mod_revision":"2","version":"-5","value":"W1swXV0="}]})"));
    ASSERT_TRUE(neg.ok()) << neg.error;
    EXPECT_FALSE(etcd_range_kvs(*neg.json, &err));
    EXPECT_NE(err.find("not a number"), std::string::npos) << err;
}

TEST(EtcdReplies, TxnRangeAnswer) {
    // etcd 3.4's gateway: a failed compare's range, then its put.
    auto r = etcd_reply(http(200, R"({"header":{"revision":"30"},"responses":[{"response_range":
        {"header":{"revision":"29"},"kvs":[{"key":"aw==","create_revision":"5","mod_revision":"29",
        "version":"4","value":"dg==","lease":"77"}],"count":"1"}},{"response_put":{"header":
        {"revision":"30"}}}]})"));
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_FALSE(etcd_txn_succeeded(*r.json));
    std::string err;
    auto kvs = etcd_txn_range_kvs(*r.json, 0, &err);
    ASSERT_TRUE(kvs) << err;
    ASSERT_EQ(kvs->size(), 1u);
    EXPECT_EQ((*kvs)[0].value, "v");
    EXPECT_EQ((*kvs)[0].lease, 77);
    EXPECT_FALSE(etcd_txn_range_kvs(*r.json, 1, &err)) << "a put's answer is no range";
    EXPECT_NE(err.find("responses[1]"), std::string::npos);
    EXPECT_FALSE(etcd_txn_range_kvs(json::object(), 0, &err));
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
    // Out of int64's range, as a string or a number: refused (the string overflowed, undefined
    // behaviour; a wrapped revision started a watch at "now"). So are INT64_MAX (a watch starts
    // one past it: overflow) and a negative count; INT64_MAX - 1 and 0 pass.
    for (const char *v : {R"("9999999999999999999")", R"("9223372036854775808")",
                          "9223372036854775808", R"("-")", R"("")", R"("1-2")",
                          R"("9223372036854775807")", R"("-1")", "-5", R"("-9223372036854775808")"})
        EXPECT_NE(etcd_reply(http(200, std::string(R"({"header":{"revision":)") + v + "}}"))
                      .error.find("revision"),
                  std::string::npos)
            << v;
    EXPECT_EQ(etcd_reply(http(200, R"({"header":{"revision":"9223372036854775806"}})")).revision,
              INT64_MAX - 1);
    EXPECT_EQ(etcd_reply(http(200, R"({"header":{"revision":"0"}})")).revision, 0);
    EXPECT_EQ(
        etcd_watch_message(R"({"result":{"header":{"revision":"9223372036854775807"}}})").kind,
        EtcdWatchMessage::Kind::Bad);
    HttpResult down;
    down.error = "connect: Connection refused";
    EXPECT_EQ(etcd_reply(down).error, "connect: Connection refused");
}

TEST(FleetEtcdValues, EpochsAndCookieKeys) {
    EXPECT_EQ(fleet_epochs_value({0b1, 0b11}), "[[0],[0,1]]");
    std::string err;
    EXPECT_EQ(parse_fleet_epochs_value("[[0],[0,1]]", &err), (std::vector<MemberSet>{1, 3}));
    EXPECT_FALSE(parse_fleet_epochs_value("[[16]]", &err));
    // 2^32 (and 2^32 + 1) are not appliance 0 (1): read as 64 bits, refused.
    EXPECT_FALSE(parse_fleet_epochs_value("[[4294967296]]", &err));
    EXPECT_NE(err.find("4294967296 is not an appliance id"), std::string::npos) << err;
    EXPECT_FALSE(parse_fleet_epochs_value("[[0],[4294967297]]", &err));
    EXPECT_FALSE(parse_fleet_epochs_value("[[18446744073709551615]]", &err));
    EXPECT_FALSE(parse_fleet_epochs_value("[[-1]]", &err));
    EXPECT_FALSE(parse_fleet_epochs_value("[[1.0]]", &err));
    EXPECT_FALSE(parse_fleet_epochs_value("{}", &err));
    // No epoch, or an empty newest one: no owner anywhere (the fleet off on every appliance).
    EXPECT_FALSE(parse_fleet_epochs_value("[]", &err));
    EXPECT_FALSE(parse_fleet_epochs_value("[[0],[]]", &err));
    EXPECT_NE(err.find("newest epoch is empty"), std::string::npos) << err;
    EXPECT_EQ(parse_fleet_epochs_value("[[],[1]]", &err), (std::vector<MemberSet>{0, 2}))
        << "an older epoch may be empty (a forget)";
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

// Every appliance reads the same etcd: a wrongly typed value there must not throw (it would
// crash-loop kvsteerd on all of them at once).
TEST(FleetEtcdValues, WronglyTypedBackendValuesDoNotThrow) {
    std::string err, warning;
    auto ok =
        parse_shared_backend_value(R"({"spec":"10.0.0.1:8000","drain":true})", &err, &warning);
    ASSERT_TRUE(ok) << err;
    EXPECT_EQ(ok->spec.ep.str(), "10.0.0.1:8000");
    EXPECT_EQ(ok->drain, std::optional<bool>(true));
    EXPECT_TRUE(warning.empty());
    auto missing = parse_shared_backend_value(R"({"spec":"10.0.0.1:8000"})", &err, &warning);
    ASSERT_TRUE(missing) << err;
    EXPECT_EQ(missing->drain, std::optional<bool>(false));
    // A "drain" of another type: the backend is kept, its drain state left as it is, with a reason.
    for (const char *v :
         {R"({"spec":"10.0.0.1:8000","drain":"yes"})", R"({"spec":"10.0.0.1:8000","drain":1})",
          R"({"spec":"10.0.0.1:8000","drain":null})",
          R"({"spec":"10.0.0.1:8000","drain":[true]})"}) {
        std::optional<SharedBackend> b;
        ASSERT_NO_THROW(b = parse_shared_backend_value(v, &err, &warning)) << v;
        ASSERT_TRUE(b) << v << ": " << err;
        EXPECT_FALSE(b->drain) << v;
        EXPECT_NE(warning.find("drain"), std::string::npos) << v;
        EXPECT_EQ(warning.find('\n'), std::string::npos) << warning;
    }
    // Not a backend at all: refused with a reason.
    for (const char *v : {"", "nope", "[]", "7", R"({"spec":7})", R"({"spec":["10.0.0.1:8000"]})",
                          R"({"drain":true})", R"({"spec":"not an address"})"}) {
        err.clear();
        std::optional<SharedBackend> b;
        ASSERT_NO_THROW(b = parse_shared_backend_value(v, &err, &warning)) << v;
        EXPECT_FALSE(b) << v;
        EXPECT_FALSE(err.empty()) << v;
    }
}

// A value nested 100,000 deep (200 KB, under the client's 4 MiB): refused with a reason, never
// quoted back whole. dump() recurses once per level: every kvsteerd of the fleet overflowed its
// stack on it at its next read of etcd, and again after each restart.
TEST(FleetEtcdValues, DeeplyNestedValuesAreRefusedWithoutRecursion) {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    std::string err, warning;
    EXPECT_FALSE(parse_fleet_epochs_value("[[" + deep + "]]", &err));
    EXPECT_FALSE(err.empty());
    err.clear();
    EXPECT_FALSE(parse_fleet_hot_value("[" + deep + "]", &err));
    EXPECT_FALSE(err.empty());
    err.clear();
    EXPECT_FALSE(parse_shared_backend_value(R"({"spec":"10.0.0.1:8000","drain":)" + deep + "}",
                                            &err, &warning));
    EXPECT_FALSE(err.empty());
    // Shallow enough to parse, a list where an id or a flag belongs: named by its kind.
    const std::string shallow = std::string(40, '[') + std::string(40, ']');
    EXPECT_FALSE(parse_fleet_epochs_value("[[" + shallow + "]]", &err));
    EXPECT_NE(err.find("a list is not an appliance id"), std::string::npos) << err;
    auto b = parse_shared_backend_value(R"({"spec":"10.0.0.1:8000","drain":)" + shallow + "}", &err,
                                        &warning);
    ASSERT_TRUE(b) << err;
    EXPECT_NE(warning.find("\"drain\": a list"), std::string::npos) << warning;
    // A member report as the poller gets it (parsed unbounded here): its problems name the kind.
    const json report = json::parse(R"({"digest":)" + deep + "}");
    EXPECT_EQ(fleet_report_problems(report), "\"digest\": a list is not a string");
}

TEST(FleetEtcdValues, WronglyTypedMemberReportsDisagreeWithoutThrowing) {
    const FleetReportWant want{"0xd", "0xc", "0xt", "0xl", 3};
    const json good = {{"mac", "02:00:00:00:00:01"},
                       {"healthy", true},
                       {"digest", "0xd"},
                       {"cookie", "0xc"},
                       {"tables", "0xt"},
                       {"lookup", "0xl"},
                       {"config_generation", 3},
                       {"epoch", 2}};
    EXPECT_TRUE(fleet_report_agrees(good, want));
    EXPECT_EQ(fleet_report_problems(good), "");
    // Each field of the comparison missing, of another value, or of another type.
    for (const char *k : {"digest", "cookie", "tables", "lookup", "config_generation"}) {
        json r = good;
        r.erase(k);
        EXPECT_FALSE(fleet_report_agrees(r, want)) << k;
        for (const json &bad : {json(7), json("3"), json(nullptr), json::array(), json::object(),
                                json(true), json(2.5)}) {
            r[k] = bad;
            bool agrees = true;
            ASSERT_NO_THROW(agrees = fleet_report_agrees(r, want)) << k << " " << bad.dump();
            EXPECT_FALSE(agrees) << k << " " << bad.dump();
            if (bad.is_string() && std::string(k) != "config_generation") continue;
            if (bad.is_number_integer() && std::string(k) == "config_generation") continue;
            const std::string why = fleet_report_problems(r);
            EXPECT_NE(why.find(k), std::string::npos) << k << " " << bad.dump() << ": " << why;
            EXPECT_EQ(why.find('\n'), std::string::npos) << why;
        }
    }
    json r = good;
    r["healthy"] = "no";
    r["epoch"] = -1;
    EXPECT_TRUE(fleet_report_agrees(r, want));  // not compared
    const std::string why = fleet_report_problems(r);
    EXPECT_NE(why.find("healthy"), std::string::npos) << why;
    EXPECT_NE(why.find("epoch"), std::string::npos) << why;
    EXPECT_FALSE(fleet_report_agrees(json::array(), want));
    EXPECT_FALSE(fleet_report_agrees(json("x"), want));
    EXPECT_EQ(fleet_report_problems(json(7)), "not a JSON object");
}

// The watch: its request, the chunked stream split into messages, the messages, the connection.

TEST(EtcdWatch, Request) {
    EXPECT_EQ(etcd_watch_request("/k/", 42), (json{{"create_request",
                                                    {{"key", base64_encode("/k/")},
                                                     {"range_end", base64_encode("/k0")},
                                                     {"start_revision", "42"}}}}));
    EXPECT_FALSE(etcd_watch_request("/k/", 0)["create_request"].contains("start_revision"));
}

// `body` as one chunk.
std::string chunk(const std::string &body) {
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", body.size());
    return size + body + "\r\n";
}

TEST(EtcdWatch, StreamSplitsObjectsAcrossAndWithinChunks) {
    const std::string a = R"({"result":{"header":{"revision":"5"},"created":true}})",
                      b = R"({"result":{"events":[{"kv":{"key":"e30="}}],"x":"}{\"["}})",
                      c = R"({"result":{"events":[]}})";
    // Two objects in one chunk (with the gateway's newline), one across three, one across a chunk
    // with an extension, then the last chunk.
    const std::string wire = chunk(a + "\n" + b.substr(0, 10)) + chunk(b.substr(10, 7)) +
                             chunk(b.substr(17) + "\n") + "a;ext=1\r\n" + c.substr(0, 10) + "\r\n" +
                             chunk(c.substr(10)) + "0\r\n\r\n";
    // Fed at once, byte by byte, 7 bytes at a time: the same objects.
    for (std::size_t step : {wire.size(), std::size_t{1}, std::size_t{7}}) {
        EtcdWatchStream s;
        std::vector<std::string> objs;
        for (std::size_t i = 0; i < wire.size(); i += step)
            ASSERT_TRUE(s.feed(std::string_view(wire).substr(i, step), &objs)) << s.error();
        ASSERT_EQ(objs.size(), 3u) << step;
        EXPECT_EQ(objs[0], a);
        EXPECT_EQ(objs[1], b);
        EXPECT_EQ(objs[2], c);
        EXPECT_TRUE(s.ended());
    }
    EtcdWatchStream open;
    std::vector<std::string> objs;
    EXPECT_TRUE(open.feed(chunk(a), &objs));
    EXPECT_FALSE(open.ended());  // the watch stays open
    EXPECT_EQ(objs.size(), 1u);
}

TEST(EtcdWatch, StreamRefusesBadFramingGarbageAndHugeInput) {
    auto refused = [](const std::string &wire, std::size_t max = kEtcdWatchMaxObject) {
        EtcdWatchStream s(max);
        std::vector<std::string> objs;
        const bool ok = s.feed(wire, &objs);
        EXPECT_EQ(ok, s.error().empty());
        if (!ok) {
            EXPECT_FALSE(s.feed(chunk("{}"), &objs));  // once refused, nothing is taken
        }
        return ok ? std::string() : s.error();
    };
    EXPECT_NE(refused("zz\r\n{}\r\n"), "");            // not a hex size
    EXPECT_NE(refused("\r\n"), "");                    // an empty size line
    EXPECT_NE(refused("2\r\n{}XX3\r\n{}\n\r\n"), "");  // no CRLF after the data
    EXPECT_NE(refused(chunk("{} hello")), "");         // garbage after one
    EXPECT_NE(refused(chunk("[1,2]")), "");            // not an object
    EXPECT_NE(refused(std::string(300, '1')), "");     // an endless size line
    EXPECT_NE(refused("ffffffffffffffffff\r\n"), "");  // a size that overflows
    EXPECT_NE(refused("fffffff\r\n").find("chunk of"), std::string::npos);   // over the limit
    EXPECT_NE(refused(chunk("{\"a\":\"" + std::string(100, 'x')), 64), "");  // an object over it
    EXPECT_EQ(refused(chunk("{\"a\":\"" + std::string(40, 'x') + "\"}"), 64), "");
    // An object over the limit across many chunks is refused as soon as it passes it.
    EtcdWatchStream s(1000);
    std::vector<std::string> objs;
    ASSERT_TRUE(s.feed(chunk("{\"a\":["), &objs));
    bool ok = true;
    for (int i = 0; i < 100 && ok; i++) ok = s.feed(chunk("1,2,3,4,5,6,7,8,9,"), &objs);
    EXPECT_FALSE(ok);
    EXPECT_NE(s.error().find("more than 1000 bytes"), std::string::npos) << s.error();
    EXPECT_TRUE(objs.empty());
}

TEST(EtcdWatch, Head) {
    std::string err;
    auto h = parse_http_head(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: Chunked\r\n",
        &err);
    ASSERT_TRUE(h) << err;
    EXPECT_EQ(h->status, 200);
    EXPECT_TRUE(h->chunked);
    h = parse_http_head("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n", &err);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 404);
    EXPECT_FALSE(h->chunked);
    EXPECT_FALSE(parse_http_head("SSH-2.0-OpenSSH_9.6\r\n", &err));
    EXPECT_FALSE(parse_http_head("HTTP/1.1 200 OK\r\nno colon\r\n", &err));
}

TEST(EtcdWatch, Messages) {
    using K = EtcdWatchMessage::Kind;
    auto m = etcd_watch_message(R"({"result":{"header":{"revision":"7"},"created":true}})");
    EXPECT_EQ(m.kind, K::Created);
    EXPECT_EQ(m.revision, 7);
    m = etcd_watch_message(
        R"({"result":{"header":{"revision":"9"},"events":[{},{"type":"DELETE"}]}})");
    EXPECT_EQ(m.kind, K::Events);
    EXPECT_EQ(m.events, 2u);
    EXPECT_EQ(m.revision, 9);
    m = etcd_watch_message(R"({"result":{"header":{"revision":"9"}}})");  // progress
    EXPECT_EQ(m.kind, K::Events);
    EXPECT_EQ(m.events, 0u);
    m = etcd_watch_message(R"({"result":{"compact_revision":"3","canceled":true}})");
    EXPECT_EQ(m.kind, K::Canceled);
    EXPECT_EQ(m.error, "compacted at revision 3");
    m = etcd_watch_message(R"({"result":{"canceled":true,"cancel_reason":"no leader"}})");
    EXPECT_EQ(m.kind, K::Canceled);
    EXPECT_EQ(m.error, "canceled: no leader");
    m = etcd_watch_message(R"({"error":{"grpc_code":14,"message":"etcdserver: no leader"}})");
    EXPECT_EQ(m.kind, K::Error);
    EXPECT_EQ(m.error, "etcdserver: no leader");
    EXPECT_EQ(etcd_watch_message("{nope").kind, K::Bad);
    EXPECT_EQ(etcd_watch_message(R"({"other":1})").kind, K::Bad);
    EXPECT_EQ(etcd_watch_message(R"({"result":{"events":{}}})").kind, K::Bad);
    EXPECT_EQ(etcd_watch_message(R"({"result":{"header":{"revision":"x"}}})").kind, K::Bad);
}

// A one-connection server on 127.0.0.1: reads the request head, writes `answer`, and keeps the
// connection open until destroyed.
class OneShotServer {
   public:
    explicit OneShotServer(std::string answer) : answer_(std::move(answer)) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr *>(&a), len) || ::listen(fd_, 1) ||
            ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len))
            throw std::runtime_error("listen on 127.0.0.1");
        port_ = ntohs(a.sin_port);
        thr_ = std::thread([this] {
            const int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0) return;
            std::string req;
            char buf[4096];
            while (req.find("\r\n\r\n") == std::string::npos) {
                const ssize_t n = ::recv(c, buf, sizeof buf, 0);
                if (n <= 0) break;
                req.append(buf, static_cast<std::size_t>(n));
            }
            {
                std::lock_guard lk(mu_);
                request_ = req;
            }
            (void)!::send(c, answer_.data(), answer_.size(), MSG_NOSIGNAL);
            while (!done_) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            ::close(c);
        });
    }
    ~OneShotServer() {
        done_ = true;
        ::shutdown(fd_, SHUT_RDWR);  // an accept() still waiting returns
        thr_.join();
        ::close(fd_);
    }
    OneShotServer(const OneShotServer &) = delete;
    OneShotServer &operator=(const OneShotServer &) = delete;
    Endpoint ep() const {
        std::string err;
        return *parse_endpoint("127.0.0.1:" + std::to_string(port_), &err);
    }
    std::string request() {
        std::lock_guard lk(mu_);
        return request_;
    }

   private:
    std::string answer_;
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> done_{false};
    std::mutex mu_;
    std::string request_;
    std::thread thr_;
};

const std::string kWatchHead =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
const std::string kCreated = R"({"result":{"header":{"revision":"5"},"created":true}})";

TEST(EtcdWatchConn, OpensReadsEventsAndStopsPromptly) {
    OneShotServer srv(kWatchHead + chunk(kCreated + "\n") +
                      chunk(R"({"result":{"header":{"revision":"6"},"events":[{},{}]}})"));
    std::atomic<bool> stop{false};
    EtcdWatchConn conn(&stop);
    std::vector<EtcdWatchMessage> msgs;
    std::string err;
    const std::string body = etcd_watch_request("/k/", 5).dump();
    ASSERT_TRUE(conn.open(srv.ep(), body, std::chrono::seconds(2), &msgs, &err)) << err;
    ASSERT_GE(msgs.size(), 1u);
    EXPECT_EQ(msgs[0].kind, EtcdWatchMessage::Kind::Created);
    EXPECT_EQ(msgs[0].revision, 5);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (msgs.size() < 2 && std::chrono::steady_clock::now() < until)
        ASSERT_TRUE(conn.read(std::chrono::milliseconds(100), &msgs, &err)) << err;
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_EQ(msgs[1].kind, EtcdWatchMessage::Kind::Events);
    EXPECT_EQ(msgs[1].events, 2u);
    const std::string req = srv.request();
    EXPECT_TRUE(req.starts_with("POST /v3/watch HTTP/1.1\r\n")) << req;
    EXPECT_NE(req.find("Content-Length: " + std::to_string(body.size())), std::string::npos);
    // Nothing more comes: a long read returns soon after stop is set.
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        stop = true;
    });
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(conn.read(std::chrono::seconds(30), &msgs, &err));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    t.join();
    EXPECT_EQ(msgs.size(), 2u);
    EXPECT_FALSE(conn.refused());
}

// Opens a watch on a server that answers `answer`, reads until the connection fails or etcd
// cancels; whether the answer was refused, the last error in *err.
bool refused_answer(const std::string &answer, std::string *err) {
    OneShotServer srv(answer);
    std::atomic<bool> stop{false};
    EtcdWatchConn conn(&stop);
    std::vector<EtcdWatchMessage> msgs;
    err->clear();
    bool ok = conn.open(srv.ep(), "{}", std::chrono::seconds(2), &msgs, err);
    for (int i = 0; ok && i < 10; i++) {
        ok = conn.read(std::chrono::milliseconds(200), &msgs, err);
        for (const auto &m : msgs)
            if (m.kind == EtcdWatchMessage::Kind::Canceled) {
                *err = m.error;
                return conn.refused();
            }
    }
    EXPECT_FALSE(ok) << "the watch on '" << answer << "' stayed open";
    return conn.refused();
}

TEST(EtcdWatchConn, RefusesBadAnswers) {
    std::string err;
    EXPECT_TRUE(
        refused_answer("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", &err));
    EXPECT_NE(err.find("HTTP 404: not found"), std::string::npos) << err;
    EXPECT_TRUE(refused_answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", &err));
    EXPECT_NE(err.find("not a chunked"), std::string::npos) << err;
    EXPECT_TRUE(refused_answer("garbage\r\n\r\n", &err));
    EXPECT_TRUE(refused_answer("HTTP/1.1 200 OK\r\n" + std::string(20000, 'x'), &err));
    EXPECT_NE(err.find("head too long"), std::string::npos) << err;
    EXPECT_TRUE(refused_answer(kWatchHead + chunk(kCreated) + "7fffffff\r\n", &err));
    EXPECT_NE(err.find("chunk of"), std::string::npos) << err;
    EXPECT_TRUE(refused_answer(kWatchHead + chunk(kCreated) + chunk("not json"), &err));
    EXPECT_TRUE(refused_answer(kWatchHead + chunk(R"({"result":{"events":[]}})"), &err));
    EXPECT_NE(err.find("not the watch's creation"), std::string::npos) << err;
    // etcd's own ends of a watch are not refusals.
    EXPECT_FALSE(refused_answer(
        kWatchHead + chunk(kCreated) + chunk(R"({"result":{"compact_revision":"3"}})"), &err));
    EXPECT_EQ(err, "compacted at revision 3");
    EXPECT_FALSE(refused_answer(kWatchHead + chunk(kCreated) + "0\r\n\r\n", &err));
    EXPECT_NE(err.find("ended the watch"), std::string::npos) << err;
    // Nobody listening.
    std::atomic<bool> stop{false};
    EtcdWatchConn conn(&stop);
    std::vector<EtcdWatchMessage> msgs;
    std::string e;
    EXPECT_FALSE(
        conn.open(*parse_endpoint("127.0.0.1:1", &e), "{}", std::chrono::seconds(1), &msgs, &e));
    EXPECT_NE(e.find("connect"), std::string::npos) << e;
    EXPECT_FALSE(conn.refused());
}

}  // namespace
}  // namespace kvsteer::control
