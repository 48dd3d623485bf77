// A composite key's canonical text (engine.hpp: canonical_key) is the JSON array nlohmann writes:
// the audit digests it, and `audit prove` rebuilds it from the values a person gives, so the
// hand-built fast path must write exactly the same bytes.
#include "retentiond/engine.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace retentiond {
namespace {

TEST(CanonicalKey, OneColumnIsTheValueItself) {
    EXPECT_EQ(canonical_key({"42"}), "42");
    EXPECT_EQ(canonical_key({"a\"b"}), "a\"b");
}

TEST(CanonicalKey, SeveralColumnsAreTheJsonArrayOfTheirTexts) {
    const std::vector<std::vector<std::string>> cases = {
        {"42", "2024-01-31 23:00:00+00"},
        {"", ""},
        {"quote\"d", "back\\slash", "both\\\""},
        {"tab\there", "x"},                     // a control character: escaped as \t
        {"caf\xc3\xa9", "\xe2\x82\xac"},        // UTF-8 kept as it is
        {"\x01", "bell\x07", "del\x7f"},        // \u0001, \u0007, DEL
        {"[\"not\",\"nested\"]", "{}", "null"}, // values that look like JSON stay strings
    };
    for (const auto& values : cases) {
        EXPECT_EQ(canonical_key(values), nlohmann::json(values).dump()) << values.front();
    }
    EXPECT_EQ(canonical_key({"1", "a\"b"}), R"(["1","a\"b"])");
}

} // namespace
} // namespace retentiond
