// Coverage's shared part: what names and values look personal, and acknowledgements. The kinds'
// scans (engines/<kind>/<kind>_coverage.cpp) read values only to pass them to classify_value;
// nothing here keeps or returns a value.
#include "retentiond/coverage.hpp"

#include "retentiond/kind.hpp"

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <regex>

namespace retentiond {

namespace {

// Lower case, accents folded, split on anything not a letter (and on camelCase).
std::vector<std::string> name_tokens(std::string_view name) {
    static const std::vector<std::pair<std::string_view, char>> folds = {
        {"é", 'e'}, {"è", 'e'}, {"ê", 'e'}, {"ë", 'e'}, {"à", 'a'}, {"â", 'a'}, {"ç", 'c'},
        {"î", 'i'}, {"ï", 'i'}, {"ô", 'o'}, {"ù", 'u'}, {"û", 'u'}, {"É", 'e'}};
    std::string folded;
    for (std::size_t i = 0; i < name.size();) {
        bool done = false;
        for (const auto& [from, to] : folds) {
            if (name.substr(i, from.size()) == from) {
                folded += to;
                i += from.size();
                done = true;
                break;
            }
        }
        if (!done) {
            folded += name[i++];
        }
    }
    std::vector<std::string> tokens;
    std::string current;
    for (std::size_t i = 0; i < folded.size(); ++i) {
        const auto c = static_cast<unsigned char>(folded[i]);
        const bool upper_after_lower = std::isupper(c) != 0 && i > 0 &&
                                       std::islower(static_cast<unsigned char>(folded[i - 1])) != 0;
        if (std::isalpha(c) == 0 || upper_after_lower) {
            if (!current.empty()) {
                tokens.push_back(current);
                current.clear();
            }
        }
        if (std::isalpha(c) != 0) {
            current += static_cast<char>(std::tolower(c));
        }
    }
    if (!current.empty()) {
        tokens.push_back(current);
    }
    return tokens;
}

struct NamePattern {
    const char* category;
    std::vector<std::vector<std::string>> sequences; // any one, as consecutive tokens
};

const std::vector<NamePattern>& name_patterns() {
    static const std::vector<NamePattern> patterns = {
        {"e-mail", {{"email"}, {"mail"}, {"e", "mail"}, {"courriel"}, {"emails"}}},
        {"phone",
         {{"phone"},
          {"telephone"},
          {"tel"},
          {"mobile"},
          {"portable"},
          {"fax"},
          {"cellphone"},
          {"phones"},
          {"msisdn"}}},
        {"name",
         {{"first", "name"},
          {"last", "name"},
          {"firstname"},
          {"lastname"},
          {"surname"},
          {"prenom"},
          {"nom"},
          {"full", "name"},
          {"fullname"},
          {"given", "name"},
          {"family", "name"},
          {"username"},
          {"user", "name"},
          {"contact", "name"},
          {"nom", "de"}}},
        {"address",
         {{"address"},
          {"adresse"},
          {"street"},
          {"rue"},
          {"addr"},
          {"domicile"},
          {"postal", "address"}}},
        {"IP address", {{"ip"}, {"ipv"}, {"remote", "addr"}, {"ip", "address"}}},
        {"coordinates",
         {{"latitude"},
          {"longitude"},
          {"lat"},
          {"lng"},
          {"lon"},
          {"coordinates"},
          {"coords"},
          {"geolocation"},
          {"geoloc"}}},
        {"birth date",
         {{"birth"}, {"birthday"}, {"birthdate"}, {"dob"}, {"naissance"}, {"date", "of", "birth"}}},
        {"IBAN", {{"iban"}, {"rib"}}},
        {"national ID", {{"nir"}, {"ssn"}, {"social", "security"}, {"securite", "sociale"}}},
    };
    return patterns;
}

bool contains_sequence(const std::vector<std::string>& tokens,
                       const std::vector<std::string>& seq) {
    if (seq.size() > tokens.size()) {
        return false;
    }
    for (std::size_t i = 0; i + seq.size() <= tokens.size(); ++i) {
        if (std::equal(seq.begin(), seq.end(), tokens.begin() + static_cast<long>(i))) {
            return true;
        }
    }
    return false;
}

// ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1.
bool iban_checksum(std::string_view compact) {
    if (compact.size() < 15 || compact.size() > 34) {
        return false;
    }
    const std::string moved = std::string(compact.substr(4)) + std::string(compact.substr(0, 4));
    int rest = 0;
    for (const char c : moved) {
        if (std::isdigit(static_cast<unsigned char>(c)) != 0) {
            rest = (rest * 10 + (c - '0')) % 97;
        } else if (c >= 'A' && c <= 'Z') {
            rest = (rest * 100 + (c - 'A' + 10)) % 97;
        } else {
            return false;
        }
    }
    return rest == 1;
}

bool has_iban(const std::string& value) {
    static const std::regex re(R"(\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b)");
    for (auto it = std::sregex_iterator(value.begin(), value.end(), re);
         it != std::sregex_iterator(); ++it) {
        std::string compact;
        for (const char c : it->str()) {
            if (c != ' ') {
                compact += c;
            }
        }
        if (iban_checksum(compact)) {
            return true;
        }
    }
    return false;
}

bool has_ipv6(const std::string& value) {
    std::string token;
    const auto check = [&token] {
        in6_addr addr{};
        const bool ok = std::count(token.begin(), token.end(), ':') >= 2 && token.size() >= 6 &&
                        ::inet_pton(AF_INET6, token.c_str(), &addr) == 1;
        token.clear();
        return ok;
    };
    for (const char c : value) {
        if (std::isxdigit(static_cast<unsigned char>(c)) != 0 || c == ':' || c == '.') {
            token += c;
        } else if (!token.empty() && check()) {
            return true;
        }
    }
    return !token.empty() && check();
}

bool has_coordinates(const std::string& value) {
    static const std::regex re(R"((-?[0-9]{1,2}\.[0-9]{3,})\s*[,; ]\s*(-?[0-9]{1,3}\.[0-9]{3,}))");
    std::smatch m;
    if (!std::regex_search(value, m, re)) {
        return false;
    }
    const double lat = std::stod(m[1].str());
    const double lon = std::stod(m[2].str());
    return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180;
}

void classify_text(const std::string& value, std::set<std::string>& out) {
    static const std::regex email(
        R"([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})");
    static const std::regex phone(
        R"((?:^|[^0-9+])(?:\+33 ?|0033 ?|0)[1-9](?:[ .-]?[0-9]{2}){4}(?:$|[^0-9]))");
    static const std::regex ipv4(
        R"((?:^|[^0-9.])(?:(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(?:$|[^0-9.]))");
    if (value.find('@') != std::string::npos && std::regex_search(value, email)) {
        out.insert("e-mail");
    }
    if (std::regex_search(value, phone)) {
        out.insert("phone");
    }
    if (std::regex_search(value, ipv4) ||
        (value.find(':') != std::string::npos && has_ipv6(value))) {
        out.insert("IP address");
    }
    if (has_coordinates(value)) {
        out.insert("coordinates");
    }
    if (has_iban(value)) {
        out.insert("IBAN");
    }
}

void walk_json(const nlohmann::json& j, std::set<std::string>& out, int depth) {
    if (depth > 32) {
        return;
    }
    if (j.is_object()) {
        for (const auto& [key, value] : j.items()) {
            for (const auto& category : classify_name(key)) {
                out.insert("key: " + category);
            }
            walk_json(value, out, depth + 1);
        }
    } else if (j.is_array()) {
        for (const auto& item : j) {
            walk_json(item, out, depth + 1);
        }
    } else if (j.is_string()) {
        classify_text(j.get<std::string>(), out);
    }
}

// A value longer than this is classified on its first part only: a sample stays cheap.
constexpr std::size_t k_max_value = 64 * 1024;

} // namespace

std::set<std::string> classify_name(std::string_view name) {
    std::set<std::string> found;
    const auto tokens = name_tokens(name);
    for (const auto& p : name_patterns()) {
        for (const auto& seq : p.sequences) {
            if (contains_sequence(tokens, seq)) {
                found.insert(p.category);
                break;
            }
        }
    }
    return found;
}

std::set<std::string> classify_value(std::string_view value) {
    std::set<std::string> found;
    const std::string text(value.substr(0, k_max_value));
    const auto first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && (text[first] == '{' || text[first] == '[')) {
        auto j = nlohmann::json::parse(text, nullptr, false);
        if (!j.is_discarded()) {
            walk_json(j, found, 0);
            return found;
        }
    }
    classify_text(text, found);
    return found;
}

