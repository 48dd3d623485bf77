#pragma once

#include "grow_buffer.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond::csv {

// A record that does not parse. line is the 1-based physical line where the record starts; reason
// never quotes the data.
class ParseError : public std::runtime_error {
public:
    ParseError(std::uint64_t line, std::string reason)
        : std::runtime_error(std::to_string(line) + ": " + reason), m_line(line),
          m_reason(std::move(reason)) {}
    std::uint64_t line() const { return m_line; }
    const std::string& reason() const { return m_reason; }

private:
    std::uint64_t m_line;
    std::string m_reason;
};

// One field of a record: byte offsets into Record::raw(), quotes included.
struct FieldSpan {
    std::size_t begin = 0;
    std::size_t end = 0;
    bool quoted = false;
    bool escaped = false; // holds doubled quotes: decoding must copy
};

// One record (RFC 4180), with views into the reader's buffer: valid until the next call to
// Reader::next(). raw() is the exact input bytes, line ending included, so a kept record is copied
// byte for byte.
class Record {
public:
    std::string_view raw() const { return m_raw; }
    std::size_t size() const { return m_fields.size(); }
    const FieldSpan& span(std::size_t i) const { return m_fields[i]; }
    // The field's input bytes, quotes included.
    std::string_view raw_field(std::size_t i) const {
        return m_raw.substr(m_fields[i].begin, m_fields[i].end - m_fields[i].begin);
    }
    // The decoded value; scratch holds it when decoding needs a copy (doubled quotes).
    std::string_view value(std::size_t i, std::string& scratch) const;
    std::string value(std::size_t i) const;
    // "\n", "\r\n" or "" (last record without a line ending).
    std::string_view line_ending() const { return m_raw.substr(m_body_end); }
    std::uint64_t line() const { return m_line; }
    // An empty line between records: kept as is, not a record.
    bool blank() const { return m_blank; }

private:
    friend class Reader;
    std::string_view m_raw;
    std::vector<FieldSpan> m_fields;
    std::size_t m_body_end = 0;
    std::uint64_t m_line = 0;
    bool m_blank = false;
};

// Reads up to n bytes into buf; returns 0 at end of input; throws on error.
using ReadFn = std::function<std::size_t(char* buf, std::size_t n)>;

// A streaming RFC 4180 reader: quoted fields with delimiters, doubled quotes and line breaks; CRLF
// or LF; an optional UTF-8 BOM (kept in the header's raw bytes, not in its first field). Memory is
// one block plus the longest record, which is capped so that an unterminated quote in a
// multi-gigabyte file fails instead of reading the whole file in.
class Reader {
public:
    static constexpr std::size_t k_block = std::size_t{1} << 20;
    // The maximum record size (docs/policy-format-extensions.md): a longer record (CSV) or line
    // (JSON Lines) makes its file unparseable, named file:line (exit 65), instead of growing the
    // buffer with it (a 50 MB field took 124 MB of memory).
    static constexpr std::size_t k_max_record = std::size_t{16} << 20;

    // delimiter 0 = detect from the header: ';' when it has more semicolons than commas.
    Reader(ReadFn read, char delimiter = 0, std::size_t block = k_block);
    // Throws ParseError.
    bool next(Record& out);
    // Like next(), but only finds where the record ends (quote parity, memchr): out has raw(),
    // line(), line_ending() and blank(), no fields, and field-level errors (a stray quote, bytes
    // after a closing quote) go unnoticed. For the second pass over a file a full pass has
    // already checked. The header always gets a full parse.
    bool next_raw(Record& out);
    char delimiter() const { return m_delim; }
    bool has_bom() const { return m_bom; }

private:
    enum class Parse { complete, need_more };
    Parse parse(Record& out);
    Parse parse_raw(Record& out);
    bool fill();
    void detect_delimiter();
    void classify();

    ReadFn m_read;
    files_detail::GrowBuffer m_buf;
    std::size_t m_pos = 0;
    std::size_t m_len = 0;
    bool m_eof = false;
    bool m_first = true;
    bool m_bom = false;
    char m_delim;
    std::uint64_t m_line = 1;
    // One bit per byte of m_buf[0, m_len): field-ending bytes (see classify_bytes in csv.cpp),
    // computed once per fill() for parse().
    std::vector<std::uint64_t> m_any;
    std::vector<std::uint64_t> m_quote_lf;
    bool m_classified = false;
};

// A reader over a file descriptor (read(2), retried on EINTR; errors throw std::system_error).
ReadFn fd_reader(int fd);
// A reader over bytes in memory (tests).
ReadFn string_reader(std::string_view data);

} // namespace retentiond::csv
