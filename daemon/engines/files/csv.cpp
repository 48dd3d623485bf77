#include "csv.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <unistd.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RETENTIOND_CSV_AVX2 1
#endif

namespace retentiond::csv {

namespace {

// Sets, for each byte of b[0, n), bit i of any (and of quote_lf) when b[i] ends an unquoted field
// (the delimiter, a quote, LF or CR) or a stretch of a quoted one (a quote or LF). Sixty-four bytes
// a time with SSE2, so that finding where a field ends is a shift and a count of trailing zeros:
// fields are mostly short, too short for a per-field vector search to pay off.
void classify_bytes(const char* b, std::size_t n, char delim, std::uint64_t* any,
                    std::uint64_t* quote_lf) {
    std::size_t i = 0;
#if defined(__SSE2__)
    const __m128i vd = _mm_set1_epi8(delim);
    const __m128i vq = _mm_set1_epi8('"');
    const __m128i vl = _mm_set1_epi8('\n');
    const __m128i vr = _mm_set1_epi8('\r');
    for (; i + 64 <= n; i += 64) {
        std::uint64_t a = 0;
        std::uint64_t ql = 0;
        for (int k = 0; k < 4; ++k) {
            const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i + 16 * k));
            const __m128i q = _mm_or_si128(_mm_cmpeq_epi8(x, vq), _mm_cmpeq_epi8(x, vl));
            const __m128i o =
                _mm_or_si128(q, _mm_or_si128(_mm_cmpeq_epi8(x, vd), _mm_cmpeq_epi8(x, vr)));
            a |= std::uint64_t{static_cast<std::uint16_t>(_mm_movemask_epi8(o))} << (16 * k);
            ql |= std::uint64_t{static_cast<std::uint16_t>(_mm_movemask_epi8(q))} << (16 * k);
        }
        any[i / 64] = a;
        quote_lf[i / 64] = ql;
    }
#endif
    if (i < n) {
        std::uint64_t a = 0;
        std::uint64_t ql = 0;
        for (std::size_t k = 0; i + k < n; ++k) {
            const char c = b[i + k];
            const bool q = c == '"' || c == '\n';
            ql |= std::uint64_t{q ? 1U : 0U} << k;
            a |= std::uint64_t{q || c == delim || c == '\r' ? 1U : 0U} << k;
        }
        any[i / 64] = a;
        quote_lf[i / 64] = ql;
    }
}

#if defined(RETENTIOND_CSV_AVX2)
// classify_bytes with 32-byte compares, for the CPUs that have them (checked at run time: the
// build targets baseline x86-64).
__attribute__((target("avx2"))) void classify_bytes_avx2(const char* b, std::size_t n, char delim,
                                                         std::uint64_t* any,
                                                         std::uint64_t* quote_lf) {
    const __m256i vd = _mm256_set1_epi8(delim);
    const __m256i vq = _mm256_set1_epi8('"');
    const __m256i vl = _mm256_set1_epi8('\n');
    const __m256i vr = _mm256_set1_epi8('\r');
    std::size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i + 32));
        const __m256i q0 = _mm256_or_si256(_mm256_cmpeq_epi8(x0, vq), _mm256_cmpeq_epi8(x0, vl));
        const __m256i q1 = _mm256_or_si256(_mm256_cmpeq_epi8(x1, vq), _mm256_cmpeq_epi8(x1, vl));
        const __m256i o0 = _mm256_or_si256(
            q0, _mm256_or_si256(_mm256_cmpeq_epi8(x0, vd), _mm256_cmpeq_epi8(x0, vr)));
        const __m256i o1 = _mm256_or_si256(
            q1, _mm256_or_si256(_mm256_cmpeq_epi8(x1, vd), _mm256_cmpeq_epi8(x1, vr)));
        any[i / 64] = std::uint64_t{static_cast<std::uint32_t>(_mm256_movemask_epi8(o0))} |
                      std::uint64_t{static_cast<std::uint32_t>(_mm256_movemask_epi8(o1))} << 32;
        quote_lf[i / 64] = std::uint64_t{static_cast<std::uint32_t>(_mm256_movemask_epi8(q0))} |
                           std::uint64_t{static_cast<std::uint32_t>(_mm256_movemask_epi8(q1))}
                               << 32;
    }
    if (i < n) {
        classify_bytes(b + i, n - i, delim, any + i / 64, quote_lf + i / 64);
    }
}
#endif

