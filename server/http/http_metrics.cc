#include "server/http/http_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <string>

namespace iblip::server::http {

HttpMetrics::HttpMetrics(prometheus::Registry& registry)
    : responses_(prometheus::BuildCounter()
                     .Name("iblip_http_responses_total")
                     .Help("HTTP responses by listener, route and status code")
                     .Register(registry)) {}

void HttpMetrics::Count(const AccessRecord& record) {
  if (record.status == 0) return;  // nothing was answered
  responses_
      .Add({{"listener", record.listener},
            {"route", record.route},
            {"code", std::to_string(record.status)}})
      .Increment();
}

void AddMetricsRoute(Router& router,
                     std::shared_ptr<prometheus::Registry> registry) {
  router.Get("/metrics", [registry](HttpRequest&) -> Reply {
    HttpResponse response;
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = prometheus::TextSerializer().Serialize(registry->Collect());
    return response;
  });
}

}  // namespace iblip::server::http
