#pragma once

// `retentiond erase`: erasure requests (docs/dpo-guide.md, "Erasure requests"). Private to cli/.

#include <iosfwd>
#include <string>
#include <vector>

namespace retentiond {

// erase --subject KIND=VALUE [--request ID] [--received DATE] [--dry-run]; erase --status;
// erase --resume; erase --reapply.
int cmd_erase(const std::string& config_path, const std::vector<std::string>& args,
              std::ostream& out, std::ostream& err);

// `audit prove --subject KIND=VALUE`: whether and when the subject's records were erased.
int prove_subject(const std::string& config_path, const std::string& subject,
                  const std::string& log, std::ostream& out);

} // namespace retentiond
