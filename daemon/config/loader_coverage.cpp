// The `coverage` section (docs/policy-format-extensions.md): acknowledgements of locations that
// look personal and need no rule, each with its reason. Read after the datastores of every file.
#include "loader.hpp"

namespace retentiond::config_detail {

void Loader::read_coverage(const ConfigNode& node) {
    auto f = map(node, "coverage");
    if (!f) {
        return;
    }
    check_keys(*f, {"ignore"});
    const auto* list = f->get("ignore");
    if (list == nullptr) {
        return;
    }
    if (!list->is_sequence()) {
        type_error(*list, "coverage.ignore", "a list");
        return;
    }
    for (const auto& item : list->items()) {
        read_coverage_ignore(item);
    }
}

void Loader::read_coverage_ignore(const ConfigNode& node) {
    auto f = map(node, "coverage.ignore");
    if (!f) {
        return;
    }
    check_keys(*f, {"datastore", "table", "column", "files", "pattern", "reason"});
    CoverageIgnore ack;
    ack.pos = pos(node);
    const auto text = [&](std::string_view key, std::string& out) {
        if (const auto* v = f->get(key)) {
            out = string(*v, key).value_or("");
        }
    };
    text("datastore", ack.datastore);
    text("table", ack.table);
    text("column", ack.column);
    text("files", ack.files);
    text("pattern", ack.pattern);
    text("reason", ack.reason);
    const int targets = static_cast<int>(!ack.table.empty()) +
                        static_cast<int>(!ack.files.empty()) +
                        static_cast<int>(!ack.pattern.empty());
    if (targets != 1) {
        error(node, "coverage.ignore: give one of \"table\", \"files\" or \"pattern\"");
    }
    if (!ack.column.empty() && !ack.pattern.empty()) {
        error(*f->get("column"), "coverage.ignore: \"column\" goes with \"table\" or \"files\"");
    }
    if (const auto* v = f->get("files"); v != nullptr && !ack.files.empty()) {
        if (auto problem = glob_problem(ack.files)) {
            error(*v, "files: " + *problem);
        }
    }
    if (ack.reason.empty()) {
        error(node, "coverage.ignore: missing key \"reason\" (the report prints it to the DPO)");
    }
    if (const auto* v = f->get("datastore");
        v != nullptr && !ack.datastore.empty() && m_config.datastores.count(ack.datastore) == 0) {
        Keys names;
        for (const auto& [n, ds] : m_config.datastores) {
            names.push_back(n);
        }
        error(*v, "coverage.ignore: unknown datastore " + in_quotes(ack.datastore) +
                      hint(ack.datastore, names));
    }
    m_config.coverage_ignores.push_back(std::move(ack));
}

} // namespace retentiond::config_detail
