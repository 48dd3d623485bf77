// Differential property test of the postgres engine: random tables and random rules, purged by the
// engine, compared exactly with an oracle written here in plain C++ over the generated rows.
//
// The clock: a rule's cutoff is the server's now() minus retain, and now() moves. To compare
// exactly (clocks at the cutoff and 1 µs either side), most cases run with a fake now(): a
// function fakeclock.now() that shadows pg_catalog.now() because the engine's connections put
// `fakeclock` first on their search_path (libpq `options`). The oracle then knows now() to the
// microsecond, and also checks the engine's reported cutoff. Every tenth case runs on the real
// now() instead, with a bounds oracle: the reported cutoff must lie between
// oracle_cutoff(clock before the purge) and oracle_cutoff(clock after it), and the rows are then
// compared exactly against that cutoff.
//
// Seed: RETENTIOND_PROPERTY_SEED (default fixed); case count: RETENTIOND_PROPERTY_CASES. Every
// failure names the seed and the case, so `RETENTIOND_PROPERTY_SEED=S RETENTIOND_PROPERTY_ONLY=N`
// replays one case.
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
#include "retentiond/timeutil.hpp"
#include "support/oracle.hpp"
#include "support/pg_cluster.hpp"

#include <date/date.h>
#include <date/tz.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <unistd.h>

namespace retentiond::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::microseconds;

TimePoint micros_tp(std::int64_t us) {
    return TimePoint(microseconds(us));
}

std::string sql_ts(TimePoint t) {
    return date::format("%Y-%m-%d %H:%M:%S", t) + "+00";
}

// --- one generated case ----------------------------------------------------------------------

struct Row {
    std::int64_t id = 0;                 // single key, or first part of the composite key
    std::string b;                       // composite key's second part
    std::optional<TimePoint> c1;         // first clock column
    std::optional<TimePoint> c2;         // second clock column (coalesced when the rule lists both)
    std::optional<bool> held;            // hold equals true (boolean column)
    std::optional<std::string> legal;    // hold equals 'oui' (text column)
    std::optional<TimePoint> hold_until; // hold after_now
    std::optional<bool> anon;            // boolean mark
    std::optional<TimePoint> anon_at;    // timestamp mark
};

struct Case {
    std::uint64_t seed = 0;
    int number = 0;
    bool fake_clock = true;
    TimePoint now{};
    std::string zone;
    int months = 0;
    int days = 0;
    std::int64_t micros = 0;
    bool composite = false;
    bool coalesce = false;
    enum class Hold { none, equals_bool, equals_text, after_now } hold = Hold::none;
    bool anonymize = false;
    enum class Mark { none, boolean, timestamp } mark = Mark::none;
    bool clock_null_due = false;
    bool dependents = false;
    int batch_size = 5;
    std::optional<std::int64_t> max_rows;
    // The table's shape: plain, hash partitions on id (walked leaf by leaf), or range partitions
    // on c1 (leaves judged by their bounds: wholly due ones emptied whole, others walked).
    enum class Shape { plain, hash, range } shape = Shape::plain;
    bool partition_digests = false;
    std::string table; // unquoted, possibly hostile
    std::vector<Row> rows;
    std::map<std::int64_t, std::vector<std::int64_t>> d1; // parent id -> d1 ids
    std::map<std::int64_t, std::int64_t> d2;              // d2 id -> d1 id
    std::map<std::int64_t, std::int64_t> d3;              // d3 id -> parent id

    std::string where() const {
        std::ostringstream o;
        o << "seed=" << seed << " case=" << number << " (replay: RETENTIOND_PROPERTY_SEED=" << seed
          << " RETENTIOND_PROPERTY_ONLY=" << number << "; zone " << zone << ", retain " << months
          << " months " << days << " days " << micros << " us, shape "
          << (shape == Shape::plain  ? "plain"
              : shape == Shape::hash ? "hash"
                                     : "range")
          << (coalesce ? ", coalesce" : "") << ")";
        return o.str();
    }
};

const char* const k_tables[] = {"t", "users \"q\"; DROP TABLE x; --", "comptes_élèves",
                                "Mixed Case/*c*/"};

