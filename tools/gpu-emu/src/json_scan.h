// Finds the exact bytes of a top-level JSON member's value, as a prefix-aware router sees them
// on the wire (the chat prompt is the raw "messages" array, from its '[').
#pragma once
#include <optional>
#include <string_view>

namespace kvsteer::emu {

// `body` must already be known to be valid JSON. Returns the raw value of the last member named
// `key` of the top-level object (JSON parsers keep the last duplicate), or nullopt. Keys are
// compared as written (no escape decoding).
std::optional<std::string_view> raw_top_level_value(std::string_view body, std::string_view key);

}  // namespace kvsteer::emu
