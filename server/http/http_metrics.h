#pragma once

#include <memory>

#include "server/http/access_log.h"
#include "server/http/router.h"

namespace prometheus {
class Counter;
template <typename T>
class Family;
class Registry;
}  // namespace prometheus

namespace iblip::server::http {

// Prometheus over HTTP: GET /metrics (text format 0.0.4) on a router, and
// iblip_http_responses_total{listener, route, code} counted per answered
// request (route: the matched route's pattern, or "-"; so the label values
// stay few whatever clients send).
class HttpMetrics {
 public:
  explicit HttpMetrics(prometheus::Registry& registry);
  void Count(const AccessRecord& record);

 private:
  prometheus::Family<prometheus::Counter>& responses_;
};

void AddMetricsRoute(Router& router,
                     std::shared_ptr<prometheus::Registry> registry);

}  // namespace iblip::server::http
