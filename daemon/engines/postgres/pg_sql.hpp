#pragma once
// SQL plumbing shared by the postgres engine's files (internal to daemon/).

#include <pqxx/pqxx>

#include <optional>
#include <string>
#include <vector>

namespace retentiond::pg_sql {

// Parameters of one statement: values only travel as $n, never spliced into the text.
class Params {
public:
    Params() = default;
    explicit Params(std::vector<std::string> initial) : m_values(std::move(initial)) {}
    std::string add(std::string value) {
        m_values.push_back(std::move(value));
        return "$" + std::to_string(m_values.size());
    }
    const std::vector<std::string>& values() const { return m_values; }

private:
    std::vector<std::string> m_values;
};

inline pqxx::result exec(pqxx::transaction_base& tx, const std::string& sql, const Params& params) {
    return tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params.values()));
}

// A PostgreSQL array literal ('{"a","b",NULL}') for passing lists as one parameter.
inline std::string array_literal(const std::vector<std::optional<std::string>>& items) {
    std::string out = "{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i > 0) {
            out += ',';
        }
        if (!items[i]) {
            out += "NULL";
            continue;
        }
        out += '"';
        for (const char c : *items[i]) {
            if (c == '"' || c == '\\') {
                out += '\\';
            }
            out += c;
        }
        out += '"';
    }
    return out + "}";
}

inline std::string array_literal(const std::vector<std::string>& items) {
    return array_literal(std::vector<std::optional<std::string>>(items.begin(), items.end()));
}

} // namespace retentiond::pg_sql
