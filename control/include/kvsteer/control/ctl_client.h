// Client side of the kvsteerd API: one newline-delimited JSON request, one response.
#pragma once

#include <boost/program_options/option.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace kvsteer::control {

// nullopt + err when the daemon cannot be reached or answers garbage (not for {"ok": false}).
// `connected` (when given) says whether the connection was made: after that the request may
// have reached kvsteerd, and been applied, whatever went wrong with its answer.
std::optional<nlohmann::json> api_call(const std::string &socket_path, const nlohmann::json &req,
                                       std::chrono::milliseconds timeout, std::string *err,
                                       bool *connected = nullptr);

// kvsteerctl's command lines: a Boost.Program_options style parser (command_line_parser::
// extra_style_parser) that takes a leading token reading as a negative number ("-1", "-0.5") as
// a positional value, not as a short option: `kvsteerctl tune NAME -1` reaches the range check
// (and its error naming the knob) instead of failing as "unrecognised option '-1'". kvsteerctl
// has no digit options. Other tokens are left to the default parsers.
std::vector<boost::program_options::option> negative_number_as_value(
    std::vector<std::string> &args);

}  // namespace kvsteer::control
