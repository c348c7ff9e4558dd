#include "server/http/api_routes.h"

#include "absl/time/clock.h"
#include "server/http/chat_reply.h"
#include "server/http/favicon.h"
#include "server/http/static_files.h"

namespace iblip::server::http {
namespace {

Reply HandleChat(HttpRequest& request, const ApiOptions& options) {
  absl::StatusOr<ChatRequest> chat =
      ParseChatRequest(std::move(request.body), options.history, options.json);
  if (!chat.ok()) return ErrorResponse(chat.status());
  ChatReply::Info info;
  info.id = "chatcmpl-" + options.backend->NewRequestId();
  info.model = options.model_id;
  info.created = absl::ToUnixSeconds(absl::Now());
  info.stream = chat->stream;
  info.include_usage = chat->include_usage;
  auto reply = std::make_shared<ChatReply>(info);
  reply->SetCanceller(options.backend->Start(chat->generate, info.id, reply));
  return std::shared_ptr<PendingReply>(std::move(reply));
}

HttpResponse StaticResponse(const char* content_type, std::string body,
                            const char* cache_control) {
  HttpResponse response;
  response.content_type = content_type;
  response.body = std::move(body);
  response.headers = {{"Cache-Control", cache_control}};
  return response;
}

}  // namespace

void AddApiRoutes(Router& router, const ApiOptions& options) {
  router.RequireKey("/v1/", options.auth);
  router.Post("/v1/chat/completions", [options](HttpRequest& request) {
    return HandleChat(request, options);
  });
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  router.Get("/v1/models",
             [models = ModelsJson(options.model_id, created, options.model_info,
                                  options.history)](HttpRequest&) -> Reply {
               return JsonResponse(200, models);
             });
  for (const char* path : {"/", "/index.html"}) {
    router.Get(path, [](HttpRequest& request) -> Reply {
      const StaticFile* file = FindStaticFile(request.path);
      if (file == nullptr)
        return ErrorResponse(absl::NotFoundError("path: no such page"));
      return StaticResponse(file->content_type, std::string(file->content),
                            "no-cache");
    });
  }
  router.Get("/favicon.ico", [](HttpRequest&) -> Reply {
    return StaticResponse("image/x-icon", FaviconIco(), "max-age=86400");
  });
}

}  // namespace iblip::server::http