void classify_all(const char* b, std::size_t n, char delim, std::uint64_t* any,
                  std::uint64_t* quote_lf) {
#if defined(RETENTIOND_CSV_AVX2)
    static const bool avx2 = __builtin_cpu_supports("avx2") != 0;
    if (avx2) {
        classify_bytes_avx2(b, n, delim, any, quote_lf);
        return;
    }
#endif
    classify_bytes(b, n, delim, any, quote_lf);
}

// The first set bit of bits at or after from, or end when there is none before end.
std::size_t next_bit(const std::uint64_t* bits, std::size_t from, std::size_t end) {
    std::size_t w = from / 64;
    std::uint64_t word = bits[w] & (~std::uint64_t{0} << (from % 64));
    for (;;) {
        if (word != 0) {
            return std::min(end, w * 64 + static_cast<std::size_t>(__builtin_ctzll(word)));
        }
        if ((w + 1) * 64 >= end) {
            return end;
        }
        word = bits[++w];
    }
}

// Marks a record that needs more bytes than the buffer holds.
constexpr std::size_t k_need_more = ~std::size_t{0};

// The fields of one record at the start of b[0, n), for Reader::parse(): field by field, with
// the classified bytes (any: field-ending bytes, quote_lf: quotes and line feeds).
struct FieldScanner {
    const char* b;
    std::size_t n;
    char d;
    bool eof;
    std::uint64_t line;
    const std::uint64_t* any;
    const std::uint64_t* quote_lf;
    std::size_t base;         // b's index in the buffer
    std::size_t len;          // the buffer's bytes
    std::uint64_t breaks = 0; // inside quoted fields

    // Where the next byte of a kind is, as an index from b (n when none is left). The next set
    // bit is most often in the same word: that case is inline.
    std::size_t next_in(const std::uint64_t* bits, std::size_t from) const {
        const std::size_t a = base + from;
        const std::uint64_t word = bits[a / 64] >> (a % 64);
        if (word != 0) {
            return std::min(len, a + static_cast<std::size_t>(__builtin_ctzll(word))) - base;
        }
        return next_bit(bits, a, len) - base;
    }

    // The quoted field opening at b[i]: the index after its closing quote, or k_need_more.
    std::size_t quoted_end(std::size_t i, FieldSpan& f) {
        f.quoted = true;
        std::size_t j = i + 1;
        for (;;) {
            const std::size_t k = j < n ? next_in(quote_lf, j) : n;
            if (k == n) {
                if (!eof) {
                    return k_need_more;
                }
                throw ParseError(line, "unterminated quoted field");
            }
            if (b[k] == '\n') {
                ++breaks; // for the line numbers of later records
                j = k + 1;
                continue;
            }
            if (k + 1 == n && !eof) {
                return k_need_more; // a doubled quote may follow
            }
            if (k + 1 < n && b[k + 1] == '"') {
                f.escaped = true;
                j = k + 2;
                continue;
            }
            j = k + 1;
            break;
        }
        if (j < n && b[j] != d && b[j] != '\n' && b[j] != '\r') {
            throw ParseError(line, "unexpected character after a closing quote");
        }
        return j;
    }

    // The unquoted field starting at b[j]: the index of the byte that ends it, or k_need_more.
    std::size_t unquoted_end(std::size_t j) const {
        for (;;) {
            j = j < n ? next_in(any, j) : n;
            if (j == n) {
                return eof ? n : k_need_more;
            }
            if (b[j] == '"') {
                throw ParseError(line, "quote inside an unquoted field");
            }
            if (b[j] == '\r') {
                if (j + 1 == n && !eof) {
                    return k_need_more;
                }
                if (j + 1 == n || b[j + 1] != '\n') {
                    ++j; // a lone CR is data
                    continue;
                }
            }
            return j;
        }
    }

