// Differential property test of the files engine on CSV exports: random hostile files (quotes,
// commas, semicolons, line breaks inside fields, accents, CRLF or LF), random rules (retain in
// hours, days, months or mixed; UTC or Europe/Paris; delete or anonymize; hold; clock_null), purged
// by the engine and compared with an oracle written here: its own CSV splitter and its own
// calendar arithmetic.
//
// The clock: the engine reads the host clock. The oracle brackets it: the engine's reported cutoff
// must be exact for some now between the clocks before and after the purge (cutoff + retain <= now
// < cutoff + 1 µs + retain, with the oracle's own addition), and the records are then compared
// exactly against that cutoff (clocks near it and 1 µs either side are generated, in ISO 8601
// with microseconds).
//
// Seed: RETENTIOND_PROPERTY_SEED; cases: RETENTIOND_PROPERTY_CASES; one case:
// RETENTIOND_PROPERTY_ONLY.
#include "contract/contract.hpp"
#include "files_kind.hpp"
#include "retentiond/timeutil.hpp"
#include "support/oracle.hpp"
#include "support/process.hpp"

#include <date/date.h>
#include <date/tz.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>

namespace retentiond::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::microseconds;
namespace fs = std::filesystem;

// The oracle's CSV: records with their exact bytes, and their decoded fields.
struct CsvRecord {
    std::string raw;
    std::vector<std::string> fields;
};

std::vector<CsvRecord> split_csv(const std::string& text, char delim) {
    std::vector<CsvRecord> out;
    CsvRecord cur;
    std::string field;
    bool quoted = false;
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char ch = text[i];
        if (quoted) {
            if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') {
                field += '"';
                ++i;
            } else if (ch == '"') {
                quoted = false;
            } else {
                field += ch;
            }
        } else if (ch == '"') {
            quoted = true;
        } else if (ch == delim) {
            cur.fields.push_back(field);
            field.clear();
        } else if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
            // the CR of a CRLF terminator
        } else if (ch == '\n') {
            cur.fields.push_back(field);
            field.clear();
            cur.raw = text.substr(start, i + 1 - start);
            out.push_back(cur);
            cur = CsvRecord{};
            start = i + 1;
        } else {
            field += ch;
        }
    }
    if (start < text.size()) {
        cur.fields.push_back(field);
        cur.raw = text.substr(start);
        out.push_back(cur);
    }
    return out;
}

std::string quote_field(const std::string& v, char delim) {
    if (v.find_first_of(std::string("\"\r\n") + delim) == std::string::npos) {
        return v;
    }
    std::string out = "\"";
    for (const char ch : v) {
        out += ch;
        if (ch == '"') {
            out += '"';
        }
    }
    return out + "\"";
}

struct Gen {
    std::mt19937_64 rng;
    std::uint64_t pick(std::uint64_t n) {
        return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng);
    }
    std::string hostile() {
        const char* const parts[] = {"Dupont", ", ",   "\"", "\"\"", ";", "\n", "\r\n", "é",
                                     "Ł",      "🙂", " ",  "'",    "x", "\t", "=1+2"};
        std::string s;
        for (auto n = pick(5); n > 0; --n) {
            s += parts[pick(15)];
        }
        return s;
    }
};

struct Expect {
    std::string file;
    std::string key;
    bool process = false;
};

// A case's retain (hours, days, months or a mix) and time zone.
struct Retain {
    std::string zone;
    const date::time_zone* tz = nullptr;
    int months = 0;
    int days = 0;
    std::int64_t micros = 0;
};

Retain pick_retain(Gen& g) {
    Retain r;
    r.zone = g.pick(2) == 0 ? "UTC" : "Europe/Paris";
    r.tz = find_zone(r.zone);
    switch (g.pick(4)) {
    case 0:
        r.micros = static_cast<std::int64_t>(1 + g.pick(72)) * 3600000000LL;
        break;
    case 1:
        r.days = 1 + static_cast<int>(g.pick(60));
        break;
    case 2:
        r.months = 1 + static_cast<int>(g.pick(24));
        break;
    default:
        r.months = static_cast<int>(g.pick(3));
        r.days = static_cast<int>(g.pick(10));
        r.micros = static_cast<std::int64_t>(g.pick(86400)) * 1000000 + 1;
    }
    return r;
}

