// Parsing JSON that arrives from outside (the API socket, etcd) with a nesting bound.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace kvsteer::control {

// Values nested deeper than this are refused: nlohmann's parser is iterative, but dump() recurses
// once per level, and a 200 KB request of 100,000 nested arrays overflowed kvsteerd's stack when a
// handler quoted the value back (a segfault no catch sees).
inline constexpr int kMaxJsonDepth = 64;

// json::parse without exceptions: discarded (is_discarded()) when `text` is not JSON or nests
// deeper than kMaxJsonDepth (then *too_deep is set, when given). Nothing past the bound is built.
inline nlohmann::json parse_json_bounded(std::string_view text, bool *too_deep = nullptr) {
    bool deep = false;
    nlohmann::json::parser_callback_t cb = [&deep](int depth, nlohmann::json::parse_event_t,
                                                   nlohmann::json &) {
        if (depth > kMaxJsonDepth) deep = true;
        return !deep;
    };
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), cb, false);
    if (too_deep) *too_deep = deep;
    if (deep) return nlohmann::json(nlohmann::json::value_t::discarded);
    return j;
}

// An untrusted value quoted in a message: a scalar as JSON (at most `max` characters), an array
// or object by its kind alone (dump() of one recurses once per level of nesting).
inline std::string json_brief(const nlohmann::json &j, std::size_t max = 40) {
    if (j.is_array()) return "a list";
    if (j.is_object()) return "an object";
    return j.dump().substr(0, max);
}

}  // namespace kvsteer::control