class Generator {
public:
    Generator(std::uint64_t seed, int number)
        : m_rng(seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(number + 1))) {
        m_case.seed = seed;
        m_case.number = number;
    }

    Case make() {
        auto& c = m_case;
        c.fake_clock = c.number % 10 != 9;
        c.zone = pick(2) == 0 ? "UTC" : "Europe/Paris";
        switch (pick(4)) {
        case 0:
            c.micros = (1 + pick(72)) * 3600LL * 1000000;
            break;
        case 1:
            c.days = 1 + static_cast<int>(pick(60));
            break;
        case 2:
            c.months = 1 + static_cast<int>(pick(24));
            break;
        default:
            c.months = static_cast<int>(pick(3));
            c.days = static_cast<int>(pick(10));
            c.micros = static_cast<std::int64_t>(pick(86400)) * 1000000 + 1;
        }
        c.composite = pick(4) == 0;
        c.coalesce = pick(2) == 0;
        c.hold = static_cast<Case::Hold>(pick(4));
        c.anonymize = pick(3) == 0;
        c.mark = c.anonymize ? static_cast<Case::Mark>(pick(3)) : Case::Mark::none;
        c.clock_null_due = pick(4) == 0;
        c.dependents = !c.composite && !c.anonymize && pick(2) == 0;
        c.batch_size = 1 + static_cast<int>(pick(7));
        c.table = k_tables[pick(4)];
        c.shape = static_cast<Case::Shape>(pick(4) % 3);
        if (c.shape == Case::Shape::range && c.dependents) {
            c.shape = Case::Shape::hash; // a foreign key needs a key the range leaves lack
        }
        c.partition_digests = pick(2) == 0;
        return c;
    }

    // The now() the rows are placed around: fake, or the server's clock read just before.
    void place(TimePoint now, const std::function<std::optional<TimePoint>(TimePoint)>& cutoff_of) {
        auto& c = m_case;
        c.now = now;
        const auto cut = cutoff_of(now);
        const auto span = std::chrono::duration_cast<microseconds>(
            date::days{c.months * 30 + c.days} + microseconds(c.micros));
        const int n = static_cast<int>(pick(25));
        for (int i = 0; i < n; ++i) {
            Row r;
            r.id = i + 1;
            r.b = pick_b();
            r.c1 = decidable(clock_near(*cut, span));
            if (c.coalesce) {
                r.c2 = decidable(clock_near(*cut, span));
            }
            switch (c.hold) {
            case Case::Hold::equals_bool:
                r.held = pick(3) == 0 ? std::nullopt : std::optional<bool>(pick(3) == 0);
                break;
            case Case::Hold::equals_text: {
                const char* const values[] = {"oui", "non", "Oui", "oui "};
                if (pick(4) != 0) {
                    r.legal = values[pick(4)];
                }
                break;
            }
            case Case::Hold::after_now: {
                const microseconds offsets[] = {-1us, 0us, 1us, -48h, 48h};
                if (pick(3) != 0) {
                    // On the real clock, now() is only known after the purge: stay clear of it.
                    r.hold_until = now + offsets[c.fake_clock ? pick(5) : 3 + pick(2)];
                }
                break;
            }
            case Case::Hold::none:
                break;
            }
            if (c.mark == Case::Mark::boolean && pick(3) == 0) {
                r.anon = pick(2) == 0;
            }
            if (c.mark == Case::Mark::timestamp && pick(3) == 0) {
                r.anon_at = now - 24h;
            }
            c.rows.push_back(r);
        }
        std::int64_t d1 = 0;
        std::int64_t d2 = 0;
        std::int64_t d3 = 0;
        if (c.dependents) {
            for (const auto& r : c.rows) {
                for (auto k = pick(3); k > 0; --k) {
                    c.d1[r.id].push_back(++d1);
                    for (auto j = pick(3); j > 0; --j) {
                        c.d2[++d2] = d1;
                    }
                }
                for (auto k = pick(2); k > 0; --k) {
                    c.d3[++d3] = r.id;
                }
            }
        }
    }

    std::uint64_t pick(std::uint64_t n) {
        return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(m_rng);
    }
    Case& result() { return m_case; }

private:
    std::optional<TimePoint> clock_near(TimePoint cut, microseconds span) {
        switch (pick(8)) {
        case 0:
            return std::nullopt;
        case 1:
            return cut;
        case 2:
            return cut - 1us;
        case 3:
            return cut + 1us;
        default: {
            const auto range = std::max<std::int64_t>(span.count() * 3, 1000000);
            const auto off = std::uniform_int_distribution<std::int64_t>(-range, range)(m_rng);
            return cut + microseconds(off);
        }
        }
    }
    // A clock whose clock + retain falls in a DST gap or overlap, moved 2 hours on (until it no
    // longer does): the oracle does not guess how PostgreSQL reads a local time that does not
    // exist or exists twice, as it does for the case's cutoff.
    std::optional<TimePoint> decidable(std::optional<TimePoint> clock) const {
        const auto* tz = find_zone(m_case.zone);
        while (clock && !oracle_add(*clock, m_case.months, m_case.days, m_case.micros, tz)) {
            *clock += std::chrono::hours(2);
        }
        return clock;
    }
    std::string pick_b() {
        const char* const values[] = {"a",       "O'Brien",     "x,y", "\"q\"",
                                      "é\u00e8", "line\nbreak", ";--"};
        return values[pick(7)] + std::to_string(pick(1000));
    }

    std::mt19937_64 m_rng;
    Case m_case;
};

