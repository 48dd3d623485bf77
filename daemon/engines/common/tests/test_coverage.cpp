// The shared classification of coverage: names in French and English, value patterns, JSON
// walked, and names that hold values never shown.
#include "retentiond/coverage.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace retentiond {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(CoverageNames, FrenchAndEnglishSpellings) {
    EXPECT_THAT(classify_name("contact_email"), ElementsAre("e-mail"));
    EXPECT_THAT(classify_name("Courriel"), ElementsAre("e-mail"));
    EXPECT_THAT(classify_name("Téléphone"), ElementsAre("phone"));
    EXPECT_THAT(classify_name("firstName"), ElementsAre("name"));
    EXPECT_THAT(classify_name("prénom"), ElementsAre("name"));
    EXPECT_THAT(classify_name("date_de_naissance"), ElementsAre("birth date"));
    EXPECT_THAT(classify_name("adresse_ip"), ElementsAre("IP address", "address"));
    EXPECT_THAT(classify_name("latitude"), ElementsAre("coordinates"));
    EXPECT_THAT(classify_name("iban"), ElementsAre("IBAN"));
    // Generic words are not personal by themselves.
    EXPECT_THAT(classify_name("name"), IsEmpty());
    EXPECT_THAT(classify_name("description"), IsEmpty());
    EXPECT_THAT(classify_name("template"), IsEmpty());
}

TEST(CoverageValues, Patterns) {
    EXPECT_THAT(classify_value("write to jean.dupont@example.fr today"), ElementsAre("e-mail"));
    EXPECT_THAT(classify_value("+33 6 12 34 56 78"), ElementsAre("phone"));
    EXPECT_THAT(classify_value("01.23.45.67.89"), ElementsAre("phone"));
    EXPECT_THAT(classify_value("from 192.168.10.20"), ElementsAre("IP address"));
    EXPECT_THAT(classify_value("2001:db8::8a2e:370:7334"), ElementsAre("IP address"));
    EXPECT_THAT(classify_value("48.85661, 2.35222"), ElementsAre("coordinates"));
    EXPECT_THAT(classify_value("FR76 3000 6000 0112 3456 7890 189"), ElementsAre("IBAN"));
    // A bad checksum, a time, a version, a count: nothing.
    EXPECT_THAT(classify_value("FR76 3000 6000 0112 3456 7890 188"), IsEmpty());
    EXPECT_THAT(classify_value("10:00:00"), IsEmpty());
    EXPECT_THAT(classify_value("12345"), IsEmpty());
    EXPECT_THAT(classify_value("2024-05-01"), IsEmpty());
}

TEST(CoverageValues, JsonIsWalkedForKeysAndStrings) {
    EXPECT_THAT(classify_value(R"({"body": {"tel": 33612345678, "msg": "a@b.fr"}})"),
                ElementsAre("e-mail", "key: phone"));
    EXPECT_THAT(classify_value(R"([{"ip": "10.0.0.1"}])"),
                ElementsAre("IP address", "key: IP address"));
}

TEST(CoverageValues, TallyNeedsOneValueInTwenty) {
    ValueTally t;
    t.add("a@b.fr");
    for (int i = 0; i < 19; ++i) {
        t.add("nothing");
    }
    EXPECT_THAT(t.reasons(), ElementsAre("values: e-mail 1/20"));
    t.add("nothing");
    EXPECT_THAT(t.reasons(), IsEmpty());
}

TEST(CoverageNames, ANameHoldingAValueIsNeverShown) {
    EXPECT_EQ(safe_name("Email"), "Email");
    EXPECT_EQ(safe_name("jean.dupont@example.fr"), "<e-mail>");
    EXPECT_EQ(safe_path("exports/jean.dupont@example.fr/a.csv"), "exports/<e-mail>/a.csv");
}

TEST(CoverageAcknowledgements, MatchAndStale) {
    std::vector<StoreCoverage> stores(1);
    stores[0].datastore = "db";
    CoverageFinding f;
    f.datastore = "db";
    f.table = "public.t";
    f.column = "email";
    stores[0].scan.findings.push_back(f);
    CoverageIgnore used{"db", "t", "email", "", "", "why", {}};
    CoverageIgnore stale{"db", "gone", "", "", "", "old", {}};
    CoverageIgnore other_store{"elsewhere", "t", "", "", "", "x", {}};
    const auto out = apply_acknowledgements(stores, {used, stale, other_store}, false);
    EXPECT_EQ(stores[0].scan.findings[0].acknowledged, "why");
    ASSERT_EQ(out.size(), 1u); // the other store was not scanned: not stale
    EXPECT_EQ(out[0].what, "db: table gone");
}

} // namespace
} // namespace retentiond
