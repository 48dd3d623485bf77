#pragma once

#include "retentiond/config.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace retentiond {

// Applies a strategy to one text value (CSV field, client-side SQL value). nullopt means "null":
// an empty CSV field, JSON null, SQL NULL. `hmac` and `email_domain` use the audit key.
std::optional<std::string> anonymize_text(const Strategy& s, std::string_view value,
                                          const Secret& audit_key, const date::time_zone* tz);

// Applies a field strategy to a JSON object in place; field is a dotted path. A missing path is
// left alone.
void anonymize_json(nlohmann::json& object, const FieldStrategy& fs, const Secret& audit_key,
                    const date::time_zone* tz);

} // namespace retentiond
