#include "options.hpp"

#include "retentiond/errors.hpp"

#include <utility>

namespace retentiond {

OptionParser::OptionParser(std::vector<std::string> args, std::string verb)
    : m_args(std::move(args)), m_prefix(verb.empty() ? std::string() : verb + ": ") {}

bool OptionParser::flag(const std::string& name) {
    bool found = false;
    for (auto it = m_args.begin(); it != m_args.end();) {
        if (*it == name) {
            found = true;
            it = m_args.erase(it);
        } else {
            ++it;
        }
    }
    return found;
}

std::vector<std::string> OptionParser::values(const std::string& name) {
    std::vector<std::string> found;
    for (auto it = m_args.begin(); it != m_args.end();) {
        if (*it == name) {
            if (it + 1 == m_args.end()) {
                usage(name + " needs a value");
            }
            found.push_back(*(it + 1));
            it = m_args.erase(it, it + 2);
        } else if (it->rfind(name + "=", 0) == 0) {
            found.push_back(it->substr(name.size() + 1));
            it = m_args.erase(it);
        } else {
            ++it;
        }
    }
    return found;
}

std::optional<std::string> OptionParser::value(const std::string& name) {
    auto all = values(name);
    if (all.size() > 1) {
        usage(name + " given more than once");
    }
    if (all.empty()) {
        return std::nullopt;
    }
    return all.front();
}

std::optional<std::string> OptionParser::last_value(const std::string& name) {
    auto all = values(name);
    if (all.empty()) {
        return std::nullopt;
    }
    return all.back();
}

void OptionParser::finish() const {
    if (!m_args.empty()) {
        usage("unexpected argument \"" + m_args.front() + "\"");
    }
}

void OptionParser::usage(const std::string& message) const {
    throw UsageError(m_prefix + message);
}

} // namespace retentiond
