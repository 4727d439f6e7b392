// The message of a Boost.Program_options error, safe to print.
//
// Boost 1.74 formats an error by replacing placeholders in its template until none is left; a
// token that itself holds a placeholder (an unknown option spelt "--x%canonical_option%", a
// config line "%invalid_line%") makes that loop endless, and the program hangs instead of
// reporting a bad argument. Every binary prints its option errors through error_text().
#pragma once

#include <algorithm>
#include <exception>
#include <string>

#include <boost/program_options/errors.hpp>

namespace kvsteer {

namespace detail {
struct PoErrorTokens : boost::program_options::error_with_option_name {
    // The substitutions are protected: reached through a subclass.
    static void defuse(boost::program_options::error_with_option_name &e) {
        auto tokens = &PoErrorTokens::m_substitutions;
        for (auto &kv : e.*tokens) std::replace(kv.second.begin(), kv.second.end(), '%', '?');
    }
};
}  // namespace detail

// e.what(), with any '%' in an option error's tokens shown as '?'.
inline std::string error_text(const std::exception &e) {
    if (const auto *w = dynamic_cast<const boost::program_options::error_with_option_name *>(&e)) {
        boost::program_options::error_with_option_name copy = *w;
        detail::PoErrorTokens::defuse(copy);
        return copy.what();
    }
    return e.what();
}

}  // namespace kvsteer
