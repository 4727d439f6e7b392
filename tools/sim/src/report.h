// Results as a text table and as JSON.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "simulator.h"

namespace kvsteer::sim {

std::string format_table(const std::vector<RunResult> &runs);
nlohmann::json to_json(const RunResult &r);

}  // namespace kvsteer::sim
