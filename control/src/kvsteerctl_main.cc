// kvsteerctl: control CLI for kvsteer. Talks to kvsteerd over its Unix socket; reads the pinned
// maps directly for `flows` and `counters` (works while the daemon is down).
// Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 daemon or maps unreachable.
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <thread>
#include <initializer_list>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "kvsteer/core/po_error.h"
#include "ctl_maps.h"
#include "kvsteer/bpf/maps.h"
#include "kvsteer/control/config.h"
#include "kvsteer/control/ctl_client.h"
#include "kvsteer/control/ctl_fleet.h"

namespace po = boost::program_options;
using nlohmann::json;

namespace {

enum Exit { kOk = 0, kFailed = 1, kUsage = 2, kUnreachable = 3 };

struct Global {
    std::string socket = "/run/kvsteer/kvsteerd.sock";
    std::string bpffs = KVS_DEFAULT_BPFFS;
    bool json = false;
    int timeout_ms = 5000;
};

const char *kTopUsage =
    "Usage: kvsteerctl [--socket PATH] [--bpffs DIR] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands (kvsteerctl COMMAND --help for each):\n"
    "  status                              daemon state, tables, tunables\n"
    "  backends [list]                     backends with health, load and telemetry\n"
    "  backends add ADDR:PORT [--weight W] [--model M] [--mac MAC] [--max-load N] [--kv-events "
    "EP]\n"
    "  backends remove BACKEND             BACKEND is ADDR:PORT or an id\n"
    "  backends drain BACKEND [--undo]     no new flows; existing flows continue\n"
    "  backends weight BACKEND W           weight in the lookup table (0 = out of it)\n"
    "  affinity show [--limit N]           affinity table as the daemon wrote it\n"
    "  affinity pin KEY BACKEND...         prefer 1..4 backends for a prefix/block hash\n"
    "  affinity unpin KEY\n"
    "  flows list [--limit N]              bound flows, read from the kvs_flows map\n"
    "  flows count\n"
    "  counters [xdp|dp|backends|all] [--all-reasons]   per-reason and per-backend counters "
    "(maps)\n"
    "  tune [NAME [VALUE]]                 show or set prefix-length, block-size, max-blocks,\n"
    "                                      load-factor, load-slack, replication, hot-threshold, "
    "steering-mode,\n"
    "                                      affinity-ttl, max-held-bytes, per-request (on|off),\n"
    "                                      session-headers (names, comma-separated; \"\" = off), "
    "session-cap\n"
    "  fleet [status]                      the fleet of appliances: members, epochs, owner table\n"
    "  fleet push ID[,ID...] | settle | forget ID | member ID MAC | rotate-cookie   change the "
    "membership (fleet-etcd: the whole fleet's)\n"
    "  drain [--timeout S] [--force] | --status | --cancel   withdraw the VIP (BIRD), leave the "
    "fleet's "
    "owners, wait for this appliance's flows to end\n"
    "\n"
    "ADDR:PORT is [ADDR]:PORT for IPv6 (e.g. [fd00::7]:8000), here and in every answer.\n"
    "Changes are live. Without fleet-etcd a kvsteerd restart starts from its config file again:\n"
    "tune values, pins and backends added or removed here are gone (write them into the\n"
    "file too); a backend drained here stays drained.\n"
    "With fleet-etcd, backends and tunables changed here are kept in etcd (pins are not).\n"
    "Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon or maps unreachable.\n";

struct Usage {
    std::string msg;
};

// Parses a subcommand's arguments; --help prints `usage` and exits 0.
po::variables_map parse_sub(const std::vector<std::string> &args, po::options_description opts,
                            const std::vector<std::string> &positional, bool rest_multi,
                            const std::string &usage) {
    opts.add_options()("help,h", "show this help");
    po::options_description hidden;
    po::positional_options_description pos;
    for (std::size_t i = 0; i < positional.size(); i++) {
        bool last = i + 1 == positional.size();
        if (last && rest_multi)
            hidden.add_options()(positional[i].c_str(), po::value<std::vector<std::string>>());
        else
            hidden.add_options()(positional[i].c_str(), po::value<std::string>());
        pos.add(positional[i].c_str(), last && rest_multi ? -1 : 1);
    }
    po::options_description all;
    all.add(opts).add(hidden);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(args)
                      .options(all)
                      .positional(pos)
                      .extra_style_parser(kvsteer::control::negative_number_as_value)
                      .run(),
                  vm);
        po::notify(vm);
    } catch (const po::error &e) {
        throw Usage{kvsteer::error_text(e) + "\n" + usage};
    }
    if (vm.count("help")) {
        std::cout << usage << "\n" << opts;
        std::exit(kOk);
    }
    return vm;
}

// --limit N: a count, never signed (Boost's own conversion reads "-1" as SIZE_MAX).
std::size_t limit_arg(const po::variables_map &vm, const std::string &usage) {
    std::string err;
    auto v = kvsteer::control::parse_uint_in("--limit", vm["limit"].as<std::string>(),
                                             {0, UINT32_MAX}, &err);
    if (!v) throw Usage{err + "\n" + usage};
    return static_cast<std::size_t>(*v);
}

std::string need(const po::variables_map &vm, const char *name, const std::string &usage) {
    if (!vm.count(name)) throw Usage{std::string("missing ") + name + "\n" + usage};
    return vm[name].as<std::string>();
}

// An affinity KEY as kvsteerd reads it: 0x-hex goes as text, decimal as a JSON number (the
// daemon read bare digits as hex: "291" pinned 0x291).
json key_arg(const std::string &k, const std::string &usage) {
    if (k.starts_with("0x") || k.starts_with("0X")) return k;
    std::string err;
    auto v = kvsteer::control::parse_uint_in("KEY", k, {1, UINT64_MAX}, &err);
    if (!v || k.find_first_not_of("0123456789") != std::string::npos)
        throw Usage{"KEY: write 0x<hex> or a decimal number (got '" + k + "')\n" + usage};
    return *v;
}

// The API commands that change nothing.
bool reads_only(const std::string &cmd) {
    for (const char *c : {"status", "backends", "backend.list", "affinity.show", "tune.get",
                          "counters", "fleet.status", "drain.status"})
        if (cmd == c) return true;
    return false;
}

