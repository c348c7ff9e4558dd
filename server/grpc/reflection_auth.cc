#include "server/grpc/reflection_auth.h"

#include <grpc/grpc.h>
#include <grpcpp/server_context.h>

#include <string>

#include "absl/strings/match.h"

namespace iblip::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

class ReflectionAuthInterceptor final : public grpc::experimental::Interceptor {
 public:
  ReflectionAuthInterceptor(grpc::experimental::ServerRpcInfo* info,
                            const ApiKeyAuth* auth)
      : info_(info), auth_(auth) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      const auto* metadata = methods->GetRecvInitialMetadata();
      auto it = metadata->find("authorization");
      const absl::Status status = auth_->Check(
          it == metadata->end()
              ? absl::string_view()
              : absl::string_view(it->second.data(), it->second.size()));
      if (!status.ok()) {
        const std::string message(status.message());
        grpc_call_cancel_with_status(info_->server_context()->c_call(),
                                     GRPC_STATUS_UNAUTHENTICATED,
                                     message.c_str(), nullptr);
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* const info_;
  const ApiKeyAuth* const auth_;
};

class Factory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(const ApiKeyAuth* auth) : auth_(auth) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    if (auth_ == nullptr || method == nullptr ||
        !absl::StartsWith(method, "/grpc.reflection."))
      return nullptr;
    return new ReflectionAuthInterceptor(info, auth_);
  }

 private:
  const ApiKeyAuth* const auth_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ReflectionAuthInterceptorFactory(const ApiKeyAuth* auth) {
  return std::make_unique<Factory>(auth);
}

}  // namespace iblip::server