    // The fields from b[i] on into out, and where the record's body and bytes end; false when
    // more bytes are needed.
    bool fields(std::size_t i, std::vector<FieldSpan>& out, std::size_t& body_end,
                std::size_t& end) {
        for (;;) {
            if (i == n) {
                if (!eof) {
                    return false;
                }
                out.push_back({i, i, false, false}); // empty last field after a delimiter
                body_end = end = n;
                return true;
            }
            FieldSpan f;
            f.begin = i;
            i = b[i] == '"' ? quoted_end(i, f) : unquoted_end(i);
            if (i == k_need_more) {
                return false;
            }
            f.end = i;
            out.push_back(f);
            if (i == n) {
                if (!eof) {
                    return false;
                }
                body_end = end = n; // last record without a line ending
                return true;
            }
            if (b[i] == d) {
                ++i;
                continue;
            }
            if (b[i] == '\n') {
                body_end = i;
                end = i + 1;
                return true;
            }
            if (i + 1 == n && !eof) {
                return false;
            }
            if (i + 1 < n && b[i + 1] == '\n') {
                body_end = i;
                end = i + 2;
                return true;
            }
            throw ParseError(line, "unexpected character after a closing quote");
        }
    }
};

} // namespace

std::string_view Record::value(std::size_t i, std::string& scratch) const {
    const FieldSpan& f = m_fields[i];
    if (!f.quoted) {
        return m_raw.substr(f.begin, f.end - f.begin);
    }
    const std::string_view inner = m_raw.substr(f.begin + 1, f.end - f.begin - 2);
    if (!f.escaped) {
        return inner;
    }
    scratch.clear();
    scratch.reserve(inner.size());
    for (std::size_t k = 0; k < inner.size(); ++k) {
        scratch.push_back(inner[k]);
        if (inner[k] == '"') {
            ++k; // the second quote of a doubled pair
        }
    }
    return scratch;
}

std::string Record::value(std::size_t i) const {
    std::string scratch;
    return std::string(value(i, scratch));
}

Reader::Reader(ReadFn read, char delimiter, std::size_t block)
    : m_read(std::move(read)), m_buf(std::max<std::size_t>(block, 16)), m_delim(delimiter) {}

bool Reader::fill() {
    if (m_pos > 0) {
        std::memmove(m_buf.data(), m_buf.data() + m_pos, m_len - m_pos);
        m_len -= m_pos;
        m_pos = 0;
    }
    if (m_len == m_buf.size()) {
        if (m_buf.size() >= k_max_record) {
            throw ParseError(m_line, "record longer than " + std::to_string(k_max_record >> 20) +
                                         " MiB, the maximum record size (unterminated quote?)");
        }
        m_buf.resize(std::min(m_buf.size() * 2, k_max_record));
    }
    m_classified = false;
    const std::size_t got = m_read(m_buf.data() + m_len, m_buf.size() - m_len);
    if (got == 0) {
        m_eof = true;
        return false;
    }
    m_len += got;
    return true;
}

void Reader::classify() {
    const std::size_t words = (m_len + 63) / 64;
    if (m_any.size() < words) {
        m_any.resize(words);
        m_quote_lf.resize(words);
    }
    classify_all(m_buf.data(), m_len, m_delim, m_any.data(), m_quote_lf.data());
    m_classified = true;
}

void Reader::detect_delimiter() {
    // The header ends at the first line break outside quotes; it must be in the buffer whole.
    for (;;) {
        std::size_t commas = 0;
        std::size_t semicolons = 0;
        bool quoted = false;
        bool complete = false;
        for (std::size_t i = m_pos + (m_bom ? 3 : 0); i < m_len; ++i) {
            const char c = m_buf[i];
            if (c == '"') {
                quoted = !quoted;
            } else if (!quoted && c == ',') {
                ++commas;
            } else if (!quoted && c == ';') {
                ++semicolons;
            } else if (!quoted && c == '\n') {
                complete = true;
                break;
            }
        }
        if (complete || m_eof) {
            m_delim = semicolons > commas ? ';' : ',';
            return;
        }
        fill();
    }
}

bool Reader::next(Record& out) {
    if (m_first) {
        while (m_len - m_pos < 3 && !m_eof) {
            fill();
        }
        m_bom = m_len - m_pos >= 3 && std::memcmp(m_buf.data() + m_pos, "\xEF\xBB\xBF", 3) == 0;
        if (m_delim == 0) {
            detect_delimiter();
        }
    }
    for (;;) {
        if (m_pos == m_len) {
            if (m_eof) {
                return false;
            }
            fill();
            continue;
        }
        if (parse(out) == Parse::complete) {
            m_first = false;
            return true;
        }
        fill();
    }
}