// --- driving one case ------------------------------------------------------------------------

class PropertyPostgres : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        s_dsn = PgCluster::shared().create_database("prop_pg_" + std::to_string(::getpid()));
        pg_exec(s_dsn, "CREATE SCHEMA fakeclock;"
                       "CREATE TABLE fakeclock.clock (t timestamptz NOT NULL);"
                       "INSERT INTO fakeclock.clock VALUES ('2000-01-01 00:00:00+00');"
                       "CREATE FUNCTION fakeclock.now() RETURNS timestamptz LANGUAGE sql STABLE "
                       "AS 'SELECT t FROM fakeclock.clock';");
    }

    static std::string s_dsn;
};
std::string PropertyPostgres::s_dsn;

std::string lit(pqxx::connection& c, const std::optional<TimePoint>& t) {
    return t ? c.quote(sql_ts(*t)) : "NULL";
}

// Every row of a table as key -> row_to_json text, read with TimeZone UTC.
std::map<std::string, std::string> snapshot(pqxx::connection& c, const std::string& table,
                                            const std::string& key_expr) {
    pqxx::work tx(c);
    tx.exec0("SET LOCAL TimeZone = 'UTC'");
    std::map<std::string, std::string> out;
    for (const auto& row :
         tx.exec("SELECT " + key_expr + ", row_to_json(x)::text FROM " + table + " x")) {
        out[row[0].c_str()] = row[1].c_str();
    }
    tx.commit();
    return out;
}

std::string parent_key(const Case& c, const Row& r) {
    return c.composite ? canonical_key({std::to_string(r.id), r.b}) : std::to_string(r.id);
}

std::optional<TimePoint> case_cutoff(const Case& c, const date::time_zone* tz, TimePoint now) {
    return oracle_cutoff(now, c.months, c.days, c.micros, tz);
}