void ValueTally::add(std::string_view value) {
    ++m_sampled;
    for (const auto& category : classify_value(value)) {
        ++m_hits[category];
    }
}

std::vector<std::string> ValueTally::reasons() const {
    std::vector<std::string> out;
    for (const auto& [category, hits] : m_hits) {
        if (hits * 20 >= m_sampled) {
            out.push_back("values: " + category + " " + std::to_string(hits) + "/" +
                          std::to_string(m_sampled));
        }
    }
    return out;
}

std::string safe_name(std::string_view name) {
    const auto found = classify_value(name);
    if (found.empty()) {
        return std::string(name);
    }
    std::string text;
    for (const auto& category : found) {
        text += (text.empty() ? "<" : ", ") + category;
    }
    return text + ">";
}

std::string safe_path(std::string_view path) {
    std::string out;
    std::size_t start = 0;
    for (;;) {
        const auto slash = path.find('/', start);
        out +=
            safe_name(path.substr(start, slash == std::string_view::npos ? slash : slash - start));
        if (slash == std::string_view::npos) {
            return out;
        }
        out += '/';
        start = slash + 1;
    }
}

std::vector<std::string> name_reasons(std::string_view name) {
    const auto found = classify_name(name);
    if (found.empty()) {
        return {};
    }
    std::string text = "name: ";
    bool first = true;
    for (const auto& category : found) {
        text += (first ? "" : ", ") + category;
        first = false;
    }
    return {text};
}

