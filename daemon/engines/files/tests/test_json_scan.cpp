// The JSON Lines scan that checks a line and reads a rule's fields without a document: it must
// accept and refuse exactly what nlohmann::json::parse does, and find what a parsed document's
// lookup finds (duplicate keys: the last wins).
#include "json_scan.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>

namespace retentiond::files_detail {
namespace {

const std::vector<std::vector<std::string>> k_paths = {{"at"}, {"meta", "hold"}, {"id"}};

JsonScan reference(std::string_view text) {
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) {
        return JsonScan::invalid;
    }
    return j.is_object() ? JsonScan::object : JsonScan::not_object;
}

JsonScan scan(std::string_view text) {
    std::vector<std::optional<std::string_view>> found;
    return scan_json(text, k_paths, found);
}

TEST(JsonScan, AcceptsAndRefusesAsTheParserDoes) {
    const std::vector<std::string> cases = {R"({"id":1})",
                                            R"( {"id" : "a" , "at":[1,2,{"x":null}]} )",
                                            "{}",
                                            "[]",
                                            "1",
                                            "\"s\"",
                                            "\xEF\xBB\xBF{\"id\":1}",
                                            "\xEF\xBB{}",
                                            "{\"id\":1}x",
                                            "{\"id\":1,}",
                                            "{,}",
                                            "[1,]",
                                            "{\"id\" 1}",
                                            "{id:1}",
                                            "{\"a\":tru}",
                                            "{\"a\":true}",
                                            "{\"a\":nul}",
                                            "{\"a\":-}",
                                            "{\"a\":01}",
                                            "{\"a\":1.}",
                                            "{\"a\":.5}",
                                            "{\"a\":1e}",
                                            "{\"a\":1e+5}",
                                            "{\"a\":-0.0E-3}",
                                            "{\"a\":1e400}",
                                            "{\"a\":1e-400}",
                                            "{\"a\":" + std::string(400, '9') + "}",
                                            "{\"a\":" + std::string(18, '9') + "}",
                                            "{\"a\":-" + std::string(25, '9') + "}",
                                            "{\"a\":\"\\u00e9\\n\\\"\"}",
                                            "{\"a\":\"\\x\"}",
                                            "{\"a\":\"\\u12\"}",
                                            "{\"a\":\"\\ud83d\\ude00\"}",
                                            "{\"a\":\"\\ud83d\"}",
                                            "{\"a\":\"\\ude00\"}",
                                            "{\"a\":\"\\ud83dx\"}",
                                            "{\"a\":\"\t\"}",
                                            "{\"a\":\"\x7f\"}",
                                            "{\"a\":\"é\"}",
                                            "{\"a\":\"\xC3\"}",
                                            "{\"a\":\"\xC0\x80\"}",
                                            "{\"a\":\"\xE0\x80\x80\"}",
                                            "{\"a\":\"\xED\xA0\x80\"}",
                                            "{\"a\":\"\xF4\x90\x80\x80\"}",
                                            "{\"a\":\"\xF0\x9F\x98\x80\"}",
                                            "{\"a\":\"\xFF\"}",
                                            std::string("{\"a\":\"\0\"}", 9),
                                            std::string("{\"a\":1}\0", 8),
                                            "{\"a\":[[[[]]]]}",
                                            "{\"a\":[[[[]]]}",
                                            "{\"a\":{\"b\":{}}}}",
                                            "",
                                            "   ",
                                            "{\"a\"}",
                                            "{\"a\":}",
                                            "[1 2]",
                                            "{\"a\":1 \"b\":2}",
                                            "\n{\"a\":1}\r\n"};
    for (const auto& c : cases) {
        EXPECT_EQ(scan(c), reference(c)) << c;
    }
}

// Random lines built from JSON's own pieces, then mutated byte by byte: the scan and the parser
// agree on every one.
TEST(JsonScan, AgreesWithTheParserOnRandomLines) {
    std::mt19937_64 rng(22);
    const std::vector<std::string> pieces = {"{",
                                             "}",
                                             "[",
                                             "]",
                                             ",",
                                             ":",
                                             "\"id\"",
                                             "\"at\"",
                                             "\"meta\"",
                                             "\"hold\"",
                                             "\"x\"",
                                             "1",
                                             "-2.5e3",
                                             "0",
                                             "true",
                                             "false",
                                             "null",
                                             "\"\\u00e9\"",
                                             "\"\\ud83d\\ude00\"",
                                             "\"é\"",
                                             " ",
                                             "\"2020-01-01 00:00:00\"",
                                             "\"\\\\\"",
                                             "1e999",
                                             "\"\\/\""};
    const std::string bytes = "{}[],:\"\\ 0123456789eE+-.tfnulr\xC3\xA9\xFF\x01";
    int objects = 0;
    for (int i = 0; i < 200000; ++i) {
        std::string line;
        const auto n = 1 + rng() % 14;
        for (std::uint64_t k = 0; k < n; ++k) {
            line += pieces[rng() % pieces.size()];
        }
        if (rng() % 2 == 0) {
            line = "{\"id\":" + line + "}";
        }
        for (auto m = rng() % 3; m > 0 && !line.empty(); --m) {
            line[rng() % line.size()] = bytes[rng() % bytes.size()];
        }
        const auto want = reference(line);
        objects += want == JsonScan::object ? 1 : 0;
        ASSERT_EQ(scan(line), want) << line;
    }
    EXPECT_GT(objects, 1000) << "the generator reaches valid objects";
}

// The raw value at each path, as a parsed document's lookup sees it.
TEST(JsonScan, FindsTheFieldsAsADocumentDoes) {
    const std::string line =
        R"({"id":"k\"1","meta":{"hold":true,"x":[{"hold":1}]},"at":{"deep":1},)"
        R"("at":"2020-01-01","meta":{"other":2},"n":{"id":5}})";
    std::vector<std::optional<std::string_view>> found;
    ASSERT_EQ(scan_json(line, k_paths, found), JsonScan::object);
    ASSERT_EQ(found.size(), 3U);
    EXPECT_EQ(found[0], std::optional<std::string_view>("\"2020-01-01\"")) << "the last at";
    EXPECT_FALSE(found[1]) << "the second meta replaced the first, and has no hold";
    EXPECT_EQ(found[2], std::optional<std::string_view>(R"("k\"1")"));

    const std::string escaped = R"({"\u0069d":[1, {"a":2}],"me\u0074a":{"ho\u006cd":"oui"}})";
    ASSERT_EQ(scan_json(escaped, k_paths, found), JsonScan::object);
    EXPECT_FALSE(found[0]);
    EXPECT_EQ(found[1], std::optional<std::string_view>("\"oui\""));
    EXPECT_EQ(found[2], std::optional<std::string_view>("[1, {\"a\":2}]"));
}

// A line of a million nested arrays: no recursion, no stack overflow.
TEST(JsonScan, DeepNestingNeedsNoRecursion) {
    const std::string deep =
        "{\"id\":" + std::string(1000000, '[') + std::string(1000000, ']') + "}";
    std::vector<std::optional<std::string_view>> found;
    EXPECT_EQ(scan_json(deep, k_paths, found), JsonScan::object);
    EXPECT_EQ(found[2]->size(), 2000000U);
}

} // namespace
} // namespace retentiond::files_detail
