#include "retentiond/policy_table.hpp"

#include "retentiond/escape.hpp"

#include "retentiond/duration.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>
#include <vector>

namespace retentiond {

std::string retention_wording(const Rule& rule, std::string_view lang) {
    const std::string& label = rule.clock_label.get(lang);
    if (rule.retain.session && !label.empty()) {
        return label;
    }
    std::string out = describe_duration(rule.retain, lang);
    if (!label.empty()) {
        out += " " + label;
    }
    return out;
}

namespace {

std::string markdown_cell(std::string_view text) {
    std::string out;
    for (const char c : text) {
        if (c == '|') {
            out += "\\|";
        } else if (c == '\n' || c == '\r') {
            out += ' ';
        } else {
            out += c;
        }
    }
    return out;
}

} // namespace

std::string render_policy_table(const Config& config, std::string_view format,
                                std::string_view lang) {
    if (format != "md" && format != "html") {
        throw std::invalid_argument("policy table format must be md or html");
    }
    if (lang != "fr" && lang != "en") {
        throw std::invalid_argument("policy table language must be fr or en");
    }
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& rule : config.rules) {
        if (!rule.in_policy_table) {
            continue;
        }
        std::pair<std::string, std::string> row{rule.category, retention_wording(rule, lang)};
        if (std::find(rows.begin(), rows.end(), row) == rows.end()) {
            rows.push_back(std::move(row));
        }
    }
    const std::string category_header = lang == "fr" ? "Catégories de données" : "Data category";
    const std::string retention_header =
        lang == "fr" ? "Durée de conservation" : "Retention period";

    std::string out;
    if (format == "md") {
        out += "| " + category_header + " | " + retention_header + " |\n";
        out += "| --- | --- |\n";
        for (const auto& [category, wording] : rows) {
            out += "| " + markdown_cell(category) + " | " + markdown_cell(wording) + " |\n";
        }
        return out;
    }
    out += "<table>\n  <thead>\n    <tr><th>" + html_escape(category_header) + "</th><th>" +
           html_escape(retention_header) + "</th></tr>\n  </thead>\n  <tbody>\n";
    for (const auto& [category, wording] : rows) {
        out += "    <tr><td>" + html_escape(category) + "</td><td>" + html_escape(wording) +
               "</td></tr>\n";
    }
    out += "  </tbody>\n</table>\n";
    return out;
}

} // namespace retentiond
