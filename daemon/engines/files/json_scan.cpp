#include "json_scan.hpp"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

namespace retentiond::files_detail {

namespace {

struct Invalid {};

// A container on some path, or the value of one: which paths it is on (bit i: the keys from the
// top down to it are its first segments of paths[i]), which paths' value it is, where it starts,
// and how many containers are above it. The others only take a bit of the nesting.
struct Frame {
    std::uint32_t on;
    std::uint32_t capture;
    std::size_t start;
    std::size_t depth;
};

class Scanner {
public:
    Scanner(std::string_view t, const std::vector<std::vector<std::string>>& paths,
            std::vector<std::optional<std::string_view>>& found)
        : m_t(t), m_paths(paths), m_found(found) {}

    JsonScan run() {
        if (m_paths.size() > 32) {
            throw std::invalid_argument("scan_json: at most 32 paths");
        }
        m_found.assign(m_paths.size(), std::nullopt);
        try {
            if (peek() == '\xEF' && m_t.substr(0, 3) != "\xEF\xBB\xBF") {
                return JsonScan::invalid;
            }
            m_pos = m_t.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
            ws();
            const bool object = peek() == '{';
            const std::uint32_t all =
                m_paths.size() == 32 ? ~std::uint32_t{0} : (std::uint32_t{1} << m_paths.size()) - 1;
            values(object ? all : 0);
            ws();
            // The parser reads a NUL byte where a token starts as the end of its input.
            if (m_pos != m_t.size() && m_t[m_pos] != '\0') {
                return JsonScan::invalid;
            }
            return object ? JsonScan::object : JsonScan::not_object;
        } catch (const Invalid&) {
            m_found.assign(m_paths.size(), std::nullopt);
            return JsonScan::invalid;
        }
    }

private:
    char peek() const { return m_pos < m_t.size() ? m_t[m_pos] : '\0'; }
    bool at_end() const { return m_pos >= m_t.size(); }
    void expect(char c) {
        if (at_end() || m_t[m_pos] != c) {
            throw Invalid{};
        }
        ++m_pos;
    }
    void ws() {
        while (!at_end()) {
            const char c = m_t[m_pos];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            ++m_pos;
        }
    }

    // The top value and everything in it; descend: the paths a top object is on.
    void values(std::uint32_t descend) {
        std::uint32_t capture = 0;
        for (;;) {
            // At the start of a value.
            ws();
            const std::size_t start = m_pos;
            const char c = peek();
            if (c == '{' || c == '[') {
                ++m_pos;
                open(c == '{', c == '{' ? descend : 0, capture, start);
                ws();
                if (peek() == (c == '{' ? '}' : ']')) {
                    ++m_pos;
                    close();
                } else if (c == '{') {
                    key(descend, capture);
                    continue;
                } else {
                    descend = capture = 0;
                    continue;
                }
            } else {
                scalar();
                record(capture, start);
            }
            // After a value: the next element, or the end of containers.
            if (!next(descend, capture)) {
                return;
            }
        }
    }

    // After a value inside the open containers: reads a comma (and the next key) or closes
    // containers. False when the top value is complete.
    bool next(std::uint32_t& descend, std::uint32_t& capture) {
        for (;;) {
            if (m_kinds.empty()) {
                return false;
            }
            ws();
            const bool object = m_kinds.back();
            if (peek() == ',') {
                ++m_pos;
                if (object) {
                    key(descend, capture);
                } else {
                    descend = capture = 0;
                }
                return true;
            }
            expect(object ? '}' : ']');
            close();
        }
    }

    void open(bool object, std::uint32_t on, std::uint32_t capture, std::size_t start) {
        if (on != 0 || capture != 0) {
            m_marked.push_back({on, capture, start, m_kinds.size()});
        }
        m_kinds.push_back(object);
    }

    // Pops the container just closed (its last byte read) and records it where it is a value.
    void close() {
        m_kinds.pop_back();
        if (!m_marked.empty() && m_marked.back().depth == m_kinds.size()) {
            const Frame f = m_marked.back();
            m_marked.pop_back();
            record(f.capture, f.start);
        }
    }

    void record(std::uint32_t capture, std::size_t start) {
        for (std::size_t i = 0; capture != 0; ++i, capture >>= 1) {
            if ((capture & 1U) != 0) {
                m_found[i] = m_t.substr(start, m_pos - start);
            }
        }
    }

    // A key of the innermost object and its colon: which paths its value is on (descend) or the
    // value of (capture). A key met again replaces what an earlier one held.
    void key(std::uint32_t& descend, std::uint32_t& capture) {
        const std::size_t depth = m_kinds.size() - 1;
        const bool marked = !m_marked.empty() && m_marked.back().depth == depth;
        const std::uint32_t on = marked ? m_marked.back().on : 0;
        ws();
        const std::size_t start = m_pos;
        const bool escaped = string();
        const std::string_view raw = m_t.substr(start + 1, m_pos - start - 2);
        descend = capture = 0;
        if (on != 0) {
            std::string decoded;
            const std::string_view k = escaped ? decode(raw, decoded) : raw;
            for (std::size_t i = 0; i < m_paths.size(); ++i) {
                const auto& p = m_paths[i];
                if ((on >> i & 1U) == 0 || depth >= p.size() || p[depth] != k) {
                    continue;
                }
                m_found[i].reset();
                (depth + 1 == p.size() ? capture : descend) |= std::uint32_t{1} << i;
            }
        }
        ws();
        expect(':');
    }

