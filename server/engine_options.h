#pragma once

#include "config/server_config.pb.h"
#include "server/engine/engine.h"

namespace iblip::server {

// The engine's options from the scheduler section of the config (whose
// schema holds the defaults: this is the only translation).
Engine::Options EngineOptionsFrom(const config::SchedulerConfig& scheduler);

}  // namespace iblip::server
