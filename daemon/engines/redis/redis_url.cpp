#include "redis_url.hpp"

#include <charconv>

namespace retentiond {
namespace {

// Messages never quote the URL: it may hold a password.
[[noreturn]] void fail(const std::string& why) {
    throw ParseError("redis URL: " + why);
}

int to_int(std::string_view text, int lo, int hi, const char* what) {
    int value = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc() || ptr != end || value < lo || value > hi) {
        fail(std::string(what) + " must be a number from " + std::to_string(lo) + " to " +
             std::to_string(hi));
    }
    return value;
}

std::string percent_decode(std::string_view text, const char* what) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        if (i + 2 >= text.size()) {
            fail(std::string("bad percent-encoding in the ") + what);
        }
        int value = 0;
        const auto [ptr, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
        if (ec != std::errc() || ptr != text.data() + i + 3) {
            fail(std::string("bad percent-encoding in the ") + what);
        }
        out += static_cast<char>(value);
        i += 2;
    }
    return out;
}

// "[user]:password" (the part before '@').
void read_userinfo(std::string_view info, RedisUrl& url) {
    const auto colon = info.find(':');
    if (colon == std::string_view::npos) {
        fail("a user needs a password (redis://user:password@host)");
    }
    url.user = percent_decode(info.substr(0, colon), "user");
    url.password = Secret(percent_decode(info.substr(colon + 1), "password"));
}

// unix:// query: db=N, password=..., user=...
void read_query(std::string_view query, RedisUrl& url) {
    while (!query.empty()) {
        const auto amp = query.find('&');
        const auto item = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        const auto eq = item.find('=');
        const auto name = item.substr(0, eq);
        const auto value = eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
        if (name == "db") {
            url.db = to_int(value, 0, 1000000, "db");
        } else if (name == "password") {
            url.password = Secret(percent_decode(value, "password"));
        } else if (name == "user") {
            url.user = percent_decode(value, "user");
        } else {
            fail("unknown query parameter \"" + std::string(name) + "\" (db, user, password)");
        }
    }
}

} // namespace

std::string RedisUrl::describe() const {
    const std::string where =
        socket_path.empty() ? (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                                  ":" + std::to_string(port)
                            : socket_path;
    return where + " db " + std::to_string(db);
}

RedisUrl parse_redis_url(std::string_view text) {
    RedisUrl url;
    constexpr std::string_view k_redis = "redis://";
    constexpr std::string_view k_unix = "unix://";
    if (text.starts_with("rediss://")) {
        fail("rediss:// (TLS) is not supported; use a Unix socket or a local TLS proxy");
    }
    if (text.starts_with(k_redis)) {
        auto rest = text.substr(k_redis.size());
        const auto slash = rest.find_first_of("/?");
        auto authority = rest.substr(0, slash);
        const auto path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
        // The last '@': an unencoded '@' in a password still parses.
        const auto at = authority.rfind('@');
        if (at != std::string_view::npos) {
            read_userinfo(authority.substr(0, at), url);
            authority = authority.substr(at + 1);
        }
        std::string_view port;
        if (authority.starts_with('[')) {
            const auto close = authority.find(']');
            if (close == std::string_view::npos) {
                fail("unterminated [IPv6] host");
            }
            url.host = std::string(authority.substr(1, close - 1));
            const auto after = authority.substr(close + 1);
            if (!after.empty()) {
                if (!after.starts_with(':')) {
                    fail("expected :port after the [IPv6] host");
                }
                port = after.substr(1);
            }
        } else {
            const auto colon = authority.rfind(':');
            url.host = std::string(authority.substr(0, colon));
            if (colon != std::string_view::npos) {
                port = authority.substr(colon + 1);
            }
        }
        if (url.host.empty()) {
            fail("missing host (redis://host:port/db)");
        }
        if (!port.empty()) {
            url.port = to_int(port, 1, 65535, "port");
        }
        if (path.starts_with('?')) {
            fail("query parameters are not supported in redis:// URLs; put the db in the path");
        }
        if (path.size() > 1) {
            url.db = to_int(path.substr(1), 0, 1000000, "db");
        }
        return url;
    }
    if (text.starts_with(k_unix)) {
        auto rest = text.substr(k_unix.size());
        if (!rest.starts_with('/')) {
            const auto at = rest.find('@');
            if (at == std::string_view::npos) {
                fail("unix:// needs an absolute socket path (unix:///run/redis.sock)");
            }
            read_userinfo(rest.substr(0, at), url);
            rest = rest.substr(at + 1);
        }
        const auto q = rest.find('?');
        url.socket_path = std::string(rest.substr(0, q));
        if (q != std::string_view::npos) {
            read_query(rest.substr(q + 1), url);
        }
        if (url.socket_path.size() < 2 || url.socket_path.front() != '/') {
            fail("unix:// needs an absolute socket path (unix:///run/redis.sock)");
        }
        url.host.clear();
        return url;
    }
    if (text.starts_with('/')) {
        url.socket_path = std::string(text);
        return url;
    }
    fail("expected redis://[user:password@]host:port/db, unix:///path?db=N or a socket path");
}

} // namespace retentiond
