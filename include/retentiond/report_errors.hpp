#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>

namespace retentiond {

// The errors the DPO report shows, as stable codes with a French and an English message, so that
// a French report reads French throughout. The English detail (a driver's or an engine's text)
// stays in the log and in the audit log; the report shows the code and the message in its
// language. The codes are part of the report's contract (docs/report-schema.md): never renamed.
struct ErrorText {
    std::string_view code; // "RD-STORE-UNAVAILABLE"
    std::string_view fr;
    std::string_view en;
    std::string_view get(std::string_view lang) const { return lang == "en" ? en : fr; }
};

// The text of a code; an unknown or empty code gives RD-ERROR (an unexpected error).
const ErrorText& error_text(std::string_view code);

// The code of an error text from an engine or a driver; `unavailable` when the run or dry run
// found the store unreachable (UnavailableError).
std::string_view classify_error(std::string_view detail, bool unavailable);

// The code of an audit-log `error`, `refusal` or `refused` event (its limit, reason, sqlstate,
// unavailable flag, else its message).
std::string_view classify_event(const nlohmann::json& event);

// "le service de données ne répond pas (RD-STORE-UNAVAILABLE)": what a report shows.
std::string error_for_report(std::string_view code, std::string_view lang);

} // namespace retentiond