class Ctl {
   public:
    explicit Ctl(Global g) : g_(std::move(g)) {}

    // Sends a request; prints the error and returns nullopt on failure (with the exit code set).
    std::optional<json> call(const json &req) {
        std::string err;
        bool connected = false;
        auto r = kvsteer::control::api_call(
            g_.socket, req, std::chrono::milliseconds(g_.timeout_ms), &err, &connected);
        if (!r) {
            // Connected, a change may have been applied (exit 3 said "unreachable", and a
            // retried `backends add` then found it there): exit 1, said so. A read changes
            // nothing: kvsteerd did not answer, exit 3.
            if (connected && !reads_only(req.value("cmd", std::string()))) {
                error(err + "; the request may have been applied: check `kvsteerctl status`");
                code_ = kFailed;
            } else {
                error(err);
                code_ = kUnreachable;
            }
            return std::nullopt;
        }
        if (!(*r)["ok"].is_boolean() || !(*r)["ok"].get<bool>()) {
            refused_ = (*r).value("error", std::string("kvsteerd refused the request"));
            error(refused_);
            code_ = kFailed;
            if (g_.json) std::cout << r->dump(2) << "\n";
            return std::nullopt;
        }
        return r;
    }

    std::unique_ptr<kvsteer::bpf::PinnedMaps> maps() {
        std::string err;
        auto m = kvsteer::bpf::open_pinned_maps(g_.bpffs, false, &err);
        if (!m) {
            error("maps: " + err);
            code_ = kUnreachable;
        }
        return m;
    }

    void error(const std::string &e) { std::fprintf(stderr, "kvsteerctl: %s\n", e.c_str()); }
    int code() const { return code_; }
    // kvsteerd's error when it refused the last request, else "".
    const std::string &refused() const { return refused_; }
    const Global &g() const { return g_; }

   private:
    Global g_;
    int code_ = kOk;
    std::string refused_;
};

// kvsteerd's answers are read through non-const json: a field missing from an answer (a kvsteerd
// of another version, anything else on the socket) reads as null, which get<>() refuses with a
// json::exception ("unexpected answer", exit 1) and num() prints as "-". A const json's
// operator[] with a missing key is undefined behaviour (it printed garbage). The list an answer
// exists for is taken with at(): an answer without it is unexpected too (it printed an empty
// table, exit 0).
// `prec` < 0: the shortest form that reads back as the value (a tunable as it was set).
std::string num(const json &v, int prec = 2) {
    if (v.is_null()) return "-";
    if (v.is_number_float())
        return prec < 0 ? fmt::format("{}", v.get<double>())
                        : fmt::format("{:.{}f}", v.get<double>(), prec);
    return v.dump();
}

// Width of an address column: 22, or the longest of FIELDS in LIST ("[IPv6]:PORT" is up to 47).
int addr_width(const json &list, std::initializer_list<const char *> fields) {
    std::size_t w = 22;
    for (const auto &e : list)
        for (const char *f : fields)
            if (e.contains(f) && e[f].is_string()) w = std::max(w, e[f].get<std::string>().size());
    return static_cast<int>(w);
}

void print_backends(json list) {
    const int aw = addr_width(list, {"addr"});
    std::printf("%-4s %-*s %-6s %6s %8s %6s %8s %6s %6s %6s %6s %8s  %-17s %s\n", "ID", aw,
                "ADDRESS", "STATE", "WEIGHT", "INFLIGHT", "IDLE", "BINDS", "RUN", "WAIT", "KV",
                "HIT", "BLOCKS", "MAC", "LAST ERROR");
    for (auto &b : list) {
        auto &t = b["telemetry"];
        // BLOCKS: GPU blocks the server holds by its KV events ("-" without kv-events=).
        json kv = b.contains("kv_events") ? b["kv_events"] : json(nullptr);
        std::string err = b["health"]["last_error"].get<std::string>();
        if (err.empty() && kv.is_object() && !kv["last_error"].get<std::string>().empty())
            err = "kv-events: " + kv["last_error"].get<std::string>();
        std::printf(
            "%-4s %-*s %-6s %6s %8s %6s %8s %6s %6s %6s %6s %8s  %-17s %s\n", num(b["id"]).c_str(),
            aw, b["addr"].get<std::string>().c_str(), b["state"].get<std::string>().c_str(),
            num(b["weight"]).c_str(), num(b["in_flight"]).c_str(), num(b["idle"]).c_str(),
            num(b["binds"]).c_str(), num(t["running"], 0).c_str(), num(t["waiting"], 0).c_str(),
            num(t["kv_usage"]).c_str(), num(t["hit_rate"]).c_str(),
            kv.is_object() ? num(kv["resident_blocks"]).c_str() : "-",
            b["mac"].is_null() ? "unresolved" : b["mac"].get<std::string>().c_str(), err.c_str());
    }
}

// What a drain waits for (drain.waiting_for; empty when it is done or none is said).
std::string drain_waiting_for(const json &d) {
    return d.contains("waiting_for") && d["waiting_for"].is_string()
               ? d["waiting_for"].get<std::string>()
               : "";
}

void print_announce(json a, json d) {
    if (a.is_null()) {
        std::printf("announce: off (no announce-bird-socket)\n");
    } else {
        std::string protos;
        for (auto &p : a["protocols"]) protos += (protos.empty() ? "" : ",") + p.get<std::string>();
        std::printf(
            "announce: VIP %s via BIRD %s (%s)%s%s\n",
            a["announced"].get<bool>() ? "announced" : "withdrawn",
            a["bird_socket"].get<std::string>().c_str(), protos.c_str(),
            a["want"].get<bool>() != a["announced"].get<bool>() ? ", changing" : "",
            a["error"].is_null() ? "" : (", BIRD: " + a["error"].get<std::string>()).c_str());
    }
    if (!d.is_null() && d.value("active", false)) {
        std::string wait = drain_waiting_for(d);
        if (!wait.empty()) wait = " (waiting for " + wait + ")";
        std::printf("drain: %s, %s flow(s) left after %.1f s%s; fleet: %s\n",
                    d["done"].get<bool>() ? "DONE" : "in progress", num(d["flows_left"]).c_str(),
                    d["elapsed_s"].get<double>(), wait.c_str(),
                    d["fleet"].get<std::string>().c_str());
    }
}

