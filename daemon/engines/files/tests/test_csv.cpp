// The streaming RFC 4180 reader: hostile fixtures, byte-exact round trips, block boundaries.
#include "csv.hpp"
#include "retentiond/escape.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace retentiond::csv {
namespace {

std::string fixture(const std::string& name) {
    std::ifstream in(std::string(RETENTIOND_SOURCE_DIR) + "/tests/fixtures/files/" + name,
                     std::ios::binary);
    EXPECT_TRUE(in) << name;
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct Parsed {
    std::vector<std::vector<std::string>> rows; // blank lines as empty rows
    std::vector<std::uint64_t> lines;
    std::string concatenated;
};

Parsed parse_all(std::string_view data, std::size_t block = Reader::k_block, char delim = 0) {
    Reader reader(string_reader(data), delim, block);
    Record rec;
    Parsed p;
    while (reader.next(rec)) {
        std::vector<std::string> row;
        for (std::size_t i = 0; i < rec.size(); ++i) {
            row.push_back(rec.value(i));
        }
        p.rows.push_back(row);
        p.lines.push_back(rec.line());
        p.concatenated += rec.raw();
    }
    return p;
}

TEST(Csv, HostileTallyExportRoundTripsByteForByte) {
    const auto data = fixture("tally_bom_crlf.csv");
    const auto p = parse_all(data);
    EXPECT_EQ(p.concatenated, data);
    ASSERT_EQ(p.rows.size(), 7U); // header, 5 records, 1 blank line
    EXPECT_EQ(p.rows[0][0], "Submission ID") << "the BOM is not part of the first name";
    EXPECT_EQ(p.rows[0][3], "Prénom");
    EXPECT_EQ(p.rows[1][5], "Artisan, plombier");
    EXPECT_EQ(p.rows[2][3], "Zoë \"Zo\"");
    EXPECT_EQ(p.rows[2][5], "Ligne 1\nLigne 2 avec \"guillemets\"");
    EXPECT_TRUE(p.rows[3].empty()) << "blank line";
    EXPECT_EQ(p.rows[4][5], "Dit : \"c'est, bien\"\r\nsur deux lignes");
    EXPECT_EQ(p.rows[4][6], "yes");
    EXPECT_EQ(p.rows[5][2], "");
    EXPECT_EQ(p.rows[6][5], "fin sans retour à la ligne");
    EXPECT_EQ(p.lines, (std::vector<std::uint64_t>{1, 2, 3, 5, 6, 8, 9}));
}

TEST(Csv, EveryBlockSizeGivesTheSameRecords) {
    const auto data = fixture("tally_bom_crlf.csv");
    const auto reference = parse_all(data);
    for (std::size_t block = 16; block < 80; ++block) {
        const auto p = parse_all(data, block);
        EXPECT_EQ(p.rows, reference.rows) << "block " << block;
        EXPECT_EQ(p.concatenated, data) << "block " << block;
        EXPECT_EQ(p.lines, reference.lines) << "block " << block;
    }
}

struct Boundaries {
    std::vector<std::string> raw;
    std::vector<std::string> endings;
    std::vector<std::uint64_t> lines;
    std::vector<bool> blank;
    bool operator==(const Boundaries&) const = default;
};

// Records through next() (mask bit 0) or next_raw() (bit 1), chosen by record index.
Boundaries boundaries(std::string_view data, std::size_t block, std::uint64_t raw_mask) {
    Reader reader(string_reader(data), 0, block);
    Record rec;
    Boundaries b;
    for (std::size_t i = 0;; ++i) {
        const bool raw = (raw_mask >> (i % 64) & 1U) != 0;
        if (!(raw ? reader.next_raw(rec) : reader.next(rec))) {
            return b;
        }
        b.raw.emplace_back(rec.raw());
        b.endings.emplace_back(rec.line_ending());
        b.lines.push_back(rec.line());
        b.blank.push_back(rec.blank());
    }
}

TEST(Csv, BoundaryOnlyReadsFindTheSameRecordsAsFullParses) {
    const std::vector<std::string> inputs = {
        fixture("tally_bom_crlf.csv"),
        fixture("semicolon.csv"),
        "a,b\n\"x\ny\",1\r\n\r\n\n\"\"\"\",\"\"\r\nlone\rcr,2\r\r\n\"q\"\"\n\"\"\",3\n"
        "\"\n\n\n\",4\nlast,\r",
        "h\nx\n\r",
        "h\nx\r\n\"a\r\nb\"",
    };
    for (const auto& data : inputs) {
        const auto reference = boundaries(data, Reader::k_block, 0);
        std::string joined;
        for (const auto& r : reference.raw) {
            joined += r;
        }
        ASSERT_EQ(joined, data);
        for (std::size_t block = 16; block < 72; block += 5) {
            for (const std::uint64_t mask :
                 {~std::uint64_t{0}, std::uint64_t{0xAAAAAAAAAAAAAAAA}, std::uint64_t{0x5555}}) {
                EXPECT_EQ(boundaries(data, block, mask), reference)
                    << "block " << block << " mask " << mask;
            }
        }
    }
}

TEST(Csv, BoundaryOnlyReadStillRefusesAnUnterminatedQuote) {
    Reader reader(string_reader("a,b\n1,2\n\"open,3\nmore\n"), 0, 16);
    Record rec;
    ASSERT_TRUE(reader.next_raw(rec));
    ASSERT_TRUE(reader.next_raw(rec));
    try {
        reader.next_raw(rec);
        FAIL() << "an unterminated quote must throw";
    } catch (const ParseError& e) {
        EXPECT_EQ(e.line(), 3U);
    }
}

// The field scanners look at 16 bytes at a time: a delimiter, quote or line break must be
// found at every offset of a long field, and at the end of the buffer.
TEST(Csv, SpecialBytesAtEveryOffsetOfLongFields) {
    for (std::size_t at = 0; at < 40; ++at) {
        const std::string pad(at, 'x');
        const std::string data = "h1,h2\n" + pad + "," + pad + "z\n\"" + pad + "\"\"" + pad + "\n" +
                                 pad + "\"," + pad + "\r\n" + pad + "\r" + pad + ",q";
        const auto p = parse_all(data, 16);
        const auto q = parse_all(data);
        ASSERT_EQ(p.rows, q.rows) << at;
        ASSERT_EQ(p.lines, q.lines) << at;
        ASSERT_EQ(q.rows.size(), 4U) << at;
        EXPECT_EQ(q.rows[1], (std::vector<std::string>{pad, pad + "z"})) << at;
        EXPECT_EQ(q.rows[2], (std::vector<std::string>{pad + "\"" + pad + "\n" + pad, pad})) << at;
        EXPECT_EQ(q.rows[3], (std::vector<std::string>{pad + "\r" + pad, "q"})) << at;
        EXPECT_EQ(q.lines, (std::vector<std::uint64_t>{1, 2, 3, 5})) << at;
        EXPECT_EQ(q.concatenated, data);
        EXPECT_THROW(parse_all("h\n" + pad + "\"" + pad + "\n"), ParseError) << at;
    }
}

TEST(Csv, DetectsTheSemicolonFromTheHeader) {
    const auto data = fixture("semicolon.csv");
    Reader reader(string_reader(data));
    Record rec;
    ASSERT_TRUE(reader.next(rec));
    EXPECT_EQ(reader.delimiter(), ';');
    ASSERT_TRUE(reader.next(rec));
    EXPECT_EQ(rec.value(2), "Durand; Paul");
    EXPECT_EQ(rec.line_ending(), "\n");
    EXPECT_EQ(parse_all(data).concatenated, data);
}

TEST(Csv, AnExplicitDelimiterWinsOverDetection) {
    const std::string data = "a;b,c\n1;2,3\n";
    EXPECT_EQ(parse_all(data, Reader::k_block, ',').rows[1],
              (std::vector<std::string>{"1;2", "3"}));
    EXPECT_EQ(parse_all(data, Reader::k_block, ';').rows[1],
              (std::vector<std::string>{"1", "2,3"}));
}

TEST(Csv, UnterminatedQuoteNamesTheLineWhereTheRecordStarts) {
    const auto data = fixture("unterminated.csv");
    Reader reader(string_reader(data), 0, 16);
    Record rec;
    ASSERT_TRUE(reader.next(rec));
    ASSERT_TRUE(reader.next(rec));
    try {
        reader.next(rec);
        FAIL() << "an unterminated quote must not parse";
    } catch (const ParseError& e) {
        EXPECT_EQ(e.line(), 3U);
        EXPECT_EQ(e.reason(), "unterminated quoted field");
        EXPECT_EQ(std::string(e.what()).find("example"), std::string::npos) << "no content";
    }
}

TEST(Csv, StrayQuotesAreErrorsNotGuesses) {
    EXPECT_THROW(parse_all("a,b\nx\"y,2\n"), ParseError);
    EXPECT_THROW(parse_all("a,b\n\"x\"y,2\n"), ParseError);
}

TEST(Csv, LastRecordWithoutLineEndingAndEmptyLastField) {
    const auto p = parse_all("a,b\n1,");
    ASSERT_EQ(p.rows.size(), 2U);
    EXPECT_EQ(p.rows[1], (std::vector<std::string>{"1", ""}));
    const auto q = parse_all("a,b\r\n\"1\",\"\"");
    EXPECT_EQ(q.rows[1], (std::vector<std::string>{"1", ""}));
}

TEST(Csv, ALoneCarriageReturnIsData) {
    const auto p = parse_all("a,b\nx\ry,2\n");
    EXPECT_EQ(p.rows[1][0], "x\ry");
}

TEST(Csv, OversizedRecordFailsInsteadOfReadingTheWholeFile) {
    // An unterminated quote early in a huge file: the reader gives up at the record cap.
    std::size_t served = 0;
    const std::size_t total = Reader::k_max_record + (std::size_t{4} << 20);
    ReadFn endless = [&](char* buf, std::size_t n) -> std::size_t {
        if (served >= total) {
            return 0;
        }
        const std::size_t take = std::min(n, total - served);
        if (served == 0) {
            std::string head = "a\n\"";
            std::memcpy(buf, head.data(), head.size());
            std::memset(buf + head.size(), 'x', take - head.size());
        } else {
            std::memset(buf, 'x', take);
        }
        served += take;
        return take;
    };
    Reader reader(endless);
    Record rec;
    ASSERT_TRUE(reader.next(rec));
    EXPECT_THROW(reader.next(rec), ParseError);
    EXPECT_LT(served, total);
}

TEST(Csv, AppendFieldQuotesOnlyWhenNeeded) {
    std::string out;
    append_field(out, "plain", ',');
    EXPECT_EQ(out, "plain");
    out.clear();
    append_field(out, "a,b", ',');
    EXPECT_EQ(out, "\"a,b\"");
    out.clear();
    append_field(out, "a,b", ';');
    EXPECT_EQ(out, "a,b");
    out.clear();
    append_field(out, "say \"hi\"\n", ';');
    EXPECT_EQ(out, "\"say \"\"hi\"\"\n\"");
    out.clear();
    append_field(out, "", ',');
    EXPECT_EQ(out, "");
}

} // namespace
} // namespace retentiond::csv
