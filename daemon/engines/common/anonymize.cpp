// Value-level anonymization strategies (policy-format.md, "Anonymization strategies"), shared by
// every engine. Every strategy leaves a value it does not understand unchanged rather than guess.
#include "retentiond/anonymize.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/timeutil.hpp"

#include <arpa/inet.h>
#include <date/tz.h>

#include <charconv>
#include <cmath>
#include <cstring>

namespace retentiond {
namespace {

std::string hmac_of(const Secret& key, std::string_view value) {
    return hmac_sha256_hex(key.reveal(), value);
}

// `anon-<first 12 hex of the HMAC>@<domain>`. A value without a usable domain (no '@', nothing
// after it) gets the reserved `invalid` domain (RFC 2606) so the result is still an e-mail.
std::string email_domain(const Secret& key, std::string_view value) {
    const auto at = value.rfind('@');
    std::string_view domain = "invalid";
    if (at != std::string_view::npos && at + 1 < value.size()) {
        domain = value.substr(at + 1);
    }
    return "anon-" + hmac_of(key, value).substr(0, 12) + "@" + std::string(domain);
}

std::string truncate_ip(std::string_view value) {
    const std::string text(value);
    unsigned char addr[16];
    char out[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, text.c_str(), addr) == 1) {
        addr[3] = 0;
        return inet_ntop(AF_INET, addr, out, sizeof out) != nullptr ? std::string(out) : text;
    }
    if (inet_pton(AF_INET6, text.c_str(), addr) == 1) {
        static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (std::memcmp(addr, v4_mapped, sizeof v4_mapped) == 0) {
            addr[15] = 0; // ::ffff:a.b.c.d is an IPv4 client: /24 of it
        } else {
            std::memset(addr + 6, 0, 10);
        }
        return inet_ntop(AF_INET6, addr, out, sizeof out) != nullptr ? std::string(out) : text;
    }
    return text;
}

std::string strip_query(std::string_view value) {
    return std::string(value.substr(0, value.find_first_of("?#")));
}

std::optional<double> parse_number(std::string_view text) {
    double v = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (ec != std::errc{} || ptr != end || !std::isfinite(v)) {
        return std::nullopt;
    }
    return v;
}

double round_to(double v, int digits) {
    const double scale = std::pow(10.0, digits);
    double r = std::round(v * scale) / scale;
    return r == 0.0 ? 0.0 : r; // no "-0.00"
}

std::string format_rounded(double v, int digits) {
    char buf[64];
    const auto [ptr, ec] =
        std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, std::max(digits, 0));
    return ec == std::errc{} ? std::string(buf, ptr) : std::to_string(v);
}

std::string round_text(std::string_view value, int digits) {
    const auto v = parse_number(value);
    if (!v) {
        return std::string(value);
    }
    return format_rounded(round_to(*v, digits), digits);
}

std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
        const auto dot = path.find('.', start);
        parts.emplace_back(path.substr(start, dot - start));
        if (dot == std::string_view::npos) {
            return parts;
        }
        start = dot + 1;
    }
}

void drop_path(nlohmann::json& object, std::string_view path) {
    const auto parts = split_path(path);
    nlohmann::json* node = &object;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
        if (!node->is_object()) {
            return;
        }
        const auto it = node->find(parts[i]);
        if (it == node->end()) {
            return;
        }
        node = &*it;
    }
    if (node->is_object()) {
        node->erase(parts.back());
    }
}