bool Reader::next_raw(Record& out) {
    if (m_first) {
        return next(out);
    }
    for (;;) {
        if (m_pos == m_len) {
            if (m_eof) {
                return false;
            }
            fill();
            continue;
        }
        if (parse_raw(out) == Parse::complete) {
            return true;
        }
        fill();
    }
}

Reader::Parse Reader::parse_raw(Record& out) {
    const char* b = m_buf.data() + m_pos;
    const std::size_t n = m_len - m_pos;
    out.m_fields.clear();
    if (n == 1 && b[0] == '\r' && !m_eof) {
        return Parse::need_more;
    }
    const bool blank_lf = b[0] == '\n';
    const bool blank_crlf = n > 1 && b[0] == '\r' && b[1] == '\n';
    out.m_blank = blank_lf || blank_crlf;
    std::size_t body_end = 0;
    std::size_t end = 0;
    std::uint64_t breaks = 0; // inside quoted fields
    if (out.m_blank) {
        end = blank_lf ? 1 : 2;
    } else {
        // A line break ends the record when the quotes before it pair up (a doubled quote
        // toggles twice).
        bool quoted = false;
        std::size_t i = 0;
        for (;;) {
            const auto* nl = static_cast<const char*>(std::memchr(b + i, '\n', n - i));
            const std::size_t stop = nl != nullptr ? static_cast<std::size_t>(nl - b) : n;
            for (const char* q = b + i;
                 (q = static_cast<const char*>(
                      std::memchr(q, '"', stop - static_cast<std::size_t>(q - b)))) != nullptr;
                 ++q) {
                quoted = !quoted;
            }
            if (nl == nullptr) {
                if (!m_eof) {
                    return Parse::need_more;
                }
                if (quoted) {
                    throw ParseError(m_line, "unterminated quoted field");
                }
                body_end = end = n; // last record without a line ending
                break;
            }
            if (!quoted) {
                end = stop + 1;
                body_end = b[stop - 1] == '\r' ? stop - 1 : stop;
                break;
            }
            ++breaks;
            i = stop + 1;
        }
    }
    out.m_raw = std::string_view(b, end);
    out.m_body_end = body_end;
    out.m_line = m_line;
    m_line += breaks + (end > body_end && b[end - 1] == '\n' ? 1 : 0);
    m_pos += end;
    return Parse::complete;
}

Reader::Parse Reader::parse(Record& out) {
    if (!m_classified) {
        classify();
    }
    const char* b = m_buf.data() + m_pos;
    const std::size_t n = m_len - m_pos;
    out.m_fields.clear();
    std::size_t i = m_first && m_bom ? 3 : 0;
    std::size_t body_end = 0;
    std::size_t end = 0;

    const bool blank_lf = i < n && b[i] == '\n';
    const bool blank_crlf = i + 1 < n && b[i] == '\r' && b[i + 1] == '\n';
    if (i + 1 == n && b[i] == '\r' && !m_eof) {
        return Parse::need_more;
    }
    out.m_blank = blank_lf || blank_crlf;
    FieldScanner scan{b, n, m_delim, m_eof, m_line, m_any.data(), m_quote_lf.data(), m_pos, m_len};
    if (blank_lf || blank_crlf) {
        body_end = i;
        end = i + (blank_lf ? 1 : 2);
    } else if (!scan.fields(i, out.m_fields, body_end, end)) {
        return Parse::need_more;
    }
    out.m_raw = std::string_view(b, end);
    out.m_body_end = body_end;
    out.m_line = m_line;
    m_line += scan.breaks + (end > body_end && b[end - 1] == '\n' ? 1 : 0);
    m_pos += end;
    return Parse::complete;
}

ReadFn fd_reader(int fd) {
    return [fd](char* buf, std::size_t n) -> std::size_t {
        for (;;) {
            const ssize_t got = ::read(fd, buf, n);
            if (got >= 0) {
                return static_cast<std::size_t>(got);
            }
            if (errno != EINTR) {
                throw std::system_error(errno, std::generic_category(), "read");
            }
        }
    };
}

ReadFn string_reader(std::string_view data) {
    return [data, off = std::size_t{0}](char* buf, std::size_t n) mutable -> std::size_t {
        const std::size_t take = std::min(n, data.size() - off);
        std::memcpy(buf, data.data() + off, take);
        off += take;
        return take;
    };
}

} // namespace retentiond::csv
