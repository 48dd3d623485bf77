// Writes a Tally-shaped satisfaction-form export of about N bytes to stdout: free-text answers
// with commas, doubled quotes, line breaks and accents; a given share of records older than
// 2 years. Deterministic (fixed seed) so runs compare.
//   files_gen BYTES [OLD_PERCENT=40] [long|short] > Form_Submissions_2026-01-01.csv
// short: records of about 130 bytes (a rating and a few words), every field quoted, CRLF line
// endings and a UTF-8 BOM, as a spreadsheet saves it: the per-record cost, not the per-byte one.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

namespace {

std::uint64_t g_state = 0x9e3779b97f4a7c15ULL;
std::uint64_t next() { // xorshift64*
    g_state ^= g_state >> 12;
    g_state ^= g_state << 25;
    g_state ^= g_state >> 27;
    return g_state * 0x2545F4914F6CDD1DULL;
}
std::uint64_t below(std::uint64_t n) {
    return next() % n;
}

const char* const k_words[] = {
    "très",     "bien",       "accueil",  "rapide",      "l'artisan", "a",         "été",
    "ponctuel", "devis",      "clair",    "mais",        "un",        "peu",       "cher",
    "je",       "recommande", "plombier", "électricien", "chantier",  "propre",    "délai",
    "respecté", "Merci",      "équipe",   "travaux",     "qualité",   "prix",      "à",
    "revoir",   "conseillé",  "par",      "voisin",      "façade",    "isolation", "chauffage"};
const char* const k_first[] = {"Élodie",   "Jean-Noël", "Zoë",   "Ørjan",  "Camille", "Léa",
                               "François", "Inès",      "Agnès", "Hélène", "Loïc",    "Maël"};
const char* const k_last[] = {"Dupont", "Le Gall",  "N'Diaye",    "Müller", "Lefèvre",
                              "Garçon", "Da Silva", "Østergaard", "Bénard", "Moreau"};
const char* const k_situations[] = {
    "Salarié",  "Artisan, indépendant", "Demandeur d'emploi", "Étudiant",
    "Retraité", "Chef d'entreprise"};

void field(std::string& out, const std::string& v) {
    if (v.find_first_of(",\"\r\n") == std::string::npos) {
        out += v;
        return;
    }
    out += '"';
    for (char c : v) {
        out += c;
        if (c == '"') {
            out += '"';
        }
    }
    out += '"';
}

std::string comment() {
    std::string s;
    const auto n = 5 + below(40);
    for (std::uint64_t i = 0; i < n; ++i) {
        if (i > 0) {
            const auto r = below(100);
            s += r < 8 ? ", " : r < 10 ? "\n" : r < 12 ? " \"" : " ";
        }
        s += k_words[below(sizeof k_words / sizeof *k_words)];
    }
    if (below(10) == 0) {
        s += " \"vraiment\"";
    }
    return s;
}

// Every field quoted (doubled quotes inside), as a spreadsheet's "quote all" export.
void quoted(std::string& out, const std::string& v) {
    out += '"';
    for (char c : v) {
        out += c;
        if (c == '"') {
            out += '"';
        }
    }
    out += '"';
}

// A few words, sometimes with a comma or quoted words: no line break, the record stays short.
std::string short_comment() {
    std::string s;
    const auto n = 2 + below(7);
    for (std::uint64_t i = 0; i < n; ++i) {
        if (i > 0) {
            s += below(5) == 0 ? ", " : " ";
        }
        s += k_words[below(sizeof k_words / sizeof *k_words)];
    }
    if (below(8) == 0) {
        s += " \"top\"";
    }
    return s;
}

std::string id(std::uint64_t n) {
    static const char k_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::string s = "m";
    for (int i = 0; i < 6; ++i) {
        s += k_alpha[n % 62];
        n /= 62;
    }
    return s;
}

void long_record(std::string& out, std::uint64_t n, const char* when) {
    const std::string first = k_first[below(12)];
    const std::string last = k_last[below(10)];
    field(out, id(n * 7919 + 17));
    out += ',';
    field(out, id(n * 104729 + 3));
    out += ',';
    out += when;
    out += ',';
    field(out, last);
    out += ',';
    field(out, first);
    out += ",user" + std::to_string(n) + "@example.fr,+33 6 " +
           std::to_string(10000000 + below(89999999)) + ",";
    field(out, k_situations[below(6)]);
    out += ',';
    field(out, comment());
    out += '\n';
}

void short_record(std::string& out, std::uint64_t n, const char* when) {
    quoted(out, id(n * 7919 + 17));
    out += ',';
    quoted(out, id(n * 104729 + 3));
    out += ',';
    quoted(out, when);
    out += ',';
    quoted(out, k_last[below(10)]);
    out += ',';
    quoted(out, k_first[below(12)]);
    out += ',';
    quoted(out, "u" + std::to_string(n) + "@example.fr");
    out += ',';
    quoted(out, std::to_string(1 + below(5)));
    out += ',';
    quoted(out, short_comment());
    out += "\r\n";
}

const char* const k_long_header =
    "\"Submission ID\",\"Respondent ID\",\"Submitted at\",\"Nom\",\"Prénom\",\"Email\","
    "\"Téléphone\",\"Situation professionnelle\",\"Commentaire\"\n";
const char* const k_short_header = "\xEF\xBB\xBF\"Submission ID\",\"Respondent ID\",\"Submitted "
                                   "at\",\"Nom\",\"Prénom\",\"Email\",\"Note\","
                                   "\"Commentaire\"\r\n";

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: files_gen BYTES [OLD_PERCENT] [long|short]\n");
        return 64;
    }
    const std::uint64_t target = std::strtoull(argv[1], nullptr, 10);
    const std::uint64_t old_pct = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 40;
    const bool short_records = argc > 3 && std::string(argv[3]) == "short";
    const std::time_t now = std::time(nullptr);
    const std::int64_t day = 86400;
    std::string out = short_records ? k_short_header : k_long_header;
    std::uint64_t written = 0;
    std::uint64_t n = 0;
    while (written < target) {
        // Old: 2 years + 2 days to 5 years ago; recent: up to 2 years - 2 days ago.
        const bool old = below(100) < old_pct;
        const std::int64_t age = old ? (732 + static_cast<std::int64_t>(below(1093))) * day
                                     : static_cast<std::int64_t>(below(728 * day));
        const std::time_t t = now - age - static_cast<std::int64_t>(below(day));
        std::tm tm{};
        gmtime_r(&t, &tm);
        char when[32];
        std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        if (short_records) {
            short_record(out, n, when);
        } else {
            long_record(out, n, when);
        }
        ++n;
        if (out.size() > (1 << 20)) {
            std::fwrite(out.data(), 1, out.size(), stdout);
            written += out.size();
            out.clear();
        }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fprintf(stderr, "%llu records\n", static_cast<unsigned long long>(n));
    return 0;
}
