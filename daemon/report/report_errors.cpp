#include "retentiond/report_errors.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>

namespace retentiond {

namespace {

constexpr std::array<ErrorText, 13> k_texts = {{
    {"RD-ERROR", "erreur inattendue (détail dans le journal du service)",
     "unexpected error (details in the service log)"},
    {"RD-STORE-UNAVAILABLE", "le service de données ne répond pas",
     "the datastore does not answer"},
    {"RD-STORE-AUTH", "le service de données refuse l'identification de retentiond",
     "the datastore refuses retentiond's credentials"},
    {"RD-STORE-PERMISSION", "retentiond n'a pas les droits nécessaires sur le service de données",
     "retentiond lacks a privilege on the datastore"},
    {"RD-STORE-TIMEOUT", "le service de données a mis trop de temps à répondre (délai dépassé)",
     "the datastore took too long to answer (timeout)"},
    {"RD-STORE-SQL", "le service de données a refusé une requête (code SQLSTATE dans le journal)",
     "the datastore refused a query (SQLSTATE in the log)"},
    {"RD-LIMIT-MAX-ROWS", "plus d'enregistrements échus que la limite max_rows de la règle",
     "more due records than the rule's max_rows limit"},
    {"RD-LIMIT-MAX-FRACTION",
     "une part des enregistrements échus supérieure à la limite max_fraction de la règle",
     "a larger share of due records than the rule's max_fraction limit"},
    {"RD-CLOCK-SKEW", "l'horloge du serveur et celle du service de données diffèrent trop",
     "the host's clock and the datastore's differ too much"},
    {"RD-REFUSED", "exécution refusée par une limite de la règle",
     "run refused by a limit of the rule"},
    {"RD-DATA-UNPARSEABLE", "un enregistrement n'a pas pu être lu (format inattendu)",
     "a record could not be read (unexpected format)"},
    {"RD-IO", "erreur d'écriture ou de lecture sur le disque", "disk read or write error"},
    {"RD-NOTICE", "l'envoi des avertissements avant suppression a échoué",
     "sending the notices before deletion failed"},
}};

bool contains(std::string_view text, std::string_view needle) {
    const auto it =
        std::search(text.begin(), text.end(), needle.begin(), needle.end(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
        });
    return it != text.end();
}

bool contains_any(std::string_view text, std::initializer_list<std::string_view> needles) {
    return std::any_of(needles.begin(), needles.end(),
                       [&](std::string_view n) { return contains(text, n); });
}

std::string_view classify_sqlstate(std::string_view state) {
    if (state == "57014" || state == "55P03") {
        return "RD-STORE-TIMEOUT"; // statement_timeout, lock_timeout
    }
    if (state == "42501") {
        return "RD-STORE-PERMISSION";
    }
    if (state == "28P01" || state == "28000") {
        return "RD-STORE-AUTH";
    }
    return "RD-STORE-SQL";
}

std::string str(const nlohmann::json& j, const char* key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

} // namespace

const ErrorText& error_text(std::string_view code) {
    for (const auto& t : k_texts) {
        if (t.code == code) {
            return t;
        }
    }
    return k_texts[0];
}

std::string_view classify_error(std::string_view detail, bool unavailable) {
    if (contains_any(detail, {"password authentication failed", "WRONGPASS", "NOAUTH",
                              "invalid username-password"})) {
        return "RD-STORE-AUTH";
    }
    if (contains_any(detail, {"permission denied", "NOPERM"})) {
        return "RD-STORE-PERMISSION";
    }
    if (contains_any(detail, {"statement timeout", "lock timeout", "timed out"})) {
        return "RD-STORE-TIMEOUT";
    }
    if (unavailable || contains_any(detail, {"cannot connect", "could not connect",
                                             "connection refused", "unavailable", "unreachable"})) {
        return "RD-STORE-UNAVAILABLE";
    }
    if (contains(detail, "SQLSTATE")) {
        return "RD-STORE-SQL";
    }
    if (contains_any(detail, {"does not parse", "unparseable", "unterminated", "invalid record"})) {
        return "RD-DATA-UNPARSEABLE";
    }
    if (contains_any(detail, {"notices:", "notifier"})) {
        return "RD-NOTICE";
    }
    if (contains_any(detail, {"rewrite failed", "no space left", "i/o error", "read error",
                              "cannot write", "cannot open"})) {
        return "RD-IO";
    }
    return "RD-ERROR";
}

std::string_view classify_event(const nlohmann::json& event) {
    const std::string type = str(event, "type");
    if (type == "refusal" || type == "refused") {
        const std::string why =
            str(event, "limit") + " " + str(event, "reason") + " " + str(event, "message");
        if (contains(why, "max_rows")) {
            return "RD-LIMIT-MAX-ROWS";
        }
        if (contains(why, "max_fraction")) {
            return "RD-LIMIT-MAX-FRACTION";
        }
        if (contains(why, "clock_skew")) {
            return "RD-CLOCK-SKEW";
        }
        return "RD-REFUSED";
    }
    const auto unavailable = event.find("unavailable");
    const bool down =
        unavailable != event.end() && unavailable->is_boolean() && unavailable->get<bool>();
    if (const std::string state = str(event, "sqlstate"); !state.empty() && !down) {
        return classify_sqlstate(state);
    }
    return classify_error(str(event, "message") + " " + str(event, "reason"), down);
}

std::string error_for_report(std::string_view code, std::string_view lang) {
    const ErrorText& t = error_text(code);
    return std::string(t.get(lang)) + " (" + std::string(t.code) + ")";
}

} // namespace retentiond