// A case's format and rule options.
struct Options {
    bool iso = false; // ISO 8601 with µs and Z, else "%Y-%m-%d %H:%M:%S" local
    bool anonymize = false;
    bool with_hold = false;
    bool null_due = false;
    char delim = ',';
    std::string eol;
};

Options pick_options(Gen& g) {
    Options o;
    o.iso = g.pick(2) == 0;
    o.anonymize = g.pick(3) == 0;
    o.with_hold = g.pick(2) == 0;
    o.null_due = g.pick(4) == 0;
    o.delim = g.pick(3) == 0 ? ';' : ',';
    o.eol = g.pick(2) == 0 ? "\r\n" : "\n";
    return o;
}

// The exports a case writes: each file's text, and each record's clock and hold.
struct Written {
    std::map<std::string, std::string> originals;
    std::map<std::string, std::map<std::string, std::optional<TimePoint>>> clocks;
    std::map<std::string, std::map<std::string, bool>> holds;
};

// A record's clock around the estimated cutoff est and its text (empty: none, or a local time
// DST makes ambiguous, which is skipped).
std::optional<TimePoint> pick_clock(Gen& g, TimePoint est, microseconds span, const Retain& r,
                                    const Options& o, std::string& when, bool& skip) {
    const auto kind = g.pick(8);
    if (kind == 0) {
        return std::nullopt;
    }
    TimePoint t = est;
    if (kind == 1 || kind == 2 || kind == 3) {
        t = est + microseconds(static_cast<std::int64_t>(kind) - 2); // -1, 0, +1 µs
    } else {
        const auto range = std::max<std::int64_t>(span.count() * 3, 1000000);
        t = est + microseconds(std::uniform_int_distribution<std::int64_t>(-range, range)(g.rng));
    }
    if (o.iso) {
        when = date::format("%Y-%m-%dT%H:%M:%SZ", t); // %S carries the µs
        return t;
    }
    // Whole seconds in local time; skip local times that DST makes ambiguous.
    const auto s = date::floor<std::chrono::seconds>(t);
    const auto local = r.tz->to_local(s);
    if (r.tz->get_info(local).result != date::local_info::unique) {
        skip = true;
        return std::nullopt;
    }
    when = date::format("%Y-%m-%d %H:%M:%S", local);
    return s;
}

// Writes 1 to 3 exports of up to 15 records each under dir, and a decoy outside the glob.
Written write_files(TempDir& dir, Gen& g, TimePoint est, const Retain& r, const Options& o) {
    Written w;
    const auto span = microseconds(r.micros) + date::days{r.months * 30 + r.days};
    const char delim = o.delim;
    const int nfiles = 1 + static_cast<int>(g.pick(3));
    int serial = 0;
    for (int f = 0; f < nfiles; ++f) {
        const auto name =
            "sub" + std::to_string(f) + "/F" + std::to_string(f) + "_Submissions_x.csv";
        std::string text = std::string("ID") + delim + "Quand" + delim + "Nom" + delim + "Note" +
                           delim + "Hold" + o.eol;
        for (auto n = 1 + g.pick(15); n > 0; --n) {
            const auto key = "k" + std::to_string(++serial) + (g.pick(4) == 0 ? "é,\"q\"" : "");
            std::string when;
            bool skip = false;
            const auto clock = pick_clock(g, est, span, r, o, when, skip);
            if (skip) {
                continue;
            }
            const bool held = o.with_hold && g.pick(4) == 0;
            const std::string hold_value =
                held ? "yes" : (g.pick(3) == 0 ? (g.pick(2) == 0 ? "Yes" : "yes ") : "");
            text += quote_field(key, delim) + delim + when + delim +
                    quote_field(g.hostile(), delim) + delim + quote_field(g.hostile(), delim) +
                    delim + hold_value + o.eol;
            w.clocks[name][key] = clock;
            w.holds[name][key] = held;
        }
        dir.write(name, text);
        w.originals[name] = text;
    }
    dir.write("decoy.csv", "ID,Quand\n1,2001-01-01 00:00:00\n");
    return w;
}

