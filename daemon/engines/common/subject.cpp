// Erasure requests: identifiers, their normalization and digests (subject.hpp).
#include "retentiond/subject.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/errors.hpp"

namespace retentiond {

bool valid_subject_kind(std::string_view kind) {
    if (kind.empty() || kind.front() < 'a' || kind.front() > 'z') {
        return false;
    }
    for (const char c : kind) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
            return false;
        }
    }
    return true;
}

std::string normalize_subject(std::string_view kind, std::string_view value) {
    constexpr std::string_view blanks = " \t\r\n";
    const auto first = value.find_first_not_of(blanks);
    if (first == std::string_view::npos) {
        return {};
    }
    std::string out(value.substr(first, value.find_last_not_of(blanks) - first + 1));
    if (kind == "email") {
        for (char& c : out) {
            if (c >= 'A' && c <= 'Z') {
                c = static_cast<char>(c - 'A' + 'a');
            }
        }
    }
    return out;
}

std::string subject_digest(const Secret& audit_key, std::string_view kind,
                           std::string_view normalized) {
    std::string data = "subject\n";
    data.append(kind).append("\n").append(normalized);
    return hmac_sha256_hex(audit_key.reveal(), data);
}

SubjectArg parse_subject_arg(std::string_view text) {
    const auto eq = text.find('=');
    if (eq == std::string_view::npos) {
        throw UsageError("--subject: expected KIND=VALUE (e.g. email=jane@example.org)");
    }
    SubjectArg a{std::string(text.substr(0, eq)), std::string(text.substr(eq + 1))};
    if (!valid_subject_kind(a.kind)) {
        throw UsageError("--subject: \"" + a.kind +
                         "\" is not an identifier kind ([a-z][a-z0-9_]*)");
    }
    if (normalize_subject(a.kind, a.value).empty()) {
        throw UsageError("--subject: the " + a.kind + " is empty");
    }
    return a;
}

bool SubjectQuery::matches(std::string_view raw) const {
    if (values.empty() && digests.empty()) {
        return false;
    }
    const std::string n = normalize_subject(kind, raw);
    if (n.empty()) {
        return false;
    }
    if (values.count(n) != 0) {
        return true;
    }
    return !digests.empty() && audit_key != nullptr &&
           digests.count(subject_digest(*audit_key, kind, n)) != 0;
}

} // namespace retentiond
