// Client side of the kvsteerd API: one newline-delimited JSON request, one response.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kvsteer::control {

// nullopt + err when the daemon cannot be reached or answers garbage (not for {"ok": false}).
std::optional<nlohmann::json> api_call(const std::string &socket_path, const nlohmann::json &req,
                                       std::chrono::milliseconds timeout, std::string *err);

}  // namespace kvsteer::control
