#pragma once

#include "retentiond/config.hpp"

#include <string>
#include <string_view>

namespace retentiond {

// The retention table of a privacy policy, generated from the rules so that the published promise
// and the enforced rules cannot drift apart. One row per distinct (category, retention wording), in
// the order the rules first use them; rules with `policy_table: false` are left out.
// format: "md" (a Markdown table) or "html" (a <table> fragment, text escaped); lang: "fr" or "en".
// Throws std::invalid_argument for any other format or lang.
std::string render_policy_table(const Config& config, std::string_view format,
                                std::string_view lang);

// The wording of one rule's retention, e.g. "12 mois à compter de la dernière utilisation du
// compte." (describe_duration(retain) + " " + clock_label); for `retain: session` the clock label
// alone carries the wording.
std::string retention_wording(const Rule& rule, std::string_view lang);

} // namespace retentiond