TimePoint db_clock(pqxx::connection& conn) {
    pqxx::work tx(conn);
    const auto now =
        micros_tp(tx.exec1("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
                      .as<std::int64_t>());
    tx.commit();
    return now;
}

// Deterministic now: derived from the generator so the case replays.
void pick_fake_now(Generator& gen, const Case& c, const date::time_zone* tz, TimePoint& now) {
    const auto base = date::sys_days{date::year{2019} / 1 / 1};
    for (int attempt = 0;; ++attempt) {
        std::int64_t off = static_cast<std::int64_t>(gen.pick(12ULL * 365 * 86400)) * 1000000 +
                           static_cast<std::int64_t>(gen.pick(1000000));
        auto t = base + microseconds(off);
        const auto y = date::year_month_day{date::floor<date::days>(t)}.year();
        if (gen.pick(3) == 0) { // a DST change: last Sunday of March/October, 01:00 UTC
            const auto m = gen.pick(2) == 0 ? date::March : date::October;
            const auto sunday = date::sys_days{y / m / date::Sunday[date::last]} + 1h;
            t = sunday - 72h +
                microseconds(static_cast<std::int64_t>(gen.pick(6ULL * 86400000000)));
        } else if (gen.pick(3) == 0) { // a month's last days
            const auto ym =
                date::year_month{y, date::month{static_cast<unsigned>(1 + gen.pick(12))}};
            const auto last = date::sys_days{
                date::year_month_day_last{ym.year(), date::month_day_last{ym.month()}}};
            t = last - date::days{gen.pick(3)} + microseconds(off % 86400000000LL);
        }
        if (case_cutoff(c, tz, t)) {
            now = t;
            break;
        }
        ASSERT_LT(attempt, 100) << c.where() << ": no usable now";
    }
}

// The case's now, on the fake clock or the real one. False when there is nothing to run (or an
// assertion failed).
bool set_now(Generator& gen, const Case& c, const date::time_zone* tz, pqxx::connection& conn,
             TimePoint& now) {
    if (!c.fake_clock) {
        now = db_clock(conn);
        // The real clock sits on a DST edge for this retain: nothing sound to compare.
        return case_cutoff(c, tz, now).has_value();
    }
    pick_fake_now(gen, c, tz, now);
    if (::testing::Test::HasFatalFailure()) {
        return false;
    }
    pqxx::work tx(conn);
    tx.exec0("UPDATE fakeclock.clock SET t = " + tx.quote(sql_ts(now)));
    tx.commit();
    return true;
}

// --- schema and data
// The leaves: 3 by hash; by range, 40-day leaves from 800 days before now to 200 days after, one
// from MINVALUE, one to MAXVALUE, and a DEFAULT one (rows without c1).
std::string partitions_ddl(const Case& c, const std::string& qs, const std::string& qt) {
    std::string ddl;
    if (c.shape == Case::Shape::hash) {
        for (int i = 0; i < 3; ++i) {
            ddl += "CREATE TABLE " + qs + ".h" + std::to_string(i) + " PARTITION OF " + qt +
                   " FOR VALUES WITH (MODULUS 3, REMAINDER " + std::to_string(i) + ");";
        }
    } else if (c.shape == Case::Shape::range) {
        std::string from = "MINVALUE";
        for (int k = -20; k <= 6; ++k) {
            const std::string to =
                k == 6 ? "MAXVALUE"
                       : "'" + format_utc(c.now + std::chrono::hours(24 * 40 * k)) + "'";
            ddl += "CREATE TABLE " + qs + ".r" + std::to_string(k + 20) + " PARTITION OF " + qt +
                   " FOR VALUES FROM (" + from + ") TO (" + to + ");";
            from = to;
        }
        ddl += "CREATE TABLE " + qs + ".rdefault PARTITION OF " + qt + " DEFAULT;";
    }
    return ddl;
}

void create_tables(pqxx::connection& conn, const Case& c, const std::string& qs,
                   const std::string& qt) {
    pqxx::work tx(conn);
    std::string ddl = "DROP SCHEMA IF EXISTS " + qs + " CASCADE; CREATE SCHEMA " + qs + ";";
    ddl += "CREATE TABLE " + qt + " (id bigint NOT NULL, b text NOT NULL, c1 timestamptz, " +
           "c2 timestamptz, held boolean, legal text, hold_until timestamptz, email text, " +
           "name text, anon boolean, anon_at timestamptz, payload text" +
           (c.shape == Case::Shape::range
                ? std::string(") PARTITION BY RANGE (c1);")
                : std::string(", PRIMARY KEY ") + (c.composite ? "(id, b)" : "(id)") + ")" +
                      (c.shape == Case::Shape::hash ? " PARTITION BY HASH (id);" : ";"));
    ddl += partitions_ddl(c, qs, qt);
    if (c.dependents) {
        ddl += "CREATE TABLE " + qs +
               ".d1 (id bigint PRIMARY KEY, pid bigint NOT NULL REFERENCES " + qt +
               " (id), v text);";
        ddl += "CREATE TABLE " + qs +
               ".d2 (id bigint PRIMARY KEY, d1id bigint NOT NULL REFERENCES " + qs +
               ".d1 (id), v text);";
        ddl += "CREATE TABLE " + qs + ".d3 (id bigint PRIMARY KEY, pid bigint REFERENCES " + qt +
               " (id), v text);";
    }
    tx.exec0(ddl);
    for (const auto& r : c.rows) {
        tx.exec0("INSERT INTO " + qt + " VALUES (" + std::to_string(r.id) + ", " + tx.quote(r.b) +
                 ", " + lit(conn, r.c1) + ", " + lit(conn, r.c2) + ", " +
                 (r.held ? (*r.held ? "true" : "false") : "NULL") + ", " +
                 (r.legal ? tx.quote(*r.legal) : "NULL") + ", " + lit(conn, r.hold_until) + ", " +
                 tx.quote("p" + std::to_string(r.id) + "@exemple.fr") + ", " +
                 tx.quote("Élodie \"" + r.b + "\"") + ", " +
                 (r.anon ? (*r.anon ? "true" : "false") : "NULL") + ", " + lit(conn, r.anon_at) +
                 ", " + tx.quote("payload " + r.b) + ")");
    }
    for (const auto& [pid, ids] : c.d1) {
        for (const auto id : ids) {
            tx.exec0("INSERT INTO " + qs + ".d1 VALUES (" + std::to_string(id) + ", " +
                     std::to_string(pid) + ", 'v')");
        }
    }
    for (const auto& [id, d1id] : c.d2) {
        tx.exec0("INSERT INTO " + qs + ".d2 VALUES (" + std::to_string(id) + ", " +
                 std::to_string(d1id) + ", 'w')");
    }
    for (const auto& [id, pid] : c.d3) {
        tx.exec0("INSERT INTO " + qs + ".d3 VALUES (" + std::to_string(id) + ", " +
                 std::to_string(pid) + ", 'z')");
    }
    tx.commit();
}

// canonical_key's JSON text may differ in spacing from PostgreSQL's: map by our own key.
std::map<std::string, std::string> table_rows(pqxx::connection& conn, const Case& c,
                                              const std::string& qt) {
    std::map<std::string, std::string> out;
    pqxx::work tx(conn);
    tx.exec0("SET LOCAL TimeZone = 'UTC'");
    for (const auto& row : tx.exec("SELECT id, b, row_to_json(x)::text FROM " + qt + " x")) {
        Row r;
        r.id = row[0].as<std::int64_t>();
        r.b = row[1].c_str();
        out[parent_key(c, r)] = row[2].c_str();
    }
    tx.commit();
    return out;
}

// --- the rule
Rule make_rule(const Case& c, const std::string& schema) {
    Rule rule;
    rule.name = "prop-pg";
    rule.datastore = "db";
    rule.kind = &postgres_kind();
    rule.retain.months = c.months;
    rule.retain.days = c.days;
    rule.retain.micros = c.micros;
    rule.retain.text = "generated";
    rule.action = c.anonymize ? Action::anonymize : Action::remove;
    rule.batch_size = c.batch_size;
    rule.clock_null_due = c.clock_null_due;
    rule.limits = Limits{std::nullopt, 1.0};
    if (c.anonymize) {
        rule.anonymize = {{"email", Strategy{Strategy::Kind::null_value, {}, 0, {}, {}}, {}},
                          {"name", Strategy{Strategy::Kind::fixed, "anonyme", 0, {}, {}}, {}}};
    }
    PostgresRule pg;
    pg.table = schema + "." + c.table;
    pg.key = c.composite ? std::vector<std::string>{"id", "b"} : std::vector<std::string>{"id"};
    pg.clock = c.coalesce ? std::vector<std::string>{"c1", "c2"} : std::vector<std::string>{"c1"};
    switch (c.hold) {
    case Case::Hold::equals_bool:
        pg.hold = PgHold{"held", PgHold::Kind::equals, "true"};
        break;
    case Case::Hold::equals_text:
        pg.hold = PgHold{"legal", PgHold::Kind::equals, "oui"};
        break;
    case Case::Hold::after_now:
        pg.hold = PgHold{"hold_until", PgHold::Kind::after_now, ""};
        break;
    case Case::Hold::none:
        break;
    }
    if (c.mark == Case::Mark::boolean) {
        pg.mark = "anon";
    } else if (c.mark == Case::Mark::timestamp) {
        pg.mark = "anon_at";
    }
    pg.partition_digests = c.partition_digests;
    if (c.dependents) {
        Dependent d2;
        d2.table = schema + ".d2";
        d2.column = "d1id";
        Dependent d1;
        d1.table = schema + ".d1";
        d1.column = "pid";
        d1.dependents = {d2};
        Dependent d3;
        d3.table = schema + ".d3";
        d3.column = "pid";
        d3.action = Dependent::Action::set_null;
        pg.dependents = {d1, d3};
    }
    rule.spec = spec_ptr(pg);
    return rule;
}

// --- the oracle: whether a purge must process a parent row.
// Due as the policy defines it: clock + retain <= now (PostgreSQL's timestamptz + interval:
// months, then days, then microseconds), computed here by oracle_cutoff with the signs
// flipped.
bool oracle_due(const Case& c, const date::time_zone* tz, const Row& r, TimePoint store_now) {
    const auto clock = r.c1 ? r.c1 : (c.coalesce ? r.c2 : std::nullopt);
    const auto due_at = clock ? oracle_add(*clock, c.months, c.days, c.micros, tz) : std::nullopt;
    EXPECT_TRUE(!clock || due_at) << c.where()
                                  << ": a clock the oracle cannot decide was generated";
    const bool due = clock ? due_at && *due_at <= store_now : c.clock_null_due;
    bool held = false;
    switch (c.hold) {
    case Case::Hold::equals_bool:
        held = r.held.value_or(false);
        break;
    case Case::Hold::equals_text:
        held = r.legal && *r.legal == "oui";
        break;
    case Case::Hold::after_now:
        held = r.hold_until && *r.hold_until > c.now;
        break;
    case Case::Hold::none:
        break;
    }
    const bool marked = (c.mark == Case::Mark::boolean && r.anon.value_or(false)) ||
                        (c.mark == Case::Mark::timestamp && r.anon_at.has_value());
    return due && !held && !marked;
}

struct Purged {
    RunResult result;
    TimePoint t_before{};
};

Purged purge_case(const std::string& base_dsn, const Case& c, const date::time_zone* tz,
                  const Rule& rule, RecordingJournal& journal) {
    Datastore store;
    store.name = "db";
    store.kind = &postgres_kind();
    store.spec = spec_ptr(PostgresStore(
        Secret(c.fake_clock ? base_dsn + " options='-c search_path=fakeclock,pg_catalog,public'"
                            : base_dsn)));
    Config config;
    config.daemon.max_clock_skew = std::chrono::hours(24 * 365 * 200); // fake now() is years off
    auto engine = make_postgres_engine(store, config);
    Secret key("property-key");
    RunContext ctx;
    ctx.run_id = "prop";
    ctx.tz = tz;
    ctx.audit_key = &key;
    ctx.journal = &journal;
    Purged out;
    out.t_before = c.fake_clock ? c.now : now_utc();
    out.result = engine->purge(rule, ctx);
    return out;
}

// The run's cutoff and now are the database's, within the clock readings around the purge.
void check_clock(const Case& c, const date::time_zone* tz, const RunResult& result,
                 TimePoint t_before, TimePoint t_after) {
    const auto lo = case_cutoff(c, tz, std::min(t_before, c.now));
    const auto hi = case_cutoff(c, tz, t_after);
    ASSERT_TRUE(lo && hi) << c.where();
    if (c.fake_clock) {
        ASSERT_EQ(result.cutoff, *lo)
            << c.where() << ": cutoff " << format_utc(result.cutoff) << " expected "
            << format_utc(*lo) << " now " << format_utc(c.now) << " zone " << c.zone << " retain "
            << c.months << "m " << c.days << "d " << c.micros << "us";
    } else {
        ASSERT_GE(result.cutoff, *lo) << c.where();
        ASSERT_LE(result.cutoff, *hi) << c.where();
    }
    if (c.fake_clock) {
        ASSERT_EQ(result.now, c.now) << c.where();
    } else {
        ASSERT_GE(result.now, std::min(t_before, c.now)) << c.where();
        ASSERT_LE(result.now, t_after) << c.where();
    }
}

// --- compare every row: fills `processed`.
void compare_rows(const Case& c, const std::map<std::string, std::string>& rows_before,
                  const std::map<std::string, std::string>& rows_after,
                  const std::set<std::string>& expected, std::set<std::string>& processed) {
    for (const auto& [k, json_before] : rows_before) {
        const auto it = rows_after.find(k);
        const bool gone = it == rows_after.end();
        if (!c.anonymize) {
            if (gone) {
                processed.insert(k);
            } else {
                EXPECT_EQ(it->second, json_before) << c.where() << ": an unprocessed row changed";
            }
            continue;
        }
        ASSERT_FALSE(gone) << c.where() << ": anonymize removed a row";
        if (it->second == json_before) {
            continue;
        }
        auto want = nlohmann::json::parse(json_before);
        const auto got = nlohmann::json::parse(it->second);
        want["email"] = nullptr;
        want["name"] = "anonyme";
        if (c.mark == Case::Mark::boolean) {
            want["anon"] = true;
        } else if (c.mark == Case::Mark::timestamp) {
            want["anon_at"] = got["anon_at"];
            EXPECT_TRUE(got["anon_at"].is_string()) << c.where() << ": mark not set";
        }
        EXPECT_EQ(got, want) << c.where() << ": anonymize changed more than its fields";
        processed.insert(k);
    }
    if (c.anonymize) {
        // Rows already holding the anonymized values look unchanged: count them as processed
        // when the oracle expects them (nothing else distinguishes them).
        for (const auto& k : expected) {
            const auto a = nlohmann::json::parse(rows_after.at(k));
            if (a["email"].is_null() && a["name"] == "anonyme") {
                processed.insert(k);
            }
        }
    }
}

// Dependents: rows of removed parents deleted (d1, d2 under them) or set to NULL (d3).
void check_dependents(pqxx::connection& conn, const Case& c, const std::string& qs,
                      const std::set<std::string>& processed,
                      const std::map<std::string, std::string>& d1_before,
                      const std::map<std::string, std::string>& d2_before,
                      const std::map<std::string, std::string>& d3_before) {
    std::set<std::int64_t> removed;
    for (const auto& k : processed) {
        removed.insert(std::stoll(k));
    }
    const auto d1_after = snapshot(conn, qs + ".d1", "id::text");
    const auto d2_after = snapshot(conn, qs + ".d2", "id::text");
    const auto d3_after = snapshot(conn, qs + ".d3", "id::text");
    std::set<std::int64_t> d1_removed;
    for (const auto& [pid, ids] : c.d1) {
        for (const auto id : ids) {
            const bool gone = d1_after.count(std::to_string(id)) == 0;
            EXPECT_EQ(gone, removed.count(pid) == 1) << c.where() << ": d1 row " << id;
            if (!gone) {
                EXPECT_EQ(d1_after.at(std::to_string(id)), d1_before.at(std::to_string(id)))
                    << c.where();
            } else {
                d1_removed.insert(id);
            }
        }
    }
    for (const auto& [id, d1id] : c.d2) {
        const bool gone = d2_after.count(std::to_string(id)) == 0;
        EXPECT_EQ(gone, d1_removed.count(d1id) == 1) << c.where() << ": d2 row " << id;
        if (!gone) {
            EXPECT_EQ(d2_after.at(std::to_string(id)), d2_before.at(std::to_string(id)))
                << c.where();
        }
    }
    for (const auto& [id, pid] : c.d3) {
        const auto got = nlohmann::json::parse(d3_after.at(std::to_string(id)));
        auto want = nlohmann::json::parse(d3_before.at(std::to_string(id)));
        if (removed.count(pid) == 1) {
            want["pid"] = nullptr;
        }
        EXPECT_EQ(got, want) << c.where() << ": d3 row " << id;
    }
}

// The journal: every processed row is in a committed batch of this table; no batch names a
// row the oracle did not expect.
// A partition emptied whole without digests stands for the rows its bounds hold.
void check_journal(const Case& c, const RecordingJournal& journal, const std::string& table,
                   const std::set<std::string>& processed, const std::set<std::string>& expected) {
    std::set<std::string> journaled;
    for (const auto& o : journal.m_outcomes) {
        const auto& intent = journal.m_intents.at(o.intent);
        if (!o.committed || (intent.target != table && !intent.partition)) {
            continue;
        }
        journaled.insert(intent.keys.begin(), intent.keys.end());
        if (!intent.partition || !intent.keys.empty()) {
            continue;
        }
        EXPECT_TRUE(!c.partition_digests || intent.partition->rows == 0)
            << c.where() << ": a partition intent without digests";
        const auto& p = *intent.partition;
        for (const auto& r : c.rows) {
            const auto us = r.c1 ? std::optional<std::int64_t>(
                                       std::chrono::duration_cast<std::chrono::microseconds>(
                                           r.c1->time_since_epoch())
                                           .count())
                                 : std::nullopt;
            if (us && *us < p.to_us && (!p.from_us || *us >= *p.from_us)) {
                journaled.insert(parent_key(c, r));
            }
        }
    }
    for (const auto& k : processed) {
        EXPECT_EQ(journaled.count(k), 1U) << c.where() << ": processed without a committed intent";
    }
    for (const auto& k : journaled) {
        EXPECT_EQ(expected.count(k), 1U) << c.where() << ": journal names a row not due";
    }
}

// Sometimes max_rows one below the due count (refused, nothing touched) or exactly at it.
void limit_blast_radius(Generator& gen, Case& c, const date::time_zone* tz, Rule& rule) {
    if (gen.pick(8) == 0) {
        // Blast radius: max_rows one below (refused, nothing touched) or exactly at the count.
        std::int64_t n = 0;
        for (const auto& r : c.rows) {
            n += oracle_due(c, tz, r, c.now) ? 1 : 0;
        }
        if (c.fake_clock && n > 0 && !c.anonymize) {
            c.max_rows = n - static_cast<std::int64_t>(gen.pick(2));
            rule.limits.max_rows = c.max_rows;
        }
    }
}

void run_case(const std::string& base_dsn, std::uint64_t seed, int number, int& checked_rows) {
    Generator gen(seed, number);
    Case c = gen.make();
    const auto* tz = find_zone(c.zone);
    pqxx::connection conn(base_dsn);
    TimePoint now{};
    if (!set_now(gen, c, tz, conn, now)) {
        return;
    }
    gen.place(now, [&](TimePoint t) { return case_cutoff(c, tz, t); });
    c = gen.result();

    const std::string schema = "c" + std::to_string(number);
    const std::string qs = conn.quote_name(schema);
    const std::string qt = qs + "." + conn.quote_name(c.table);
    create_tables(conn, c, qs, qt);
    const auto rows_before = table_rows(conn, c, qt);
    std::map<std::string, std::string> d1_before;
    std::map<std::string, std::string> d2_before;
    std::map<std::string, std::string> d3_before;
    if (c.dependents) {
        d1_before = snapshot(conn, qs + ".d1", "id::text");
        d2_before = snapshot(conn, qs + ".d2", "id::text");
        d3_before = snapshot(conn, qs + ".d3", "id::text");
    }
    Rule rule = make_rule(c, schema);
    limit_blast_radius(gen, c, tz, rule);

    RecordingJournal journal;
    const auto [result, t_before] = purge_case(base_dsn, c, tz, rule, journal);
    const TimePoint t_after = c.fake_clock ? c.now : db_clock(conn);
    check_clock(c, tz, result, t_before, t_after);
    if (::testing::Test::HasFatalFailure()) {
        return;
    }
    const auto cut = result.cutoff;
    std::set<std::string> expected;
    for (const auto& r : c.rows) {
        if (oracle_due(c, tz, r, result.now)) {
            expected.insert(parent_key(c, r));
        }
    }
    const bool refused = c.max_rows && static_cast<std::int64_t>(expected.size()) > *c.max_rows;
    if (refused) {
        EXPECT_EQ(result.status, RunResult::Status::refused) << c.where() << ": " << result.message;
        expected.clear();
    } else {
        ASSERT_EQ(result.status, RunResult::Status::ok) << c.where() << ": " << result.message;
        EXPECT_EQ(result.processed, static_cast<std::int64_t>(expected.size())) << c.where();
    }

    std::set<std::string> processed;
    compare_rows(c, rows_before, table_rows(conn, c, qt), expected, processed);
    if (::testing::Test::HasFatalFailure()) {
        return;
    }
    EXPECT_EQ(processed, expected)
        << c.where() << ": processed rows differ from the oracle (cutoff " << format_utc(cut)
        << ", path " << result.path << ", "
        << (result.counters.count("verification.proven_without_count") != 0
                ? "verification proven"
                : "verification counted")
        << ")";
    for (const auto& r : c.rows) {
        const auto clock = r.c1 ? r.c1 : (c.coalesce ? r.c2 : std::nullopt);
        if (clock && (*clock == cut || *clock == cut - 1us || *clock == cut + 1us)) {
            ++checked_rows; // a boundary row, compared exactly
        }
    }
    if (c.dependents) {
        check_dependents(conn, c, qs, processed, d1_before, d2_before, d3_before);
    }
    check_journal(c, journal, spec_of<PostgresRule>(rule).table, processed, expected);

    pqxx::work tx(conn);
    tx.exec0("DROP SCHEMA " + qs + " CASCADE");
    tx.commit();
}

// Regression: the engine's cutoff used to be `now() - retain`, but the policy defines due as
// `clock + retain <= now`. With a retain mixing months and days the two differ by days:
// PostgreSQL subtracts the months first, so a record could be deleted days before its
// clock + retain was reached.
TEST_F(PropertyPostgres, MixedRetainNeverDueEarly) {
    const auto* tz = find_zone("UTC");
    const TimePoint now = date::sys_days{date::year{2023} / 3 / 24} + 14h + 14min + 37s;
    const int months = 19;
    const int days = 30;
    const std::int64_t micros = 79LL * 3600000000LL;
    const auto cut = *oracle_cutoff(now, months, days, micros, tz);         // PostgreSQL's cutoff
    const auto clock = cut;                                                 // due for the engine
    const auto due_at = *oracle_cutoff(clock, -months, -days, -micros, tz); // clock + retain
    ASSERT_GT(due_at, now) << "the record is not due yet under the policy's definition";
    pqxx::connection conn(s_dsn);
    {
        pqxx::work tx(conn);
        tx.exec0("UPDATE fakeclock.clock SET t = " + tx.quote(sql_ts(now)));
        tx.exec0("DROP SCHEMA IF EXISTS mixed CASCADE; CREATE SCHEMA mixed;"
                 "CREATE TABLE mixed.t (id bigint PRIMARY KEY, c1 timestamptz)");
        tx.exec0("INSERT INTO mixed.t VALUES (1, " + tx.quote(sql_ts(clock)) + ")");
        tx.commit();
    }
    Rule rule;
    rule.name = "mixed";
    rule.datastore = "db";
    rule.kind = &postgres_kind();
    rule.retain.months = months;
    rule.retain.days = days;
    rule.retain.micros = micros;
    rule.retain.text = "19 months 30 days 79 hours";
    rule.limits = Limits{std::nullopt, 1.0};
    PostgresRule pg;
    pg.table = "mixed.t";
    pg.key = {"id"};
    pg.clock = {"c1"};
    rule.spec = spec_ptr(pg);
    Datastore store;
    store.name = "db";
    store.spec = spec_ptr(
        PostgresStore(Secret(s_dsn + " options='-c search_path=fakeclock,pg_catalog,public'")));
    Config config;
    config.daemon.max_clock_skew = std::chrono::hours(24 * 365 * 200); // fake now() is years off
    auto engine = make_postgres_engine(store, config);
    RunContext ctx;
    ctx.run_id = "mixed";
    ctx.tz = tz;
    const auto result = engine->purge(rule, ctx);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(pg_scalar(s_dsn, "SELECT count(*) FROM mixed.t"), "1")
        << "deleted at " << format_utc(now) << " although clock + retain = " << format_utc(due_at);
}

TEST_F(PropertyPostgres, EngineMatchesOracle) {
    const auto seed = env_u64("RETENTIOND_PROPERTY_SEED", 20261126);
    const auto cases = static_cast<int>(env_u64("RETENTIOND_PROPERTY_CASES", 300));
    const auto only = std::getenv("RETENTIOND_PROPERTY_ONLY");
    std::cout << "property seed " << seed << ", " << cases << " cases\n";
    int boundary_rows = 0;
    for (int n = 0; n < cases; ++n) {
        if (only != nullptr && std::stoi(only) != n) {
            continue;
        }
        run_case(s_dsn, seed, n, boundary_rows);
        if (HasFailure()) {
            break; // the first failing case is the one to replay
        }
    }
    std::cout << boundary_rows << " rows at the cutoff or 1 us from it compared exactly\n";
    if (only == nullptr && cases >= 100) {
        EXPECT_GT(boundary_rows, cases / 4);
    }
}

} // namespace
} // namespace retentiond::test