Rule make_rule(const Retain& r, const Options& o, Gen& g) {
    Rule rule;
    rule.name = "prop-files";
    rule.datastore = "exports";
    rule.kind = &files_kind();
    rule.retain.months = r.months;
    rule.retain.days = r.days;
    rule.retain.micros = r.micros;
    rule.retain.text = "generated";
    rule.action = o.anonymize ? Action::anonymize : Action::remove;
    rule.batch_size = 1 + static_cast<int>(g.pick(5));
    rule.clock_null_due = o.null_due;
    rule.limits = Limits{std::nullopt, 1.0};
    if (o.anonymize) {
        rule.anonymize = {{"Nom", Strategy{Strategy::Kind::null_value, {}, 0, {}, {}}, {}},
                          {"Note", Strategy{Strategy::Kind::fixed, "anonyme", 0, {}, {}}, {}}};
    }
    FilesRule spec;
    spec.files = "**/*_Submissions_*.csv";
    spec.format = FilesRule::Format::csv;
    spec.clock.field = "Quand";
    spec.clock.format = o.iso ? "" : "%Y-%m-%d %H:%M:%S";
    if (o.with_hold) {
        spec.hold = FilesHold{"Hold", "yes"};
    }
    spec.key_field = "ID";
    rule.spec = spec_ptr(spec);
    return rule;
}

// What the oracle expects of one file at cutoff cut: the header and the records that stay
// (anonymized ones with an empty raw, compared by fields); the keys to process go to expected.
std::vector<CsvRecord> oracle_file(const std::vector<CsvRecord>& before,
                                   const std::map<std::string, std::optional<TimePoint>>& clocks,
                                   const std::map<std::string, bool>& holds, const Options& o,
                                   TimePoint cut, TimePoint est, int& boundary,
                                   std::set<std::string>& expected) {
    std::vector<CsvRecord> want;
    want.push_back(before.at(0));
    for (std::size_t i = 1; i < before.size(); ++i) {
        const auto& k = before[i].fields.at(0);
        const auto& clock = clocks.at(k);
        const bool due = clock ? *clock <= cut : o.null_due;
        if (clock && *clock >= est - 1us && *clock <= est + 1us) {
            ++boundary; // between the two bounds: decided by the reported cutoff alone
        }
        const bool process = due && !holds.at(k);
        if (process) {
            expected.insert(k);
        }
        if (!process) {
            want.push_back(before[i]);
        } else if (o.anonymize) {
            auto r = before[i];
            r.fields[2] = "";
            r.fields[3] = "anonyme";
            r.raw.clear(); // compared by fields
            want.push_back(r);
        }
    }
    return want;
}

// Compares one file after the purge with want; the keys it processed go to processed.
void check_file(const TempDir& dir, const std::string& name, const std::vector<CsvRecord>& before,
                const std::vector<CsvRecord>& want, const Options& o, const std::string& where,
                std::set<std::string>& processed) {
    const auto path = dir.file(name);
    if (want.size() == 1) {
        EXPECT_FALSE(fs::exists(path)) << where << ": a file with no record left stays";
        for (std::size_t i = 1; i < before.size(); ++i) {
            processed.insert(before[i].fields.at(0));
        }
        return;
    }
    ASSERT_TRUE(fs::exists(path)) << where << ": " << name << " deleted";
    const auto after = split_csv(read_file(path), o.delim);
    ASSERT_EQ(after.size(), want.size()) << where << ": " << name;
    for (std::size_t i = 0; i < want.size(); ++i) {
        if (want[i].raw.empty()) {
            EXPECT_EQ(after[i].fields, want[i].fields) << where << ": anonymized record " << i;
            processed.insert(want[i].fields.at(0));
        } else {
            EXPECT_EQ(after[i].raw, want[i].raw)
                << where << ": " << name << " record " << i << " changed";
        }
    }
    if (o.anonymize) {
        return;
    }
    std::set<std::string> kept;
    for (const auto& r : after) {
        kept.insert(r.fields.at(0));
    }
    for (std::size_t i = 1; i < before.size(); ++i) {
        if (kept.count(before[i].fields.at(0)) == 0) {
            processed.insert(before[i].fields.at(0));
        }
    }
}

