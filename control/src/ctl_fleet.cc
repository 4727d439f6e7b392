// kvsteerctl fleet's command lines (ctl_fleet.h).
#include "kvsteer/control/ctl_fleet.h"

#include <algorithm>

#include "kvsteer/control/fleet.h"

namespace kvsteer::control {

const char *const kFleetUsage =
    "Usage: kvsteerctl fleet [status]          self, members (MAC, state, buckets owned), epochs,\n"
    "                                          owner-table digest and generation\n"
    "       kvsteerctl fleet push ID[,ID...]   a new membership epoch: its members own the "
    "buckets\n"
    "                                          (a join: the current ones + ID; a drain: - ID)\n"
    "       kvsteerctl fleet settle            drop every epoch but the newest (once the flows of\n"
    "                                          the older ones have ended)\n"
    "       kvsteerctl fleet forget ID         remove ID from every epoch (it crashed)\n"
    "       kvsteerctl fleet member ID MAC     set (or add) a member's MAC\n"
    "       kvsteerctl fleet rotate-cookie     a fresh cookie key for the fleet (fleet-etcd)\n"
    "Without fleet-etcd, every appliance of the fleet must be given the same operations in the\n"
    "same order; their `fleet status` digests then agree. With it, one appliance's kvsteerctl\n"
    "changes the whole fleet (etcd carries it). IDs are 0..15.";

FleetCommand parse_fleet_command(const std::vector<std::string> &args) {
    FleetCommand c;
    auto usage = [&](const std::string &why) {
        c.outcome = FleetCommand::Outcome::Usage;
        c.text = why + "\n" + kFleetUsage;
        return c;
    };
    if (std::any_of(args.begin(), args.end(),
                    [](const std::string &a) { return a == "-h" || a == "--help"; })) {
        c.outcome = FleetCommand::Outcome::Help;
        c.text = kFleetUsage;
        return c;
    }
    for (const auto &a : args)
        if (a.starts_with("-")) return usage("unknown option '" + a + "'");
    c.sub = args.empty() ? "status" : args[0];
    const std::size_t want = c.sub == "push" || c.sub == "forget" ? 2 : c.sub == "member" ? 3 : 1;
    if (c.sub != "status" && c.sub != "push" && c.sub != "settle" && c.sub != "forget" &&
        c.sub != "member" && c.sub != "rotate-cookie")
        return usage("unknown fleet subcommand '" + c.sub +
                     "' (status, push, settle, forget, member, rotate-cookie)");
    if (args.size() > want && !args.empty())
        return usage("fleet " + c.sub + ": unexpected '" + args[want] + "'");
    if (args.size() < want && c.sub != "status")
        return usage("fleet " + c.sub + ": missing " +
                     (c.sub == "push"   ? "ID[,ID...]"
                      : args.size() < 2 ? "ID"
                                        : "MAC"));
    std::string err;
    c.request = {{"cmd", c.sub == "rotate-cookie" ? "fleet.rotate_cookie" : "fleet." + c.sub}};
    if (c.sub == "push") {
        auto set = parse_member_set(args[1], &err);
        if (!set) return usage("fleet push: " + err);
        c.request["members"] = args[1];
    } else if (c.sub == "forget" || c.sub == "member") {
        auto id = parse_appliance_id(args[1], &err);
        if (!id) return usage("fleet " + c.sub + ": " + err);
        c.request["id"] = *id;
        if (c.sub == "member") {
            auto mac = parse_mac(args[2], &err);
            if (!mac) return usage("fleet member: " + err);
            c.request["mac"] = format_mac(*mac);
        }
    }
    c.outcome = FleetCommand::Outcome::Request;
    return c;
}

}  // namespace kvsteer::control
