// Bounded scan of a JSON object's top level: finds one member's value and "model", skipping
// every other value (nested objects/arrays by depth, strings by their closing quote).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace kvsteer {

struct JsonTopScan {
    std::size_t model_off = 0;  // "model" string contents (between the quotes, escapes as sent)
    std::size_t model_len = 0;
    bool found_key = false;     // the wanted member was found with an acceptable value type
    std::size_t key_off = 0;    // first byte of its value ('"' or '[')
    std::size_t key_end = 0;    // one past its last byte, or the end of `body` if truncated
    bool key_complete = false;  // its value ends within `body`
    // The "model" seen before that member (model_len 0: none): a later duplicate "model" does not
    // change what the key is hashed with, however much of the body the flight holds.
    std::size_t key_model_off = 0, key_model_len = 0;
};

// `want` is the member name compared byte for byte (no unescaping). Its value must be an array,
// or also a string when `allow_string`. Duplicate members: the last one wins, as in the usual
// JSON libraries servers use. Offsets are relative to `body`. Stops cleanly at the end of
// `body` or at the first malformed byte, keeping what it found before.
JsonTopScan scan_top_level(std::span<const std::uint8_t> body, std::string_view want,
                           bool allow_string) noexcept;

}  // namespace kvsteer