// The committed journal's keys.
std::set<std::string> journaled_keys(const RecordingJournal& journal) {
    std::set<std::string> journaled;
    for (const auto& o : journal.m_outcomes) {
        if (o.committed) {
            const auto& keys = journal.m_intents.at(o.intent).keys;
            journaled.insert(keys.begin(), keys.end());
        }
    }
    return journaled;
}

void run_case(std::uint64_t seed, int number, int& boundary) {
    const auto where = "seed=" + std::to_string(seed) + " case=" + std::to_string(number) +
                       " (replay: RETENTIOND_PROPERTY_SEED=" + std::to_string(seed) +
                       " RETENTIOND_PROPERTY_ONLY=" + std::to_string(number) + ")";
    Gen g{std::mt19937_64(seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(number + 1)))};
    const Retain rt = pick_retain(g);
    const auto est = oracle_cutoff(now_utc(), rt.months, rt.days, rt.micros, rt.tz);
    if (!est) {
        return; // the host clock sits on a DST edge for this retain
    }
    const Options o = pick_options(g);
    TempDir dir;
    Written w = write_files(dir, g, *est, rt, o);
    const Rule rule = make_rule(rt, o, g);

    Datastore store;
    store.name = "exports";
    store.kind = &files_kind();
    store.spec = spec_ptr(FilesStore(dir.path()));
    Config config;
    config.daemon.timezone = rt.zone;
    auto engine = make_files_engine(store, config);
    RecordingJournal journal;
    Secret key("property-key");
    RunContext ctx;
    ctx.run_id = "prop";
    ctx.tz = rt.tz;
    ctx.audit_key = &key;
    ctx.journal = &journal;
    const auto t_before = now_utc();
    const auto result = engine->purge(rule, ctx);
    const auto t_after = now_utc();
    ASSERT_EQ(result.status, RunResult::Status::ok) << where << ": " << result.message;
    const auto wrong =
        exact_cutoff_error(result.cutoff, t_before, t_after, rt.months, rt.days, rt.micros, rt.tz);
    ASSERT_TRUE(wrong.empty()) << where << ": " << wrong << " retain " << rt.months << "m "
                               << rt.days << "d " << rt.micros << "us " << rt.zone;
    const auto cut = result.cutoff;

    std::set<std::string> expected;
    std::set<std::string> processed;
    for (const auto& [name, text] : w.originals) {
        const auto before = split_csv(text, o.delim);
        const auto want =
            oracle_file(before, w.clocks[name], w.holds[name], o, cut, *est, boundary, expected);
        check_file(dir, name, before, want, o, where, processed);
        if (::testing::Test::HasFatalFailure()) {
            return;
        }
    }
    EXPECT_EQ(processed, expected) << where << ": cutoff " << format_utc(cut);
    EXPECT_EQ(result.processed, static_cast<std::int64_t>(expected.size())) << where;
    EXPECT_EQ(read_file(dir.file("decoy.csv")), "ID,Quand\n1,2001-01-01 00:00:00\n") << where;
    EXPECT_EQ(journaled_keys(journal), expected) << where << ": committed journal keys";
}

