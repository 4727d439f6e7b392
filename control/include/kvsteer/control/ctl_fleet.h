// kvsteerctl fleet: its command lines as API requests (fleet.* in control/API.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvsteer::control {

struct FleetCommand {
    enum class Outcome { Request, Help, Usage };
    Outcome outcome = Outcome::Usage;
    std::string sub;         // status, push, settle, forget, member
    nlohmann::json request;  // Outcome::Request: what to send to kvsteerd
    std::string text;        // Help: the usage; Usage: the error line, then the usage
};

// The arguments after `kvsteerctl fleet`: [status] | push ID[,ID...] | settle | forget ID |
// member ID MAC, each with --help. Ids and MACs are checked here, as kvsteerd checks them.
FleetCommand parse_fleet_command(const std::vector<std::string> &args);

// The usage of `kvsteerctl fleet`.
extern const char *const kFleetUsage;

}  // namespace kvsteer::control