std::string drop_keys_text(std::string_view value, const std::vector<std::string>& keys) {
    auto doc = nlohmann::json::parse(value, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
        return std::string(value);
    }
    for (const auto& k : keys) {
        drop_path(doc, k);
    }
    return doc.dump();
}

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// Truncates a timestamp and keeps its writing style: `2026-08-14 13:22:05` by month gives
// `2026-08-01 00:00:00`, `2026-08-14T13:22:05+02:00` keeps its offset, a date stays a date. The
// truncation happens in the value's own wall-clock frame, the one its writer used. Values that are
// not `YYYY-MM-DD...` but still parse are rewritten as ISO 8601 in tz.
std::string date_trunc(std::string_view value, const std::string& unit, const date::time_zone* tz) {
    const auto parsed = parse_timestamp(value, "", tz);
    if (!parsed || (unit != "day" && unit != "month" && unit != "year")) {
        return std::string(value);
    }
    const bool iso_date = value.size() >= 10 && is_digit(value[0]) && is_digit(value[1]) &&
                          is_digit(value[2]) && is_digit(value[3]) && value[4] == '-' &&
                          is_digit(value[5]) && is_digit(value[6]) && value[7] == '-' &&
                          is_digit(value[8]) && is_digit(value[9]);
    if (iso_date) {
        std::string out(value);
        if (unit == "month" || unit == "year") {
            out[8] = '0';
            out[9] = '1';
        }
        if (unit == "year") {
            out[5] = '0';
            out[6] = '1';
        }
        // Time digits become zeros up to the offset (`Z`, `+hh:mm`, `-hh:mm`).
        for (std::size_t i = 10; i < out.size(); ++i) {
            const char c = out[i];
            if (c == 'Z' || c == 'z' || c == '+' || c == '-') {
                break;
            }
            if (is_digit(c)) {
                out[i] = '0';
            }
        }
        return out;
    }
    const date::zoned_time<std::chrono::microseconds> zoned(
        tz != nullptr ? tz : date::locate_zone("UTC"), *parsed);
    const auto local_day = date::floor<date::days>(zoned.get_local_time());
    date::year_month_day ymd{local_day};
    if (unit == "month" || unit == "year") {
        ymd = ymd.year() / ymd.month() / date::day{1};
    }
    if (unit == "year") {
        ymd = ymd.year() / date::January / date::day{1};
    }
    const date::zoned_seconds truncated(zoned.get_time_zone(),
                                        date::local_seconds{date::local_days{ymd}});
    return date::format("%FT%T%Ez", truncated);
}

nlohmann::json* find_path(nlohmann::json& object, const std::vector<std::string>& parts) {
    nlohmann::json* node = &object;
    for (const auto& p : parts) {
        if (!node->is_object()) {
            return nullptr;
        }
        const auto it = node->find(p);
        if (it == node->end()) {
            return nullptr;
        }
        node = &*it;
    }
    return node;
}

std::string scalar_text(const nlohmann::json& v) {
    return v.is_string() ? v.get<std::string>() : v.dump();
}

} // namespace

std::optional<std::string> anonymize_text(const Strategy& s, std::string_view value,
                                          const Secret& audit_key, const date::time_zone* tz) {
    using SK = Strategy::Kind;
    switch (s.kind) {
    case SK::null_value:
        return std::nullopt;
    case SK::fixed:
        return s.fixed_value;
    case SK::hmac:
        return hmac_of(audit_key, value);
    case SK::email_domain:
        return email_domain(audit_key, value);
    case SK::truncate_ip:
        return truncate_ip(value);
    case SK::strip_query:
        return strip_query(value);
    case SK::round:
        return round_text(value, s.round_digits);
    case SK::drop_keys:
        return drop_keys_text(value, s.drop_keys);
    case SK::date_trunc:
        return date_trunc(value, s.trunc_unit, tz);
    }
    return std::string(value);
}

void anonymize_json(nlohmann::json& object, const FieldStrategy& fs, const Secret& audit_key,
                    const date::time_zone* tz) {
    nlohmann::json* node = find_path(object, split_path(fs.field));
    if (node == nullptr) {
        return;
    }
    using SK = Strategy::Kind;
    const Strategy& s = fs.strategy;
    if (node->is_null() && s.kind != SK::fixed) {
        return; // nothing to anonymize
    }
    switch (s.kind) {
    case SK::null_value:
        *node = nullptr;
        return;
    case SK::fixed:
        *node = s.fixed_value;
        return;
    case SK::round:
        if (node->is_number()) {
            *node = round_to(node->get<double>(), s.round_digits);
            return;
        }
        break;
    case SK::drop_keys:
        if (node->is_object()) {
            for (const auto& k : s.drop_keys) {
                drop_path(*node, k);
            }
            return;
        }
        if (!node->is_string()) {
            return;
        }
        break;
    case SK::truncate_ip:
    case SK::strip_query:
    case SK::date_trunc:
        if (!node->is_string()) {
            return; // numbers, booleans, objects: not an address, URL or timestamp
        }
        break;
    case SK::hmac:
    case SK::email_domain:
        break;
    }
    const auto text = anonymize_text(s, scalar_text(*node), audit_key, tz);
    if (text) {
        *node = *text;
    } else {
        *node = nullptr;
    }
}

} // namespace retentiond
