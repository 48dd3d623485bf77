// Erasure requests' identifiers (subject.hpp): the documented normalization, the digest, the
// command-line form and the matching by value or by digest.
#include "retentiond/subject.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/errors.hpp"

#include <gtest/gtest.h>

namespace retentiond {
namespace {

TEST(Subject, NormalizationTrimsAndLowerCasesEmailsOnly) {
    EXPECT_EQ(normalize_subject("email", " \tJane.Doe@Example.ORG\r\n"), "jane.doe@example.org");
    EXPECT_EQ(normalize_subject("user_id", "  AbC-12 "), "AbC-12"); // case kept
    // ASCII letters only, as the PostgreSQL side (translate) does: "É" stays.
    EXPECT_EQ(normalize_subject("email", "\xC3\x89LODIE@example.fr"), "\xC3\x89lodie@example.fr");
    EXPECT_EQ(normalize_subject("email", "   "), "");
}

TEST(Subject, DigestIsTheKeyedHmacOfKindAndNormalizedValue) {
    const Secret key("k");
    EXPECT_EQ(subject_digest(key, "email", "a@b.c"), hmac_sha256_hex("k", "subject\nemail\na@b.c"));
    EXPECT_NE(subject_digest(key, "email", "a@b.c"), subject_digest(key, "user_id", "a@b.c"));
    EXPECT_NE(subject_digest(key, "email", "a@b.c"),
              subject_digest(Secret("k2"), "email", "a@b.c"));
}

TEST(Subject, CommandLineFormIsKindEqualsValue) {
    const auto a = parse_subject_arg("email= x=y@example.org");
    EXPECT_EQ(a.kind, "email");
    EXPECT_EQ(a.value, " x=y@example.org"); // everything after the first '='
    EXPECT_THROW(parse_subject_arg("email"), UsageError);
    EXPECT_THROW(parse_subject_arg("Email=a@b.c"), UsageError);
    EXPECT_THROW(parse_subject_arg("=a@b.c"), UsageError);
    EXPECT_THROW(parse_subject_arg("email= \t"), UsageError);
    EXPECT_TRUE(valid_subject_kind("user_id2"));
    EXPECT_FALSE(valid_subject_kind("2fa"));
    EXPECT_FALSE(valid_subject_kind("user-id"));
}

TEST(Subject, MatchesByNormalizedValueOrByDigest) {
    const Secret key("k");
    SubjectQuery q;
    q.kind = "email";
    q.values = {"jane@example.org"};
    EXPECT_TRUE(q.matches(" JANE@example.org"));
    EXPECT_FALSE(q.matches("jane@example.org.evil"));
    EXPECT_FALSE(q.matches(""));
    SubjectQuery d;
    d.kind = "email";
    d.audit_key = &key;
    d.digests = {subject_digest(key, "email", "bob@example.org")};
    EXPECT_TRUE(d.matches("Bob@Example.org "));
    EXPECT_FALSE(d.matches("jane@example.org"));
    EXPECT_FALSE(SubjectQuery{}.matches("anything")); // nothing asked: nothing matches
}

} // namespace
} // namespace retentiond
