// Writes a Tally-shaped satisfaction-form export of about N bytes to stdout: free-text answers
// with commas, doubled quotes, line breaks and accents; a given share of records older than
// 2 years. Deterministic (fixed seed) so runs compare.
//   files_gen BYTES [OLD_PERCENT=40] > Form_Submissions_2026-01-01.csv
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

std::string id(std::uint64_t n) {
    static const char k_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::string s = "m";
    for (int i = 0; i < 6; ++i) {
        s += k_alpha[n % 62];
        n /= 62;
    }
    return s;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: files_gen BYTES [OLD_PERCENT]\n");
        return 64;
    }
    const std::uint64_t target = std::strtoull(argv[1], nullptr, 10);
    const std::uint64_t old_pct = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 40;
    const std::time_t now = std::time(nullptr);
    const std::int64_t day = 86400;
    std::string out = "\"Submission ID\",\"Respondent ID\",\"Submitted at\",\"Nom\",\"Prénom\","
                      "\"Email\",\"Téléphone\",\"Situation professionnelle\",\"Commentaire\"\n";
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
