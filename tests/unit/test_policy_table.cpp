#include "retentiond/config.hpp"
#include "retentiond/policy_table.hpp"
#include "retentiond/registry.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <stdexcept>

namespace retentiond {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string k_source_dir = RETENTIOND_SOURCE_DIR;

EnvLookup test_env() {
    return [](const std::string& name) -> std::optional<std::string> {
        static const std::map<std::string, std::string> vars = {
            {"SCALINGO_POSTGRESQL_URL", "postgres://dora@127.0.0.1/dora"},
            {"DATABASE_URL", "postgres://cqlp@127.0.0.1/cqlp"}};
        if (auto it = vars.find(name); it != vars.end()) {
            return it->second;
        }
        return std::nullopt;
    };
}

// The body rows of a Markdown table, cells trimmed and bold markers removed: the seeds write
// "**12 mois ...**", the generated table writes plain text.
std::vector<std::string> rows(const std::string& markdown) {
    std::vector<std::string> out;
    std::size_t start = 0;
    int line_no = 0;
    while (start < markdown.size()) {
        auto end = markdown.find('\n', start);
        if (end == std::string::npos) {
            end = markdown.size();
        }
        std::string line = markdown.substr(start, end - start);
        start = end + 1;
        if (++line_no <= 2) {
            continue; // header and separator
        }
        std::string clean;
        for (std::size_t i = 0; i < line.size(); ++i) {
            if (line.compare(i, 2, "**") == 0) {
                ++i;
            } else {
                clean += line[i];
            }
        }
        out.push_back(clean);
    }
    return out;
}

// Rows of the seeds' retention tables (/work/shared/seeds/*.md) that the shipped rules enforce,
// copied literally, bold removed, cells joined by " | ". DORA's "Cookies | 13 mois" row lives in
// the browser, not on a server, and is not enforced.
TEST(PolicyTable, DoraReproducesTheSeedRows) {
    const Config config = load_config(k_source_dir + "/policies/dora.yaml", test_env());
    const std::string md = render_policy_table(config, "md", "fr");
    EXPECT_THAT(md,
                HasSubstr("| Catégories de données | Durée de conservation |\n| --- | --- |\n"));
    EXPECT_THAT(
        rows(md),
        ElementsAre("| Données relatives au traitement de données | 12 mois à compter de la "
                    "dernière utilisation du compte. |",
                    "| Données relatives au compte du bénéficiaire Inclusion Connect | 12 "
                    "mois à compter de la dernière utilisation du compte. |"));
}

TEST(PolicyTable, CestQuiLeProReproducesTheSeedRows) {
    const Config config = load_config(k_source_dir + "/policies/cest-qui-le-pro.yaml", test_env());
    const std::string md = render_policy_table(config, "md", "fr");
    // The two search-trace rules (metric, log) share one row.
    EXPECT_THAT(rows(md),
                ElementsAre("| Données fournies dans le cadre d’une recherche sur la plateforme | "
                            "Pas de conservation au delà de la session de navigation |",
                            "| Données fournies dans le cadre du formulaire de satisfaction | 2 "
                            "ans à compter de l’envoi du formulaire |"));
}

TEST(PolicyTable, EnglishUsesTheEnglishLabels) {
    const Config config = load_config(k_source_dir + "/policies/dora.yaml", test_env());
    const std::string md = render_policy_table(config, "md", "en");
    EXPECT_THAT(md, HasSubstr("| Data category | Retention period |\n"));
    EXPECT_THAT(rows(md)[0], HasSubstr("| 12 months after the last use of the account. |"));
}

TEST(PolicyTable, HtmlIsEscaped) {
    Config config;
    Rule rule;
    rule.category = "Données <b>& \"co\"";
    rule.retain = parse_duration("2 years");
    rule.clock_label.fr = "à compter de l'envoi";
    config.rules.push_back(rule);
    config.rules.push_back(rule); // same row: rendered once
    const std::string html = render_policy_table(config, "html", "fr");
    EXPECT_EQ(html, "<table>\n"
                    "  <thead>\n"
                    "    <tr><th>Catégories de données</th><th>Durée de conservation</th></tr>\n"
                    "  </thead>\n"
                    "  <tbody>\n"
                    "    <tr><td>Données &lt;b&gt;&amp; &quot;co&quot;</td><td>2 ans à compter de "
                    "l&#39;envoi</td></tr>\n"
                    "  </tbody>\n"
                    "</table>\n");
}

TEST(PolicyTable, MarkdownPipesAreEscapedAndHiddenRulesLeftOut) {
    Config config;
    Rule rule;
    rule.category = "a | b";
    rule.retain = parse_duration("30 days");
    config.rules.push_back(rule);
    Rule hidden = rule;
    hidden.category = "hidden";
    hidden.in_policy_table = false;
    config.rules.push_back(hidden);
    EXPECT_EQ(render_policy_table(config, "md", "en"),
              "| Data category | Retention period |\n| --- | --- |\n| a \\| b | 30 days |\n");
}

TEST(PolicyTable, RejectsUnknownFormatOrLanguage) {
    const Config config;
    EXPECT_THROW(render_policy_table(config, "csv", "fr"), std::invalid_argument);
    EXPECT_THROW(render_policy_table(config, "md", "de"), std::invalid_argument);
}

} // namespace
} // namespace retentiond
