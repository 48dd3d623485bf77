#pragma once

// `retentiond report`. Private to cli/.

#include <iosfwd>
#include <string>
#include <vector>

namespace retentiond {

// `retentiond report [--format F] [--output FILE] [--lang L] [--rule NAME]... [--log FILE]`.
// Returns the exit code: 0, or 75 when a rule's datastore could not be read (the report is still
// produced). Usage errors throw UsageError.
int cmd_report(const std::string& config_path, const std::vector<std::string>& args,
               std::ostream& out, std::ostream& err);

} // namespace retentiond
