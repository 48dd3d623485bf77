#pragma once

// Erasure requests (issue 20): a person's identifier, as given, normalized and matched against the
// records of the rules that declare `subject:` for its kind; its HMAC digest is all the audit log
// ever holds of it (docs/policy-format-extensions.md, "Erasure requests").

#include "retentiond/config.hpp"

#include <set>
#include <string>
#include <string_view>

namespace retentiond {

// An identifier kind: [a-z][a-z0-9_]* ("email", "user_id", "phone").
bool valid_subject_kind(std::string_view kind);

// The documented normalization: surrounding blanks (space, tab, CR, LF) removed, and for kind
// "email" ASCII letters lower-cased. Matching is exact on the normalized texts.
std::string normalize_subject(std::string_view kind, std::string_view value);

// HMAC-SHA256(audit_key, "subject\n" + kind + "\n" + normalized value), hex: how the audit log
// names a person. `value` must already be normalized.
std::string subject_digest(const Secret& audit_key, std::string_view kind,
                           std::string_view normalized);

// "email=Jane@Example.org" -> {"email", "Jane@Example.org"}; UsageError when malformed.
struct SubjectArg {
    std::string kind;
    std::string value;
};
SubjectArg parse_subject_arg(std::string_view text);

// Which records of one rule an erasure looks for: those whose field, normalized, is one of
// `values`, or (a resume or a re-application, where only digests are known) whose digest is one
// of `digests`.
struct SubjectQuery {
    std::string kind;
    SubjectField field;
    std::set<std::string> values;  // normalized
    std::set<std::string> digests; // subject_digest of the normalized value
    const Secret* audit_key = nullptr;

    // Whether a record's raw field text designates the subject.
    bool matches(std::string_view raw) const;
};

} // namespace retentiond
