// The dataplane's backend choice is core's (kvsteer/core/choose.h), shared with the simulator.
#pragma once

#include "kvsteer/core/choose.h"
#include "tables.h"

namespace kvsteer::dp {

using kvsteer::Choice;
using kvsteer::choose_backend;
using kvsteer::ChooseScratch;

}  // namespace kvsteer::dp
