#pragma once
// The DPO report's section "erasure requests" (daemon/report/report_erasures.cpp), from the
// ledger (ledger.hpp): open requests with their deadlines, overdue ones first, the rules whose
// holds defer records, re-applications after restores, and how many requests are done. Request
// ids, dates, rule names and counts only: never an identifier, nor its digest.

#include "retentiond/ledger.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

// The section, as Markdown (a "## " heading and a table) or as an HTML <section>; `now` (the
// report's date) decides what is overdue.
std::string erasures_section_md(const std::vector<ErasureRequest>& ledger, TimePoint now,
                                std::string_view lang);
std::string erasures_section_html(const std::vector<ErasureRequest>& ledger, TimePoint now,
                                  std::string_view lang);
// The "erasure_requests" object of the JSON report.
nlohmann::json erasures_json(const std::vector<ErasureRequest>& ledger, TimePoint now);

} // namespace retentiond
