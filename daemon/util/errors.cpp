#include "retentiond/errors.hpp"

namespace retentiond {

std::string Diagnostic::to_string() const {
    std::string out;
    if (!pos.file.empty()) {
        out += pos.file;
        if (pos.line > 0) {
            out += ":" + std::to_string(pos.line);
            if (pos.column > 0) {
                out += ":" + std::to_string(pos.column);
            }
        }
        out += ": ";
    }
    if (!rule.empty()) {
        out += "rule \"" + rule + "\": ";
    }
    out += message;
    return out;
}

namespace {
std::string join(const std::vector<Diagnostic>& diagnostics) {
    std::string out;
    for (const auto& d : diagnostics) {
        if (!out.empty()) {
            out += '\n';
        }
        out += d.to_string();
    }
    return out;
}
} // namespace

ConfigError::ConfigError(std::vector<Diagnostic> diagnostics)
    : std::runtime_error(join(diagnostics)), m_diagnostics(std::move(diagnostics)) {}

} // namespace retentiond
