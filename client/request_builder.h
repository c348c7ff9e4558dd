#pragma once

#include "absl/status/statusor.h"
#include "common/command_line.h"
#include "iblip/v1/iblip.pb.h"

namespace iblip::client {

using ::iblip::CommandLine;

// Flags of `iblip-client generate` (without --server, --json, --timeout).
extern const char* const kGenerateFlags[];

// Builds a GenerateRequest from `generate` flags; reads --image from disk.
// INVALID_ARGUMENT names the flag. Range checks are the server's job.
absl::StatusOr<v1::GenerateRequest> BuildGenerateRequest(
    const CommandLine& line);

}  // namespace iblip::client
