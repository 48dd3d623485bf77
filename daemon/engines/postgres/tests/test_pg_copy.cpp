// Rows read with COPY ... TO STDOUT (pg_copy.cpp): the escapes of COPY's text format decoded, and
// every value read through the stream equal to the same value read by a plain query, on a real
// server (the whole-partition digests read keys this way).
#include "pg_copy.hpp"
#include "support/pg_cluster.hpp"

#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <unistd.h>

namespace retentiond::test {
namespace {

using pg::CopyRow;
using pg::decode_copy_line;

CopyRow decoded(std::string_view line) {
    CopyRow row;
    decode_copy_line(line, row);
    return row;
}

TEST(CopyLine, TabsSeparateFieldsAndBackslashesEscape) {
    const auto row = decoded("a\\tb\tc\\\\d\t\\N\t\te\\nf\\r\\b\\f\\v");
    ASSERT_EQ(row.fields.size(), 5U);
    EXPECT_EQ(row.fields[0], "a\tb");
    EXPECT_EQ(row.fields[1], "c\\d");
    EXPECT_EQ(row.fields[2], "");
    EXPECT_EQ(row.null[2], 1);
    EXPECT_EQ(row.fields[3], ""); // empty, not NULL
    EXPECT_EQ(row.null[3], 0);
    EXPECT_EQ(row.fields[4], "e\nf\r\b\f\v");
}

TEST(CopyLine, OctalAndHexEscapesAndAnyOtherCharacterForItself) {
    const auto row = decoded("\\101\\1012\\x41\\x4a1\\q\\\\N");
    ASSERT_EQ(row.fields.size(), 1U);
    EXPECT_EQ(row.fields[0], "AA2AJ1q\\N"); // "\\N" inside a field is the text \N, not NULL
    EXPECT_EQ(row.null[0], 0);
}

TEST(CopyLine, ARowReusesTheFieldsOfTheRowBefore) {
    CopyRow row;
    decode_copy_line("one\ttwo\tthree", row);
    decode_copy_line("\\N", row);
    ASSERT_EQ(row.fields.size(), 1U);
    EXPECT_EQ(row.null[0], 1);
    decode_copy_line("x\ty", row);
    ASSERT_EQ(row.fields.size(), 2U);
    EXPECT_EQ(row.fields[1], "y");
    EXPECT_EQ(row.null[0], 0);
}

TEST(CopyLine, ALineEndingInsideAnEscapeIsRefused) {
    EXPECT_THROW(decoded("abc\\"), std::runtime_error);
}

// Every value as a plain query gives it (::text) and as the COPY stream gives it, row by row.
TEST(CopyRows, TheStreamGivesWhatAPlainQueryGives) {
    const auto dsn = PgCluster::shared().create_database("copy_" + std::to_string(::getpid()));
    pg_exec(dsn, "CREATE TABLE t (n int, s text, ts timestamptz, j jsonb, a text[], b bytea);"
                 "INSERT INTO t VALUES (1, E'tab\\there', '2026-03-29 01:30:00+00', "
                 "'{\"k\": \"v\\\\\\\\w\"}', ARRAY['x y', 'q\"z', NULL], '\\x00ff5c'),"
                 "(2, E'new\\nline\\rand\\\\back', NULL, NULL, NULL, NULL),"
                 "(3, '\\N', '-infinity', '[]', '{}', ''),"
                 "(4, '', '1999-12-31 23:59:59.999999+05:30', 'null', ARRAY[''], NULL),"
                 "(5, 'été 日本 \x01', 'infinity', '\"é\"', ARRAY[E'\\t'], '\\x09');");
    const std::string columns = "n::text, s, ts::text, j::text, a::text, b::text";
    pqxx::connection conn(dsn);
    pqxx::work tx(conn);
    tx.exec0("SET LOCAL TimeZone = 'Europe/Paris'");
    const auto plain = tx.exec("SELECT " + columns + " FROM t ORDER BY n");
    std::vector<CopyRow> streamed;
    const auto rows = pg::copy_rows(tx, "SELECT " + columns + " FROM t ORDER BY n",
                                    [&](const CopyRow& row) { streamed.push_back(row); });
    ASSERT_EQ(rows, 5);
    ASSERT_EQ(streamed.size(), plain.size());
    for (std::size_t r = 0; r < plain.size(); ++r) {
        ASSERT_EQ(streamed[r].fields.size(), plain[r].size());
        for (std::size_t c = 0; c < plain[r].size(); ++c) {
            const auto& field = plain[r][static_cast<int>(c)];
            EXPECT_EQ(streamed[r].null[c] != 0, field.is_null()) << "row " << r << " column " << c;
            EXPECT_EQ(streamed[r].fields[c], field.is_null() ? "" : field.c_str())
                << "row " << r << " column " << c;
        }
    }
    // The transaction goes on after the stream: the rows were all read.
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM t")[0].as<int>(), 5);
}

} // namespace
} // namespace retentiond::test
