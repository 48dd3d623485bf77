#include "pg_copy.hpp"

#include <pqxx/stream_from>

#include <stdexcept>

namespace retentiond::pg {

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

// The escape at line[i] (just after a backslash), appended to `out`; returns the index after it.
// As PostgreSQL's COPY FROM reads them: \b \f \n \r \t \v, \ and one to three octal digits, \x
// and one or two hex digits, and any other character standing for itself.
std::size_t unescape(std::string_view line, std::size_t i, std::string& out) {
    const char c = line[i];
    constexpr std::string_view k_letters = "bfnrtv";
    constexpr std::string_view k_controls = "\b\f\n\r\t\v";
    if (const auto at = k_letters.find(c); at != std::string_view::npos) {
        out += k_controls[at];
        return i + 1;
    }
    if (c >= '0' && c <= '7') {
        int value = 0;
        std::size_t j = i;
        for (; j < line.size() && j < i + 3 && line[j] >= '0' && line[j] <= '7'; ++j) {
            value = value * 8 + (line[j] - '0');
        }
        out += static_cast<char>(value & 0xFF);
        return j;
    }
    if (c == 'x' && i + 1 < line.size() && hex_value(line[i + 1]) >= 0) {
        int value = hex_value(line[i + 1]);
        std::size_t j = i + 2;
        if (j < line.size() && hex_value(line[j]) >= 0) {
            value = value * 16 + hex_value(line[j++]);
        }
        out += static_cast<char>(value);
        return j;
    }
    out += c;
    return i + 1;
}

} // namespace

void decode_copy_line(std::string_view line, CopyRow& row) {
    std::size_t n = 0;
    std::size_t i = 0;
    while (true) {
        if (row.fields.size() <= n) {
            row.fields.emplace_back();
            row.null.push_back(0);
        }
        std::string& field = row.fields[n];
        field.clear();
        const std::size_t start = i;
        while (i < line.size() && line[i] != '\t') {
            if (line[i] != '\\') {
                const std::size_t run = line.find_first_of("\t\\", i);
                const std::size_t end = run == std::string_view::npos ? line.size() : run;
                field.append(line.substr(i, end - i));
                i = end;
            } else if (++i == line.size()) {
                throw std::runtime_error("COPY line ends inside an escape");
            } else {
                i = unescape(line, i, field);
            }
        }
        row.null[n] = static_cast<char>(line.substr(start, i - start) == "\\N");
        if (row.null[n] != 0) {
            field.clear();
        }
        ++n;
        if (i == line.size()) {
            break;
        }
        ++i; // the tab
    }
    row.fields.resize(n);
    row.null.resize(n);
}

std::int64_t copy_rows(pqxx::transaction_base& tx, const std::string& select,
                       const std::function<void(const CopyRow&)>& on_row) {
    // libpqxx 6.4 writes its "table" argument into `COPY <table> TO STDOUT` as given, so a
    // parenthesized query is COPY's query form (tests/test_pg_copy.cpp reads rows through it).
    pqxx::stream_from stream(tx, "(" + select + ")");
    std::string line;
    CopyRow row;
    std::int64_t rows = 0;
    while (stream.get_raw_line(line)) {
        if (!line.empty() && line.back() == '\n') {
            line.pop_back();
        }
        decode_copy_line(line, row);
        on_row(row);
        ++rows;
    }
    stream.complete();
    return rows;
}

} // namespace retentiond::pg