int cmd_drain(Ctl &c, const std::vector<std::string> &args) {
    const std::string usage =
        "Usage: kvsteerctl drain [--timeout S] [--force] | --status | --cancel\n"
        "Takes this appliance out of service without breaking a stream: withdraws the VIP's\n"
        "routes (BIRD), leaves the fleet's owners (the others bind the new flows and send this\n"
        "appliance's flows on to it), then waits until the router and the others have taken\n"
        "that (3 s at least; with etcd, every appliance's table without this one) and no flow,\n"
        "bound or being bound, was left here for a second. Exit 0 once drained: stop kvsteerd\n"
        "and the dataplane then. It stays withdrawn until --cancel or a restart.";
    po::options_description o("Options");
    o.add_options()("timeout", po::value<std::string>()->default_value("300"),
                    "seconds to wait for the flows to end; 0 = start it and return")(
        "status", "show the drain's progress")(
        "force",
        "drain although nothing here withdraws the VIP (no BIRD socket, no fleet): withdrawn "
        "upstream")("cancel",
                    "announce again (the fleet's owners: "
                    "push this appliance back yourself)");
    auto vm = parse_sub(args, o, {}, false, usage);
    std::string err;
    auto timeout = kvsteer::control::parse_uint_in("--timeout", vm["timeout"].as<std::string>(),
                                                   {0, 86400}, &err);
    if (!timeout) throw Usage{err + "\n" + usage};
    if (vm.count("status") && vm.count("cancel"))
        throw Usage{"--status or --cancel, not both\n" + usage};
    const std::string cmd = vm.count("status")   ? "drain.status"
                            : vm.count("cancel") ? "drain.cancel"
                                                 : "drain.start";
    json req = {{"cmd", cmd}};
    if (vm.count("force")) req["force"] = true;
    auto r = c.call(req);
    if (!r) return c.code();
    auto show = [&](json j) {
        if (c.g().json)
            std::cout << j.dump(2) << "\n";
        else
            print_announce(j["announce"], j["drain"]);
    };
    if (cmd != "drain.start") {
        show(*r);
        return kOk;
    }
    if (!c.g().json) print_announce((*r)["announce"], (*r)["drain"]);
    // Still an owner (etcd unreachable, a push refused): the others keep sending this appliance
    // new flows of its buckets, so the drain would not finish, or a quiet appliance would be
    // stopped while an owner. Said at once, exit 1 (it printed "drained ... stop it now"), with
    // --timeout 0 too (it exited 0: a script went on to stop an owner).
    if ((*r)["drain"].value("fleet_failed", false)) {
        if (c.g().json) show(*r);
        std::fprintf(
            stderr,
            "kvsteerctl: drain: %s; the VIP is withdrawn but this appliance is still one "
            "of the fleet's owners: do not stop it (fix that and push the fleet without "
            "it, or drain --cancel)\n",
            (*r)["drain"].value("fleet", std::string("leaving the owners failed")).c_str());
        return kFailed;
    }
    if (*timeout == 0) {
        if (c.g().json) show(*r);
        return kOk;
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t last = UINT64_MAX;
    std::string last_why;
    for (;;) {
        json &d = (*r)["drain"];
        if (d.value("done", false)) {
            if (c.g().json)
                show(*r);
            else
                std::printf("drained: no flow left on this appliance; stop it now\n");
            return kOk;
        }
        // Cancelled meanwhile (drain --cancel), or kvsteerd restarted without its runtime
        // directory (a stop and a start: the drain's marker went with it): nothing is draining
        // any more; waiting would only run into the timeout.
        if (d.is_object() && !d.value("active", true)) {
            std::fprintf(stderr,
                         "kvsteerctl: drain: no longer in progress (cancelled, or kvsteerd "
                         "restarted); the appliance announces as before\n");
            return kFailed;
        }
        const std::uint64_t left = d.value("flows_left", std::uint64_t{0});
        const std::string why = drain_waiting_for(d);
        if ((left != last || why != last_why) && !c.g().json)
            std::printf("waiting: %llu flow(s) left%s\n", static_cast<unsigned long long>(left),
                        why.empty() ? "" : (" (for " + why + ")").c_str());
        std::fflush(stdout);
        last = left;
        last_why = why;
        if (std::chrono::steady_clock::now() - t0 >= std::chrono::seconds(*timeout)) {
            std::fprintf(
                stderr,
                "kvsteerctl: drain: %llu flow(s) still here after %llu s; the appliance stays "
                "withdrawn (kvsteerctl drain --status to follow, --cancel to announce again)\n",
                static_cast<unsigned long long>(left), static_cast<unsigned long long>(*timeout));
            return kFailed;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        r = c.call({{"cmd", "drain.status"}});
        if (!r) {
            // Started, so not "unreachable": the appliance stays withdrawn meanwhile.
            std::fprintf(stderr,
                         "kvsteerctl: drain: started, then kvsteerd did not answer its status; "
                         "the drain goes on (kvsteerctl drain --status to follow)\n");
            return kFailed;
        }
    }
}

int cmd_status(Ctl &c, const std::vector<std::string> &args) {
    const std::string usage =
        "Usage: kvsteerctl status\nDaemon state, table generation, backend summary, tunables.";
    parse_sub(args, po::options_description("Options"), {}, false, usage);
    auto r = c.call({{"cmd", "status"}});
    if (!r) return c.code();
    if (c.g().json) {
        std::cout << r->dump(2) << "\n";
        return kOk;
    }
    auto &j = *r;
    std::printf("kvsteerd pid %s, up %.0f s, maps %s, generation %s\n", num(j["pid"]).c_str(),
                j["uptime_s"].get<double>(), j["bpffs"].get<std::string>().c_str(),
                num(j["generation"]).c_str());
    std::printf("vips:");
    for (auto &v : j["vips"]) std::printf(" %s", v.get<std::string>().c_str());
    std::printf("\nsnat: %s, appliance mac %s\n", j["snat"].get<std::string>().c_str(),
                j["appliance_mac"].get<std::string>().c_str());
    auto &b = j["backends"];
    std::printf("backends: %s (%s up, %s down, %s draining)\n", num(b["total"]).c_str(),
                num(b["up"]).c_str(), num(b["down"]).c_str(), num(b["drain"]).c_str());
    auto &a = j["affinity"];
    std::printf("affinity: %s entries, %s prefixes known, %s pinned; maglev rebuilds %s\n",
                num(a["entries"]).c_str(), num(a["index"]).c_str(), num(a["pins"]).c_str(),
                num(j["maglev_rebuilds"]).c_str());
    auto &rp = j["reports"];
    std::printf("binding reports: %s consumed, %s invalid, %s dropped by the dataplane\n",
                num(rp["consumed"]).c_str(), num(rp["invalid"]).c_str(),
                num(rp["dropped_by_dataplane"]).c_str());
    if (j.contains("kv_events") && j["kv_events"]["backends"].get<std::uint64_t>() > 0) {
        auto &k = j["kv_events"];
        std::printf(
            "kv events: %s backends, %s resident blocks, %s clears, %s publisher restarts, %s "
            "caches reset; "
            "%s decode errors, %s seq gaps\n",
            num(k["backends"]).c_str(), num(k["resident_blocks"]).c_str(), num(k["clears"]).c_str(),
            num(k["publisher_restarts"]).c_str(), num(k["cache_resets"]).c_str(),
            num(k["decode_errors"]).c_str(), num(k["seq_gaps"]).c_str());
    }
    if (j.contains("dataplane")) {
        auto &d = j["dataplane"];
        const std::uint64_t stalls = d["rx_stalls"].get<std::uint64_t>();
        const std::uint64_t recovered = d.value("rx_recoveries", std::uint64_t{0});
        std::string stall_note;
        if (stalls)
            stall_note = fmt::format(
                " ({} re-created in process, {} mbufs reclaimed; {} meant a restart: see its log)",
                recovered, d.value("rx_mbufs_reclaimed", std::uint64_t{0}),
                stalls > recovered ? stalls - recovered : 0);
        std::printf(
            "dataplane: %s binds, %s kept-alive requests moved, %s stayed; receive-path stalls "
            "%s%s; first flights refused (table full) %s, no mbuf %s\n",
            num(d["binds"]).c_str(), num(d["requests_moved"]).c_str(),
            num(d["requests_same_backend"]).c_str(), num(d["rx_stalls"]).c_str(),
            stall_note.c_str(), num(d["hold_full"]).c_str(), num(d["no_mbuf"]).c_str());
    }
    if (j.contains("dataplane") && j["dataplane"].contains("healthy")) {
        auto &d = j["dataplane"];
        std::printf("dataplane health: %s", d["healthy"].get<bool>() ? "healthy" : "NOT healthy");
        if (!d["health_reason"].is_null())
            std::printf(" (%s)", d["health_reason"].get<std::string>().c_str());
        std::printf(", %s worker(s) beating\n", num(d["workers_alive"]).c_str());
    }
    if (j.contains("announce")) print_announce(j["announce"], j["drain"]);
    std::printf("tunables:");
    for (auto it = j["tunables"].begin(); it != j["tunables"].end(); ++it)
        std::printf(" %s=%s", it.key().c_str(),
                    it.value().is_string() ? it.value().get<std::string>().c_str()
                                           : num(it.value(), -1).c_str());  // 0.0015 showed 0.002
    std::printf("\n");
    return kOk;
}

// `kvsteerctl CMD --help` for a command with subcommands: the top usage's lines for CMD (its
// default subcommand took --help and showed only its own usage, hiding the others).
bool subcommands_help(const std::vector<std::string> &args, const std::string &cmd) {
    if (args.empty() || (args[0] != "-h" && args[0] != "--help")) return false;
    std::printf("Subcommands of kvsteerctl %s (kvsteerctl %s SUBCOMMAND --help for each):\n",
                cmd.c_str(), cmd.c_str());
    std::string_view u = kTopUsage;
    const std::string lead = "  " + cmd + " ";
    while (!u.empty()) {
        const std::size_t nl = u.find('\n');
        const std::string_view line = u.substr(0, nl);
        if (line.starts_with(lead))
            std::printf("%.*s\n", static_cast<int>(line.size()), line.data());
        u.remove_prefix(nl == std::string_view::npos ? u.size() : nl + 1);
    }
    return true;
}

int cmd_backends(Ctl &c, std::vector<std::string> args) {
    if (subcommands_help(args, "backends")) return kOk;
    std::string sub = args.empty() || args[0].starts_with("-") ? "list" : args[0];
    if (!args.empty() && !args[0].starts_with("-")) args.erase(args.begin());
    json req;
    if (sub == "list") {
        parse_sub(args, po::options_description("Options"), {}, false,
                  "Usage: kvsteerctl backends [list]\nBackends with state, load and telemetry.");
        req = {{"cmd", "backends"}};
    } else if (sub == "add") {
        const std::string usage =
            "Usage: kvsteerctl backends add ADDR:PORT [--weight W] [--model M] [--mac MAC] "
            "[--max-load N]"
            " [--kv-events tcp://HOST:PORT]\n"
            "Adds a backend; it takes flows after its first successful health check.\n"
            "IPv6: [ADDR]:PORT; refused when kvsteerd has no --snat-addr of the backend's family.";
        po::options_description o("Options");
        o.add_options()("weight", po::value<std::string>(),
                        "weight in the lookup table (default 1)")("model", po::value<std::string>(),
                                                                  "model served")(
            "mac", po::value<std::string>(), "next-hop MAC (default: neighbour table)")(
            "max-load", po::value<std::string>(),
            "bound on in-flight flows (0 = load factor only)")(
            "kv-events", po::value<std::string>(),
            "the server's vLLM KV events publisher, tcp://HOST:PORT or ipc://PATH");
        auto vm = parse_sub(args, o, {"addr"}, false, usage);
        // Field by field: kvsteerd checks each (a ',' in one no longer adds options).
        req = {{"cmd", "backend.add"}, {"addr", need(vm, "addr", usage)}};
        for (const auto &[opt, field] :
             {std::pair{"weight", "weight"}, std::pair{"model", "model"}, std::pair{"mac", "mac"},
              std::pair{"max-load", "max_load"}, std::pair{"kv-events", "kv_events"}})
            if (vm.count(opt)) req[field] = vm[opt].as<std::string>();
    } else if (sub == "remove" || sub == "drain") {
        const std::string usage =
            sub == "remove" ? "Usage: kvsteerctl backends remove BACKEND\nBACKEND: ADDR:PORT or id."
                            : "Usage: kvsteerctl backends drain BACKEND [--undo]\nNo new flows to "
                              "BACKEND; bound flows continue.";
        po::options_description o("Options");
        if (sub == "drain") o.add_options()("undo", "take new flows again");
        auto vm = parse_sub(args, o, {"backend"}, false, usage);
        req = {{"cmd", "backend." + sub}, {"backend", need(vm, "backend", usage)}};
        if (sub == "drain") req["drain"] = !vm.count("undo");
    } else if (sub == "weight") {
        const std::string usage =
            "Usage: kvsteerctl backends weight BACKEND WEIGHT\nSets the weight in the lookup table "
            "(Maglev or rendezvous; 0..65535, 0 = no new flows).";
        auto vm = parse_sub(args, po::options_description("Options"), {"backend", "weight"}, false,
                            usage);
        req = {{"cmd", "backend.weight"},
               {"backend", need(vm, "backend", usage)},
               {"weight", need(vm, "weight", usage)}};
    } else {
        throw Usage{"unknown backends subcommand '" + sub + "' (list, add, remove, drain, weight)"};
    }
    auto r = c.call(req);
    if (!r) return c.code();
    if (c.g().json) {
        std::cout << r->dump(2) << "\n";
        return kOk;
    }
    if (sub == "list") {
        print_backends(r->at("backends"));
    } else if (sub == "remove") {
        auto &b = (*r)["removed"];
        std::printf("backend %s %s removed\n", num(b["id"]).c_str(),
                    b["addr"].get<std::string>().c_str());
    } else {
        auto &b = (*r)["backend"];
        std::printf("backend %s %s: state %s, weight %s%s\n", num(b["id"]).c_str(),
                    b["addr"].get<std::string>().c_str(), b["state"].get<std::string>().c_str(),
                    num(b["weight"]).c_str(),
                    sub == "add" && b["state"] == "down"
                        ? " (up after its first successful health check)"
                        : "");
    }
    return kOk;
}

int cmd_affinity(Ctl &c, std::vector<std::string> args) {
    if (subcommands_help(args, "affinity")) return kOk;
    std::string sub = args.empty() || args[0].starts_with("-") ? "show" : args[0];
    if (!args.empty() && !args[0].starts_with("-")) args.erase(args.begin());
    json req;
    if (sub == "show") {
        po::options_description o("Options");
        o.add_options()("limit", po::value<std::string>()->default_value("100"), "entries to show");
        const std::string usage =
            "Usage: kvsteerctl affinity show [--limit N]\nThe affinity table (pins first).";
        auto vm = parse_sub(args, o, {}, false, usage);
        req = {{"cmd", "affinity.show"}, {"limit", limit_arg(vm, usage)}};
    } else if (sub == "pin") {
        const std::string usage =
            "Usage: kvsteerctl affinity pin KEY BACKEND...\nKEY: a prefix or block hash, 0x-hex "
            "(as "
            "affinity show prints it) or decimal; 1..4 backends.";
        auto vm =
            parse_sub(args, po::options_description("Options"), {"key", "backends"}, true, usage);
        if (!vm.count("backends")) throw Usage{"missing backends\n" + usage};
        req = {{"cmd", "affinity.pin"},
               {"key", key_arg(need(vm, "key", usage), usage)},
               {"backends", vm["backends"].as<std::vector<std::string>>()}};
    } else if (sub == "unpin") {
        const std::string usage = "Usage: kvsteerctl affinity unpin KEY (0x-hex or decimal)";
        auto vm = parse_sub(args, po::options_description("Options"), {"key"}, false, usage);
        req = {{"cmd", "affinity.unpin"}, {"key", key_arg(need(vm, "key", usage), usage)}};
    } else {
        throw Usage{"unknown affinity subcommand '" + sub + "' (show, pin, unpin)"};
    }
    auto r = c.call(req);
    if (!r) return c.code();
    if (c.g().json) {
        std::cout << r->dump(2) << "\n";
        return kOk;
    }
    if (sub == "show") {
        std::printf("%s entries (%s prefixes known)\n", num((*r)["total"]).c_str(),
                    num((*r)["index"]).c_str());
        std::printf("%-18s %-6s %-6s %8s  %s\n", "KEY", "DEPTH", "FLAGS", "RATE/S", "BACKENDS");
        for (auto &e : r->at("entries")) {
            std::string addrs;
            for (auto &a : e["addrs"]) addrs += (addrs.empty() ? "" : ",") + a.get<std::string>();
            std::string flags =
                std::string(e["pinned"].get<bool>() ? "P" : "") + (e["hot"].get<bool>() ? "H" : "");
            std::printf("%-18s %-6s %-6s %8s  %s\n", e["key"].get<std::string>().c_str(),
                        e["depth"].is_string() ? e["depth"].get<std::string>().c_str()
                                               : num(e["depth"]).c_str(),
                        flags.empty() ? "-" : flags.c_str(),
                        e.contains("rate") ? num(e["rate"]).c_str() : "-", addrs.c_str());
        }
    } else {
        std::printf("%s %s\n", (*r)["key"].get<std::string>().c_str(),
                    sub == "pin" ? "pinned" : "unpinned");
    }
    return kOk;
}

int cmd_flows(Ctl &c, std::vector<std::string> args) {
    if (subcommands_help(args, "flows")) return kOk;
    std::string sub = args.empty() || args[0].starts_with("-") ? "list" : args[0];
    if (!args.empty() && !args[0].starts_with("-")) args.erase(args.begin());
    if (sub != "list" && sub != "count")
        throw Usage{"unknown flows subcommand '" + sub + "' (list, count)"};
    po::options_description o("Options");
    if (sub == "list")
        o.add_options()("limit", po::value<std::string>()->default_value("100"),
                        "flow entries to list");
    const std::string usage = sub == "list"
                                  ? "Usage: kvsteerctl [--bpffs DIR] flows list [--limit N]\nBound "
                                    "flows from the kvs_flows map (one entry per direction)."
                                  : "Usage: kvsteerctl [--bpffs DIR] flows count\nBound flows "
                                    "(client->server entries) and map entries.";
    auto vm = parse_sub(args, o, {}, false, usage);
    const std::size_t limit = sub == "list" ? limit_arg(vm, usage) : 0;
    auto m = c.maps();
    if (!m) return c.code();
    std::string err;
    auto r = kvsteer::control::read_flows(*m, limit, sub == "list", &err);
    if (r.is_null()) {
        c.error(err);
        return kFailed;
    }
    if (c.g().json) {
        std::cout << r.dump(2) << "\n";
        return kOk;
    }
    if (sub == "count") {
        std::printf("%s flows (%s map entries)\n", num(r["flows"]).c_str(),
                    num(r["entries"]).c_str());
        return kOk;
    }
    const int aw = addr_width(r["list"], {"src", "dst", "new_src", "new_dst"});
    std::printf("%-4s %-*s %-*s %-*s %-*s %4s %3s %8s %10s %7s\n", "DIR", aw, "SRC", aw, "DST", aw,
                "NEW SRC", aw, "NEW DST", "BE", "WK", "PACKETS", "BYTES", "AGE");
    for (auto &f : r["list"])
        std::printf("%-4s %-*s %-*s %-*s %-*s %4s %3s %8s %10s %6.1fs\n",
                    f["dir"].get<std::string>().c_str(), aw, f["src"].get<std::string>().c_str(),
                    aw, f["dst"].get<std::string>().c_str(), aw,
                    f["new_src"].get<std::string>().c_str(), aw,
                    f["new_dst"].get<std::string>().c_str(), num(f["backend"]).c_str(),
                    num(f["worker"]).c_str(), num(f["packets"]).c_str(), num(f["bytes"]).c_str(),
                    f["age_s"].get<double>());
    std::printf("%s flows (%s map entries)\n", num(r["flows"]).c_str(), num(r["entries"]).c_str());
    return kOk;
}

int cmd_counters(Ctl &c, const std::vector<std::string> &args) {
    po::options_description o("Options");
    o.add_options()("all-reasons", "also print counters that are zero");
    const std::string usage =
        "Usage: kvsteerctl [--bpffs DIR] counters [xdp|dp|backends|all] [--all-reasons]\n"
        "XDP per-reason counters (kvs_stats), dataplane per-reason counters (kvs_dp_stats,\n"
        "summed over workers) and per-backend load (kvs_be_load), read from the maps.";
    auto vm = parse_sub(args, o, {"which"}, false, usage);
    std::string which = vm.count("which") ? vm["which"].as<std::string>() : "all";
    if (which != "xdp" && which != "dp" && which != "backends" && which != "all")
        throw Usage{"unknown counters group '" + which + "'\n" + usage};
    auto m = c.maps();
    if (!m) return c.code();
    std::string err;
    auto r = kvsteer::control::read_counters(*m, &err);
    if (r.is_null()) {
        c.error(err);
        return kFailed;
    }
    if (which == "xdp")
        r = json{{"xdp", r["xdp"]}};
    else if (which == "dp")
        r = json{{"dataplane", r["dataplane"]},
                 {"dataplane_workers", r["dataplane_workers"]},
                 {"report_ring_dropped", r["report_ring_dropped"]}};
    else if (which == "backends")
        r = json{{"backends", r["backends"]}};
    if (c.g().json) {
        std::cout << r.dump(2) << "\n";
        return kOk;
    }
    bool all = vm.count("all-reasons");
    for (const char *grp : {"xdp", "dataplane"}) {
        if (!r.contains(grp)) continue;
        std::printf("%s:\n", grp);
        for (auto it = r[grp].begin(); it != r[grp].end(); ++it)
            if (all || it.value().get<std::uint64_t>())
                std::printf("  %-28s %llu\n", it.key().c_str(),
                            static_cast<unsigned long long>(it.value().get<std::uint64_t>()));
    }
    if (r.contains("backends")) {
        const int aw = addr_width(r["backends"], {"addr"});
        std::printf("backends:\n  %-4s %-*s %-6s %9s %9s %8s %6s %8s %8s %6s %6s\n", "ID", aw,
                    "ADDRESS", "STATE", "BINDS", "CLOSES", "INFLIGHT", "IDLE", "FAIL_RST",
                    "FAIL_TMO", "QUEUE", "RUN");
        for (auto &b : r["backends"])
            std::printf("  %-4s %-*s %-6s %9s %9s %8s %6s %8s %8s %6s %6s\n", num(b["id"]).c_str(),
                        aw, b["addr"].get<std::string>().c_str(),
                        b["state"].get<std::string>().c_str(), num(b["binds"]).c_str(),
                        num(b["closes"]).c_str(), num(b["in_flight"]).c_str(),
                        num(b["idle"]).c_str(), num(b["bind_fail_rst"]).c_str(),
                        num(b["bind_fail_timeout"]).c_str(), num(b["ext_queue"]).c_str(),
                        num(b["ext_running"]).c_str());
    }
    return kOk;
}

int cmd_tune(Ctl &c, const std::vector<std::string> &args) {
    const std::string usage =
        "Usage: kvsteerctl tune [NAME [VALUE]]\n"
        "Without NAME: all tunables. With NAME: its value. With VALUE: set it (live).\n"
        "Names: prefix-length, block-size, max-blocks, load-factor, load-slack, replication,\n"
        "hot-threshold, steering-mode (prefix|round-robin|five-tuple), affinity-ttl (ms),\n"
        "max-held-bytes, per-request (on|off), session-headers (header names, comma-separated;\n"
        "\"\" turns session affinity off), session-cap. Read-only: table-algorithm,\n"
        "affinity-min-hot.";
    auto vm = parse_sub(args, po::options_description("Options"), {"name", "value"}, false, usage);
    // An unknown name is a usage error, read or set (setting one exited 1, reading one 2). The
    // names are kvsteerd's (a list compiled in here refused a newer kvsteerd's tunables).
    if (vm.count("name")) {
        const std::string n = vm["name"].as<std::string>();
        if (n.empty() || n.find_first_of(", =") != std::string::npos)
            throw Usage{"unknown tunable '" + n + "'\n" + usage};
    }
    json req = vm.count("value") ? json{{"cmd", "tune.set"},
                                        {"name", vm["name"].as<std::string>()},
                                        {"value", vm["value"].as<std::string>()}}
                                 : json{{"cmd", "tune.get"}};
    auto r = c.call(req);
    if (!r) return c.refused().starts_with("unknown tunable") ? kUsage : c.code();
    json t = r->at("tunables");
    if (vm.count("name") && !vm.count("value")) {
        std::string n = vm["name"].as<std::string>();
        if (!t.contains(n)) {
            std::string names;
            for (auto it = t.begin(); it != t.end(); ++it)
                names += (names.empty() ? "" : ", ") + it.key();
            c.error("unknown tunable '" + n + "' (" + names + ")");
            return kUsage;
        }
        t = json{{n, t[n]}};
    }
    if (c.g().json) {
        std::cout << t.dump(2) << "\n";
        return kOk;
    }
    for (auto it = t.begin(); it != t.end(); ++it)
        std::printf("%s = %s\n", it.key().c_str(),
                    it.value().is_string() ? it.value().get<std::string>().c_str()
                                           : num(it.value(), -1).c_str());
    return kOk;
}

void print_fleet(json f) {
    if (!f["enabled"].get<bool>()) {
        std::printf("no fleet (kvsteerd runs without fleet-self): XDP redirects nothing\n");
        return;
    }
    std::printf("fleet: self %s, epoch %s (%zu retained), owner table generation %s, digest %s\n",
                num(f["self"]).c_str(), num(f["epoch"]).c_str(), f["epochs"].size(),
                num(f["generation"]).c_str(), f["digest"].get<std::string>().c_str());
    std::printf("lookup table digest %s, config generation %s\n",
                f.value("lookup_digest", std::string("?")).c_str(),
                f.contains("config_generation") && !f["config_generation"].is_null()
                    ? num(f["config_generation"]).c_str()
                    : "- (no etcd)");
    if (f.contains("ping") && f["ping"].is_object())
        std::printf("pings: every %s ms, silent after %s unanswered; %s rounds, %s send errors%s\n",
                    num(f["ping"]["every_ms"]).c_str(), num(f["ping"]["misses"]).c_str(),
                    num(f["ping"]["rounds"]).c_str(), num(f["ping"]["send_errors"]).c_str(),
                    f["ping"]["last_error"].is_string()
                        ? (" (" + f["ping"]["last_error"].get<std::string>() + ")").c_str()
                        : "");
    std::printf("%-3s %-17s %-8s %8s %10s\n", "ID", "MAC", "STATE", "BUCKETS", "UNANSWERED");
    for (auto &m : f["members"]) {
        const bool silent = m.value("silent", false), here = m.value("silent_here", false);
        std::printf("%-3s %-17s %-8s %8s %10s%s%s\n", num(m["id"]).c_str(),
                    m["mac"].get<std::string>().c_str(), m["state"].get<std::string>().c_str(),
                    num(m["buckets"]).c_str(),
                    m.contains("unanswered") && !m["unanswered"].is_null()
                        ? num(m["unanswered"]).c_str()
                        : "-",
                    m["self"].get<bool>() ? "  (self)" : "",
                    silent ? "  SILENT (left out)"
                    : here ? "  silent here only (kept: another appliance hears it)"
                           : "");
    }
    std::printf("epochs, oldest first:");
    for (auto &e : f["epochs"]) {
        std::string ids;
        for (auto &id : e) ids += (ids.empty() ? "" : ",") + id.dump();
        std::printf(" {%s}", ids.c_str());
    }
    std::printf("\n");
    json e = f.contains("etcd") ? f["etcd"] : json();
    if (e.is_null()) {
        std::printf("etcd: not used (the fleet comes from the config and this API)\n");
        return;
    }
    std::string alive;
    for (auto &m : e["alive"]) alive += (alive.empty() ? "" : ",") + m["id"].dump();
    std::printf("etcd: %s prefix %s, %s, revision %s, alive {%s}\n",
                e["endpoint"].get<std::string>().c_str(), e["prefix"].get<std::string>().c_str(),
                e["reachable"].get<bool>() ? "reachable"
                : e["error"].get<std::string>().empty()
                    ? "UNREACHABLE (not reached yet)"
                    : ("UNREACHABLE (" + e["error"].get<std::string>() + ")").c_str(),
                num(e["revision"]).c_str(), alive.c_str());
    if (e.contains("self_conflict") && e["self_conflict"].is_string())
        std::printf(
            "etcd: THIS APPLIANCE'S MEMBER KEY WAS WRITTEN BY ANOTHER APPLIANCE (%s): two "
            "appliances share fleet-self %s\n",
            e["self_conflict"].get<std::string>().c_str(), num(f["self"]).c_str());
    if (e.contains("watch") && e["watch"].is_object()) {
        json &w = e["watch"];
        const bool active = w.value("active", false);
        std::string why;
        if (w.contains("error") && w["error"].is_string())
            why = (active ? "; last error: " : "; error: ") + w["error"].get<std::string>();
        std::printf("etcd watch: %s, %s event(s), reopened %s time(s), %s answer(s) refused%s\n",
                    active ? "active (changes read at once, the prefix every 1 s anyway)"
                           : "DOWN (reading the prefix every 200 ms)",
                    num(w["events"]).c_str(), num(w["reopened"]).c_str(), num(w["refused"]).c_str(),
                    why.c_str());
    }
    if (e.contains("hot") && e["hot"].is_object()) {
        json &h = e["hot"];
        if (h.value("enabled", false))
            std::printf(
                "hot prefixes: %s shared, %s remote in use from %s member(s) (%s holder "
                "address(es) not backends here, %s bad value(s) ignored)\n",
                num(h["shared"]).c_str(), num(h["remote_keys"]).c_str(),
                num(h["from_members"]).c_str(), num(h["unknown_holders"]).c_str(),
                num(h["bad_values"]).c_str());
        else
            std::printf("hot prefixes: not shared (fleet-share-hot false)\n");
    }
    if (e.contains("reported")) {
        auto &rep = e["reported"];
        std::printf(
            "fleet agrees: %s (owner table, lookup table, its inputs, config generation and "
            "cookie key of every alive member as it reports them in etcd)\n",
            rep["agree"].get<bool>() ? "yes" : "NO");
        for (auto &m : rep["members"]) {
            auto str = [&](const char *k) {
                return m.contains(k) && m[k].is_string() ? m[k].get<std::string>()
                                                         : std::string("?");
            };
            auto flag = [&](const char *k, const char *yes, const char *no) {
                return m.contains(k) && m[k].is_boolean() ? (m[k].get<bool>() ? yes : no) : "?";
            };
            std::printf(
                "  %2s  dataplane %-9s %-9s %-11s owners %s lookup %s tables %s config %s "
                "cookie %s%s\n",
                num(m["id"]).c_str(), flag("healthy", "healthy", "UNHEALTHY"),
                flag("draining", "draining", ""), flag("announced", "announced", "withdrawn"),
                str("digest").c_str(), str("lookup").c_str(), str("tables").c_str(),
                m.contains("config_generation") ? num(m["config_generation"]).c_str() : "?",
                str("cookie").c_str(), m["agrees"].get<bool>() ? "" : "  <- differs");
        }
    }
    std::printf("cookie keys: current %s, previous %s (fingerprints)\n",
                f["cookie_keys"]["current"].get<std::string>().c_str(),
                f["cookie_keys"]["previous"].get<std::string>().c_str());
}

int cmd_fleet(Ctl &c, const std::vector<std::string> &args) {
    using kvsteer::control::FleetCommand;
    const FleetCommand fc = kvsteer::control::parse_fleet_command(args);
    if (fc.outcome == FleetCommand::Outcome::Help) {
        std::cout << fc.text << "\n";
        return kOk;
    }
    if (fc.outcome == FleetCommand::Outcome::Usage) throw Usage{fc.text};
    auto r = c.call(fc.request);
    if (!r) return c.code();
    if (c.g().json) {
        std::cout << r->dump(2) << "\n";
        return kOk;
    }
    if (fc.sub != "status")
        std::printf("fleet %s: %s\n", fc.sub.c_str(),
                    !(*r)["changed"].get<bool>()      ? "nothing changed"
                    : (*r)["fleet"]["etcd"].is_null() ? "owner table rewritten"
                                                      : "written to etcd (the whole fleet)");
    print_fleet(r->at("fleet"));
    return kOk;
}

}  // namespace

int main(int argc, char **argv) {
    Global g;
    if (const char *s = std::getenv("KVSTEER_SOCKET")) g.socket = s;
    if (const char *b = std::getenv("KVSTEER_BPFFS")) g.bpffs = b;
    po::options_description opts("Global options");
    opts.add_options()("help,h", "show this help")(
        "socket", po::value<std::string>(&g.socket),
        "kvsteerd API socket (default /run/kvsteer/kvsteerd.sock, env KVSTEER_SOCKET)")(
        "bpffs", po::value<std::string>(&g.bpffs),
        "pinned maps directory (default /sys/fs/bpf/kvsteer, env KVSTEER_BPFFS)")(
        "json", po::bool_switch(&g.json), "JSON output")(
        "timeout", po::value<int>(&g.timeout_ms),
        "API timeout, ms (default 5000; 15000 for fleet and drain)");
    // Global options come before the command; everything from the command on is the command's.
    int cmd_at = 1;
    std::vector<std::string> global_args;
    while (cmd_at < argc) {
        std::string a = argv[cmd_at];
        if (!a.starts_with("-")) break;
        global_args.push_back(a);
        if ((a == "--socket" || a == "--bpffs" || a == "--timeout") && cmd_at + 1 < argc)
            global_args.push_back(argv[++cmd_at]);
        cmd_at++;
    }
    try {
        po::variables_map vm;
        po::store(po::command_line_parser(global_args).options(opts).run(), vm);
        po::notify(vm);
        if (g.timeout_ms <= 0)
            throw po::error("--timeout: must be a positive number of ms (got " +
                            std::to_string(g.timeout_ms) + ")");
        // Fleet changes and a drain (which leaves the fleet's owners) may wait on etcd: up to
        // ~5.5 s in kvsteerd, past the default 5 s.
        if (!vm.count("timeout") && cmd_at < argc &&
            (std::string_view(argv[cmd_at]) == "fleet" ||
             std::string_view(argv[cmd_at]) == "drain"))
            g.timeout_ms = 15000;
        if (vm.count("help") || cmd_at >= argc) {
            std::cout << kTopUsage << "\n" << opts;
            return vm.count("help") ? kOk : kUsage;
        }
    } catch (const po::error &e) {
        std::fprintf(stderr, "kvsteerctl: %s\n%s", kvsteer::error_text(e).c_str(), kTopUsage);
        return kUsage;
    }
    std::string cmd = argv[cmd_at];
    std::vector<std::string> args(argv + cmd_at + 1, argv + argc);
    // Arguments travel to kvsteerd as JSON strings, which must be UTF-8: one that is not is the
    // user's error (it was reported as an unexpected answer from kvsteerd).
    for (std::size_t i = 0; i < args.size(); i++) {
        try {
            (void)json(args[i]).dump();
        } catch (const json::type_error &) {
            std::fprintf(stderr, "kvsteerctl: %s: argument %zu is not valid UTF-8\n", cmd.c_str(),
                         i + 1);
            return kUsage;
        }
    }
    // --json after the command too (README: "--json, --help on each"; it was a usage error there).
    for (auto it = args.begin(); it != args.end();) {
        if (*it == "--json") {
            g.json = true;
            it = args.erase(it);
        } else {
            ++it;
        }
    }
    Ctl c(g);
    try {
        if (cmd == "status") return cmd_status(c, args);
        if (cmd == "backends" || cmd == "backend") return cmd_backends(c, args);
        if (cmd == "affinity") return cmd_affinity(c, args);
        if (cmd == "flows") return cmd_flows(c, args);
        if (cmd == "counters") return cmd_counters(c, args);
        if (cmd == "tune") return cmd_tune(c, args);
        if (cmd == "fleet") return cmd_fleet(c, args);
        if (cmd == "drain") return cmd_drain(c, args);
        if (cmd == "help") {
            std::cout << kTopUsage;
            return kOk;
        }
        std::fprintf(stderr, "kvsteerctl: unknown command '%s'\n%s", cmd.c_str(), kTopUsage);
        return kUsage;
    } catch (const Usage &u) {
        std::fprintf(stderr, "kvsteerctl: %s\n", u.msg.c_str());
        return kUsage;
    } catch (const json::exception &e) {
        std::fprintf(stderr, "kvsteerctl: unexpected answer from kvsteerd: %s\n", e.what());
        return kFailed;
    }
}
