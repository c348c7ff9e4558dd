#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <memory>

#include "server/api_key_auth.h"

namespace iblip::server {

// Makes gRPC server reflection (registered by grpc++_reflection's plugin,
// whose handlers we do not write) need an API key like every other call:
// a reflection call without a valid "authorization: Bearer KEY" ends
// UNAUTHENTICATED before the service reads a request. Other methods check
// their keys themselves and are not intercepted.
//
// Why an interceptor: server interceptors cannot answer a call themselves,
// and AuthMetadataProcessor only runs on TLS ports; cancelling the call
// with a status (grpc_call_cancel_with_status) sends that status to the
// client and the service's reads fail.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ReflectionAuthInterceptorFactory(const ApiKeyAuth* auth);

}  // namespace iblip::server
