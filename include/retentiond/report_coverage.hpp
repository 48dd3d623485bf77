#pragma once
// The DPO report's section "personal data without a rule" (daemon/report/report_coverage.cpp),
// rendered from a CoverageReport in French or English. Locations, pattern names, counts and the
// acknowledgements' reasons only: never a value.

#include "retentiond/coverage.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace retentiond {

// "Coverage" / "Couverture": the header line's label.
std::string coverage_status_label(std::string_view lang);
// One line for the report's header: "complete" or how many locations no rule covers.
std::string coverage_status_text(const CoverageReport& c, std::string_view lang);
// The section, as Markdown (a "## " heading and tables) or as an HTML <section>.
std::string coverage_section_md(const CoverageReport& c, std::string_view lang);
std::string coverage_section_html(const CoverageReport& c, std::string_view lang);
// The "coverage" object of the JSON report.
nlohmann::json coverage_json(const CoverageReport& c);

} // namespace retentiond