std::int64_t CoverageReport::uncovered() const {
    std::int64_t n = 0;
    for (const auto& s : stores) {
        n += std::count_if(s.scan.findings.begin(), s.scan.findings.end(),
                           [](const CoverageFinding& f) { return !f.ok(); });
    }
    return n;
}

std::int64_t CoverageReport::acknowledged() const {
    std::int64_t n = 0;
    for (const auto& s : stores) {
        n += std::count_if(s.scan.findings.begin(), s.scan.findings.end(),
                           [](const CoverageFinding& f) {
                               return f.covered_by.empty() && !f.acknowledged.empty();
                           });
    }
    return n;
}

std::int64_t CoverageReport::covered() const {
    std::int64_t n = 0;
    for (const auto& s : stores) {
        n += std::count_if(s.scan.findings.begin(), s.scan.findings.end(),
                           [](const CoverageFinding& f) { return !f.covered_by.empty(); });
    }
    return n;
}

bool CoverageReport::any_partial() const {
    return std::any_of(stores.begin(), stores.end(), [](const StoreCoverage& s) {
        return s.scan.partial || (!s.error.empty() && !s.unavailable);
    });
}

bool CoverageReport::any_unavailable() const {
    return std::any_of(stores.begin(), stores.end(),
                       [](const StoreCoverage& s) { return s.unavailable; });
}

namespace {

std::string qualified(const std::string& table) {
    return table.find('.') == std::string::npos ? "public." + table : table;
}

bool acknowledges(const CoverageIgnore& ack, const CoverageFinding& f) {
    if (!ack.datastore.empty() && ack.datastore != f.datastore) {
        return false;
    }
    if (!ack.table.empty()) {
        return !f.table.empty() && qualified(ack.table) == f.table &&
               (ack.column.empty() || ack.column == f.column);
    }
    if (!ack.files.empty()) {
        return !f.file.empty() && ::fnmatch(ack.files.c_str(), f.file.c_str(), 0) == 0 &&
               (ack.column.empty() || ack.column == f.column);
    }
    if (!ack.pattern.empty()) {
        return !f.pattern.empty() && (ack.pattern == f.pattern ||
                                      ::fnmatch(ack.pattern.c_str(), f.pattern.c_str(), 0) == 0);
    }
    return false;
}

} // namespace

std::string describe(const CoverageIgnore& ack) {
    std::string what;
    if (!ack.table.empty()) {
        what = "table " + ack.table + (ack.column.empty() ? "" : " column " + ack.column);
    } else if (!ack.files.empty()) {
        what = "files " + ack.files + (ack.column.empty() ? "" : " column " + ack.column);
    } else {
        what = "keys " + ack.pattern;
    }
    return (ack.datastore.empty() ? "" : ack.datastore + ": ") + what;
}

std::vector<StaleAcknowledgement> apply_acknowledgements(std::vector<StoreCoverage>& stores,
                                                         const std::vector<CoverageIgnore>& ignores,
                                                         bool every_store) {
    std::vector<StaleAcknowledgement> stale;
    for (const auto& ack : ignores) {
        // Stale only where the scan saw everything the acknowledgement could match.
        bool scanned = ack.datastore.empty() && every_store &&
                       std::none_of(stores.begin(), stores.end(),
                                    [](const StoreCoverage& s) { return !s.error.empty(); });
        bool used = false;
        for (auto& store : stores) {
            if (store.datastore == ack.datastore && store.error.empty()) {
                scanned = true;
            }
            for (auto& f : store.scan.findings) {
                if (acknowledges(ack, f)) {
                    used = true;
                    if (f.acknowledged.empty()) {
                        f.acknowledged = ack.reason;
                    }
                }
            }
        }
        if (scanned && !used) {
            stale.push_back({ack, describe(ack)});
        }
    }
    return stale;
}

CoverageScan Kind::scan_coverage(const Datastore& store,
                                 const std::vector<const Rule*>& rules) const {
    (void)rules;
    CoverageScan scan;
    scan.notes.push_back("datastore \"" + store.name + "\": kind " + std::string(name()) +
                         " has no coverage scan");
    return scan;
}

} // namespace retentiond