    void scalar() {
        const char c = peek();
        if (c == '"') {
            string();
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            number();
        } else if (c == 't') {
            literal("true");
        } else if (c == 'f') {
            literal("false");
        } else if (c == 'n') {
            literal("null");
        } else {
            throw Invalid{};
        }
    }

    void literal(std::string_view word) {
        if (m_t.substr(m_pos, word.size()) != word) {
            throw Invalid{};
        }
        m_pos += word.size();
    }

    void number();
    bool string();
    void utf8(unsigned char lead);
    unsigned hex4();
    static std::string_view decode(std::string_view raw, std::string& out);

    std::string_view m_t;
    const std::vector<std::vector<std::string>>& m_paths;
    std::vector<std::optional<std::string_view>>& m_found;
    std::size_t m_pos = 0;
    std::vector<bool> m_kinds;   // the open containers: true for an object
    std::vector<Frame> m_marked; // the open containers on a path or captured, innermost last
};

// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, finite as a double (nlohmann refuses a number
// that overflows one; an integer of up to 18 digits never does).
void Scanner::number() {
    const std::size_t start = m_pos;
    auto digits = [this] {
        const std::size_t from = m_pos;
        while (!at_end() && m_t[m_pos] >= '0' && m_t[m_pos] <= '9') {
            ++m_pos;
        }
        if (m_pos == from) {
            throw Invalid{};
        }
        return m_pos - from;
    };
    if (peek() == '-') {
        ++m_pos;
    }
    std::size_t n = 0;
    if (peek() == '0') {
        ++m_pos;
        n = 1;
    } else {
        n = digits();
    }
    bool plain = true;
    if (peek() == '.') {
        ++m_pos;
        digits();
        plain = false;
    }
    if (peek() == 'e' || peek() == 'E') {
        ++m_pos;
        if (peek() == '+' || peek() == '-') {
            ++m_pos;
        }
        digits();
        plain = false;
    }
    if (!plain || n > 18) {
        const std::string copy(m_t.substr(start, m_pos - start));
        if (!std::isfinite(std::strtod(copy.c_str(), nullptr))) {
            throw Invalid{};
        }
    }
}

// A string at m_pos, its closing quote read. True when it holds escapes.
bool Scanner::string() {
    expect('"');
    bool escaped = false;
    for (;;) {
        if (at_end()) {
            throw Invalid{};
        }
        const auto c = static_cast<unsigned char>(m_t[m_pos++]);
        if (c == '"') {
            return escaped;
        }
        if (c < 0x20) {
            throw Invalid{};
        }
        if (c >= 0x80) {
            utf8(c);
            continue;
        }
        if (c != '\\') {
            continue;
        }
        escaped = true;
        const char e = peek();
        ++m_pos;
        if (e == 'u') {
            const unsigned u = hex4();
            if (u >= 0xDC00 && u <= 0xDFFF) {
                throw Invalid{}; // a low surrogate alone
            }
            if (u >= 0xD800 && u <= 0xDBFF) {
                expect('\\');
                expect('u');
                const unsigned low = hex4();
                if (low < 0xDC00 || low > 0xDFFF) {
                    throw Invalid{};
                }
            }
        } else if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' &&
                   e != 'r' && e != 't') {
            throw Invalid{};
        }
    }
}

// The continuation bytes of a UTF-8 sequence (RFC 3629, as nlohmann checks it): no overlong
// forms, no surrogates, nothing past U+10FFFF.
void Scanner::utf8(unsigned char lead) {
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    int more = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
        more = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        more = 2;
        lo = lead == 0xE0 ? 0xA0 : 0x80;
        hi = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        more = 3;
        lo = lead == 0xF0 ? 0x90 : 0x80;
        hi = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        throw Invalid{};
    }
    for (int i = 0; i < more; ++i) {
        if (at_end()) {
            throw Invalid{};
        }
        const auto b = static_cast<unsigned char>(m_t[m_pos++]);
        if (b < (i == 0 ? lo : 0x80) || b > (i == 0 ? hi : 0xBF)) {
            throw Invalid{};
        }
    }
}

unsigned Scanner::hex4() {
    unsigned u = 0;
    for (int i = 0; i < 4; ++i) {
        const char h = peek();
        ++m_pos;
        u <<= 4;
        if (h >= '0' && h <= '9') {
            u |= static_cast<unsigned>(h - '0');
        } else if (h >= 'a' && h <= 'f') {
            u |= static_cast<unsigned>(h - 'a' + 10);
        } else if (h >= 'A' && h <= 'F') {
            u |= static_cast<unsigned>(h - 'A' + 10);
        } else {
            throw Invalid{};
        }
    }
    return u;
}

// The value of a checked string's inner bytes (a key on a path that holds escapes).
std::string_view Scanner::decode(std::string_view raw, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] != '\\') {
            out += raw[i];
            continue;
        }
        const char e = raw[++i];
        const char* const simple = "\"\"\\\\//b\bf\fn\nr\rt\t";
        bool done = false;
        for (const char* s = simple; *s != '\0'; s += 2) {
            if (*s == e) {
                out += s[1];
                done = true;
            }
        }
        if (done) {
            continue;
        }
        auto hex = [&](std::size_t at) {
            return static_cast<unsigned>(
                std::strtoul(std::string(raw.substr(at, 4)).c_str(), nullptr, 16));
        };
        unsigned cp = hex(i + 1);
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (hex(i + 3) - 0xDC00);
            i += 6;
        }
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }
    return out;
}

} // namespace

JsonScan scan_json(std::string_view text, const std::vector<std::vector<std::string>>& paths,
                   std::vector<std::optional<std::string_view>>& found) {
    return Scanner(text, paths, found).run();
}

} // namespace retentiond::files_detail
