#pragma once

// `retentiond coverage`, and the line `check` prints about it. Private to cli/.

#include "retentiond/coverage.hpp"

#include <iosfwd>
#include <string>
#include <vector>

namespace retentiond {

// `retentiond coverage [--format text|json|md] [--datastore NAME]`: 0 when everything that looks
// personal is covered or acknowledged, 1 otherwise, 69 when a datastore is unavailable.
int cmd_coverage(const std::string& config_path, const std::vector<std::string>& args,
                 std::ostream& out, std::ostream& err);

// "coverage: 3 locations look personal and no rule covers them (...); see retentiond coverage"
std::string coverage_summary(const CoverageReport& report);

} // namespace retentiond
