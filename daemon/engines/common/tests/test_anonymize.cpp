// Value-level anonymization strategies, as every engine applies them.
#include "retentiond/anonymize.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/timeutil.hpp"

#include <gtest/gtest.h>

namespace retentiond {
namespace {

Strategy make(Strategy::Kind kind) {
    Strategy s;
    s.kind = kind;
    return s;
}

class Anonymize : public ::testing::Test {
protected:
    std::optional<std::string> text(const Strategy& s, std::string_view v) {
        return anonymize_text(s, v, m_key, m_tz);
    }
    Secret m_key{"key"};
    const date::time_zone* m_tz = find_zone("Europe/Paris");
};

TEST_F(Anonymize, NullAndFixed) {
    EXPECT_EQ(text(make(Strategy::Kind::null_value), "Élodie"), std::nullopt);
    auto fixed = make(Strategy::Kind::fixed);
    fixed.fixed_value = "REDACTED";
    EXPECT_EQ(text(fixed, "Élodie"), "REDACTED");
}

TEST_F(Anonymize, HmacIsTheKeyedDigestAndStable) {
    EXPECT_EQ(text(make(Strategy::Kind::hmac), "The quick brown fox jumps over the lazy dog"),
              "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    EXPECT_EQ(text(make(Strategy::Kind::hmac), "a"), text(make(Strategy::Kind::hmac), "a"));
    EXPECT_NE(anonymize_text(make(Strategy::Kind::hmac), "a", Secret("other"), m_tz),
              text(make(Strategy::Kind::hmac), "a"));
}

TEST_F(Anonymize, EmailDomainKeepsTheDomain) {
    const auto out = text(make(Strategy::Kind::email_domain), "Elodie.Dupont@example.fr");
    ASSERT_TRUE(out);
    EXPECT_EQ(*out, "anon-" + hmac_sha256_hex("key", "Elodie.Dupont@example.fr").substr(0, 12) +
                        "@example.fr");
    EXPECT_NE(text(make(Strategy::Kind::email_domain), "other@example.fr"), out);
    // No domain to keep: the reserved `invalid` domain, still an e-mail.
    const auto bare = text(make(Strategy::Kind::email_domain), "not an email");
    ASSERT_TRUE(bare);
    EXPECT_EQ(bare->substr(0, 5), "anon-");
    EXPECT_EQ(bare->substr(bare->size() - 8), "@invalid");
}

TEST_F(Anonymize, TruncateIp) {
    const auto s = make(Strategy::Kind::truncate_ip);
    EXPECT_EQ(text(s, "192.168.17.42"), "192.168.17.0");
    EXPECT_EQ(text(s, "2001:db8:1234:5678:9abc::1"), "2001:db8:1234::");
    EXPECT_EQ(text(s, "::ffff:203.0.113.9"), "::ffff:203.0.113.0");
    EXPECT_EQ(text(s, "example.fr"), "example.fr");
    EXPECT_EQ(text(s, "10.0.0.1:8080"), "10.0.0.1:8080");
}

TEST_F(Anonymize, StripQuery) {
    const auto s = make(Strategy::Kind::strip_query);
    EXPECT_EQ(text(s, "/api/search?latitude=48.85&longitude=2.35#map"), "/api/search");
    EXPECT_EQ(text(s, "https://x.fr/a#frag"), "https://x.fr/a");
    EXPECT_EQ(text(s, "https://x.fr/a"), "https://x.fr/a");
}

TEST_F(Anonymize, Round) {
    auto s = make(Strategy::Kind::round);
    s.round_digits = 2;
    EXPECT_EQ(text(s, "48.856613"), "48.86");
    EXPECT_EQ(text(s, "-0.001"), "0.00");
    EXPECT_EQ(text(s, "2"), "2.00");
    EXPECT_EQ(text(s, "Paris"), "Paris");
    s.round_digits = 0;
    EXPECT_EQ(text(s, "2.5"), "3");
}

TEST_F(Anonymize, DropKeysFromJsonText) {
    auto s = make(Strategy::Kind::drop_keys);
    s.drop_keys = {"headers.cookie", "body"};
    EXPECT_EQ(text(s, R"({"headers":{"cookie":"x","host":"h"},"body":{"a":1},"q":2})"),
              R"({"headers":{"host":"h"},"q":2})");
    EXPECT_EQ(text(s, "not json"), "not json");
}

TEST_F(Anonymize, DateTruncKeepsTheWritingStyle) {
    auto s = make(Strategy::Kind::date_trunc);
    s.trunc_unit = "month";
    EXPECT_EQ(text(s, "2026-08-14 13:22:05"), "2026-08-01 00:00:00");
    EXPECT_EQ(text(s, "2026-08-14T13:22:05.123+02:00"), "2026-08-01T00:00:00.000+02:00");
    s.trunc_unit = "year";
    EXPECT_EQ(text(s, "2026-08-14"), "2026-01-01");
    EXPECT_EQ(text(s, "2026-08-14T13:22:05Z"), "2026-01-01T00:00:00Z");
    s.trunc_unit = "day";
    EXPECT_EQ(text(s, "2026-08-14 13:22:05"), "2026-08-14 00:00:00");
    EXPECT_EQ(text(s, "yesterday"), "yesterday");
}

TEST_F(Anonymize, JsonFieldsByDottedPath) {
    auto doc = nlohmann::json::parse(
        R"({"user":{"email":"a@b.fr","ip":"192.0.2.7","lat":48.856613},"n":null})");
    anonymize_json(doc, {"user.email", make(Strategy::Kind::email_domain), {}}, m_key, m_tz);
    anonymize_json(doc, {"user.ip", make(Strategy::Kind::truncate_ip), {}}, m_key, m_tz);
    auto round = make(Strategy::Kind::round);
    round.round_digits = 3;
    anonymize_json(doc, {"user.lat", round, {}}, m_key, m_tz);
    anonymize_json(doc, {"user.missing", make(Strategy::Kind::null_value), {}}, m_key, m_tz);
    EXPECT_EQ(doc["user"]["email"].get<std::string>().substr(0, 5), "anon-");
    EXPECT_EQ(doc["user"]["ip"], "192.0.2.0");
    EXPECT_DOUBLE_EQ(doc["user"]["lat"].get<double>(), 48.857);
    EXPECT_FALSE(doc["user"].contains("missing")) << "a missing path is left alone";
    anonymize_json(doc, {"user.ip", make(Strategy::Kind::null_value), {}}, m_key, m_tz);
    EXPECT_TRUE(doc["user"]["ip"].is_null());
}

TEST_F(Anonymize, JsonDropKeysOnAnObjectOrAJsonString) {
    auto s = make(Strategy::Kind::drop_keys);
    s.drop_keys = {"cookie"};
    auto doc = nlohmann::json::parse(R"({"data":{"cookie":"c","ua":"u"},"raw":"{\"cookie\":1}"})");
    anonymize_json(doc, {"data", s, {}}, m_key, m_tz);
    anonymize_json(doc, {"raw", s, {}}, m_key, m_tz);
    EXPECT_EQ(doc["data"], nlohmann::json::parse(R"({"ua":"u"})"));
    EXPECT_EQ(doc["raw"], "{}");
}

} // namespace
} // namespace retentiond