TEST(PropertyFiles, EngineMatchesOracle) {
    const auto seed = env_u64("RETENTIOND_PROPERTY_SEED", 20261126);
    const auto cases = static_cast<int>(env_u64("RETENTIOND_PROPERTY_CASES", 800));
    const char* only = std::getenv("RETENTIOND_PROPERTY_ONLY");
    std::cout << "property seed " << seed << ", " << cases << " cases\n";
    int boundary = 0;
    for (int n = 0; n < cases; ++n) {
        if (only != nullptr && std::stoi(only) != n) {
            continue;
        }
        run_case(seed, n, boundary);
        if (::testing::Test::HasFailure()) {
            break;
        }
    }
    std::cout << boundary
              << " records at the generation-time cutoff or 1 us from it compared exactly\n";
}

// The cutoff arithmetic of the files and redis engines (timeutil's subtract()) against the
// policy's definition, over random instants, month ends and DST changes: a record exactly at the
// cutoff must be due (clock + retain <= now), so no cutoff ever deletes early.
void cutoff_never_early(const char* zone) {
    const auto seed = env_u64("RETENTIOND_PROPERTY_SEED", 20261126);
    std::mt19937_64 rng(seed);
    const auto pick = [&](std::uint64_t n) {
        return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng);
    };
    int compared = 0;
    for (int i = 0; i < 50000; ++i) {
        const auto* tz = find_zone(zone);
        const auto base = date::sys_days{date::year{2019} / 1 / 1};
        TimePoint now =
            base + microseconds(static_cast<std::int64_t>(pick(12ULL * 365 * 86400000000ULL)));
        const auto y = date::year_month_day{date::floor<date::days>(now)}.year();
        if (pick(3) == 0) {
            const auto m = pick(2) == 0 ? date::March : date::October;
            now = date::sys_days{y / m / date::Sunday[date::last]} + 1h - 72h +
                  microseconds(static_cast<std::int64_t>(pick(6ULL * 86400000000ULL)));
        } else if (pick(3) == 0) {
            const date::year_month ym{y, date::month{static_cast<unsigned>(1 + pick(12))}};
            now = date::sys_days{date::year_month_day_last{ym.year(),
                                                           date::month_day_last{ym.month()}}} -
                  date::days{pick(3)} +
                  microseconds(static_cast<std::int64_t>(pick(86400000000ULL)));
        }
        Duration d;
        d.months = static_cast<int>(pick(3) == 0 ? 0 : pick(30));
        d.days = static_cast<int>(pick(2) == 0 ? 0 : pick(45));
        d.micros = pick(2) == 0 ? 0 : static_cast<std::int64_t>(pick(200ULL * 3600000000ULL));
        d.text = "generated";
        const auto cut = subtract(now, d, tz);
        const auto back = oracle_add(cut, d.months, d.days, d.micros, tz);
        if (!back || !oracle_cutoff(now, d.months, d.days, 0, tz)) {
            // A local result in a DST gap or overlap has no single right answer (seen: a cutoff
            // resolved past a spring-forward gap makes a record due 1 h early; see the report).
            continue;
        }
        ++compared;
        ASSERT_LE(*back, now) << "seed=" << seed << " i=" << i << " now " << format_utc(now)
                              << " zone " << tz->name() << " retain " << d.months << " months "
                              << d.days << " days " << d.micros << " us: cutoff " << format_utc(cut)
                              << " + retain = " << format_utc(*back);
    }
    EXPECT_GT(compared, 40000);
}

TEST(PropertyFiles, CutoffNeverMakesARecordDueEarly) {
    cutoff_never_early("UTC");
}

// Regression: subtract() used to undo the calendar steps in reverse; in Europe/Paris, when a
// step landed in a spring-forward gap, the cutoff came out 1 h too late, so a record at the cutoff
// was due 1 h before clock + retain <= now. Seed 20261126 found it at once.
TEST(PropertyFiles, CutoffNeverMakesARecordDueEarlyAcrossDst) {
    cutoff_never_early("Europe/Paris");
}

} // namespace
} // namespace retentiond::test
