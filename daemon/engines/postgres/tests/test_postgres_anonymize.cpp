// action: anonymize on a real PostgreSQL: every strategy, mark, once-per-run, dependents.
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
#include "retentiond/anonymize.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <unistd.h>

namespace retentiond::test {
namespace {

Strategy strategy(Strategy::Kind kind) {
    Strategy s;
    s.kind = kind;
    return s;
}

class PostgresAnonymizeTest : public ::testing::Test {
protected:
    void SetUp() override {
        static std::atomic<int> counter{0};
        m_dsn = PgCluster::shared().create_database("anon_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        pg_exec(m_dsn,
                "CREATE TABLE profiles (id bigint PRIMARY KEY, seen timestamptz, anonymized "
                "boolean NOT NULL DEFAULT false, anonymized_at timestamptz, name text, email text "
                "UNIQUE, token text UNIQUE, ip inet, ip_text text, url text, lat double "
                "precision, lat_text text, payload jsonb, payload_text text, born timestamptz, "
                "note text);"
                "INSERT INTO profiles (id, seen, name, email, token, ip, ip_text, url, lat, "
                "lat_text, payload, payload_text, born, note) VALUES "
                "(1, now() - interval '3 years', 'Jeanne', 'jeanne.dupont@example.org', 'tok-1', "
                "'192.168.17.42', '10.1.2.3', 'https://x.org/p?a=1#f', 48.856613, '2.3522219', "
                "'{\"a\":1,\"b\":{\"c\":2,\"d\":3},\"e\":4}', '{\"a\":1,\"b\":{\"c\":2,\"d\":3},"
                "\"e\":4}', '2020-05-17 13:00+02', 'n1'),"
                "(2, now() - interval '3 years', 'Paul', 'paul@example.com', 'tok-2', "
                "'2001:db8:abcd:12::1', 'not-an-ip', 'https://y.org/', 1.5, 'x', '{\"e\":1}', "
                "'{\"e\":1}', '2021-12-31 23:30+01', 'n2'),"
                "(3, now() - interval '1 day', 'Recent', 'recent@example.org', 'tok-3', "
                "'10.0.0.1', '10.0.0.1', 'https://z.org/?q', 1.234, '1.234', '{\"a\":1}', "
                "'{\"a\":1}', '2022-01-01 00:00+01', 'n3')");
        m_store.name = "app";
        m_store.spec = spec_ptr(PostgresStore(Secret(m_dsn)));
        m_engine = make_postgres_engine(m_store, m_config);
    }

    Rule rule(std::vector<FieldStrategy> fields, std::optional<std::string> mark) {
        Rule r;
        r.name = "profiles-anon";
        r.retain = parse_duration("2 years");
        r.action = Action::anonymize;
        r.anonymize = std::move(fields);
        r.limits = Limits{std::nullopt, 1.0};
        PostgresRule pg;
        pg.table = "public.profiles";
        pg.key = {"id"};
        pg.clock = {"seen"};
        pg.mark = std::move(mark);
        r.spec = spec_ptr(pg);
        return r;
    }

    RunResult purge(const Rule& r) {
        RunContext ctx;
        ctx.run_id = "anon";
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        return m_engine->purge(r, ctx);
    }
    std::string scalar(const std::string& sql) { return pg_scalar(m_dsn, sql); }
    std::string field(int id, const std::string& expr) {
        return scalar("SET TimeZone = 'Europe/Paris'; SELECT " + expr +
                      " FROM profiles WHERE id = " + std::to_string(id));
    }

    std::string m_dsn;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
    RecordingJournal m_journal;
    Secret m_key{"anon-audit-key"};
};

TEST_F(PostgresAnonymizeTest, EveryStrategyInPlaceWithABooleanMark) {
    Strategy fixed = strategy(Strategy::Kind::fixed);
    fixed.fixed_value = "anonymized";
    Strategy round = strategy(Strategy::Kind::round);
    round.round_digits = 2;
    Strategy drop = strategy(Strategy::Kind::drop_keys);
    drop.drop_keys = {"a", "b.c"};
    Strategy trunc = strategy(Strategy::Kind::date_trunc);
    trunc.trunc_unit = "month";
    const auto r = rule(
        {
            {"name", strategy(Strategy::Kind::null_value), {}},
            {"note", fixed, {}},
            {"email", strategy(Strategy::Kind::email_domain), {}},
            {"token", strategy(Strategy::Kind::hmac), {}},
            {"ip", strategy(Strategy::Kind::truncate_ip), {}},
            {"ip_text", strategy(Strategy::Kind::truncate_ip), {}},
            {"url", strategy(Strategy::Kind::strip_query), {}},
            {"lat", round, {}},
            {"lat_text", round, {}},
            {"payload", drop, {}},
            {"payload_text", drop, {}},
            {"born", trunc, {}},
        },
        "anonymized");
    EXPECT_TRUE(problems(m_engine->check(r)).empty());
    EXPECT_EQ(m_engine->records_present(r, "public.profiles", {"1"}), Presence::present);
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);

    const auto* tz = find_zone("Europe/Paris");
    EXPECT_EQ(field(1, "name IS NULL"), "t");
    EXPECT_EQ(field(1, "note"), "anonymized");
    EXPECT_EQ(field(1, "email"), *anonymize_text(strategy(Strategy::Kind::email_domain),
                                                 "jeanne.dupont@example.org", m_key, tz));
    EXPECT_EQ(field(1, "email").substr(0, 5), "anon-");
    EXPECT_EQ(field(1, "token"),
              *anonymize_text(strategy(Strategy::Kind::hmac), "tok-1", m_key, tz));
    EXPECT_EQ(field(1, "host(ip)"), "192.168.17.0");
    EXPECT_EQ(field(2, "host(ip)"), "2001:db8:abcd::");
    EXPECT_EQ(field(1, "ip_text"), "10.1.2.0");
    EXPECT_EQ(field(2, "ip_text"), "not-an-ip");
    EXPECT_EQ(field(1, "url"), "https://x.org/p");
    EXPECT_EQ(field(1, "lat::text"), "48.86");
    EXPECT_EQ(field(1, "lat_text"), "2.35");
    EXPECT_EQ(field(2, "lat_text"), "x");
    EXPECT_EQ(field(1, "payload::text"), R"({"b": {"d": 3}, "e": 4})");
    EXPECT_EQ(field(1, "payload_text"), R"({"b": {"d": 3}, "e": 4})");
    EXPECT_EQ(field(1, "born::text"), "2020-05-01 00:00:00+02");
    EXPECT_EQ(field(2, "born::text"), "2021-12-01 00:00:00+01"); // local month, not UTC's
    EXPECT_EQ(field(1, "anonymized"), "t");
    // Untouched row, byte for byte.
    EXPECT_EQ(field(3, "concat_ws('|', name, email, token, ip, ip_text, url, lat, lat_text, "
                       "payload, born, note, anonymized)"),
              "Recent|recent@example.org|tok-3|10.0.0.1|10.0.0.1|https://z.org/?q|1.234|1.234|"
              "{\"a\": 1}|2022-01-01 00:00:00+01|n3|f");

    EXPECT_EQ(m_engine->records_present(r, "public.profiles", {"1", "2"}), Presence::absent);
    const auto again = purge(r);
    EXPECT_EQ(again.status, RunResult::Status::ok);
    EXPECT_EQ(again.processed, 0) << "marked rows are skipped";
}

// Node reports an IPv4 client on a dual-stack socket as ::ffff:a.b.c.d (C'est qui le pro's
// metric.consumer): an IPv4 address, truncated to its /24 like one, in text and inet columns, the
// same way as the files and Redis engines (anonymize_text).
TEST_F(PostgresAnonymizeTest, TruncateIpReadsIpv4MappedAddressesAsIpv4) {
    pg_exec(m_dsn, "INSERT INTO profiles (id, seen, ip, ip_text) VALUES "
                   "(10, now() - interval '3 years', '::ffff:10.1.2.3', '::ffff:10.1.2.3'),"
                   "(11, now() - interval '3 years', '::ffff:192.0.2.77', '::FFFF:192.0.2.77'),"
                   "(12, now() - interval '3 years', '2001:db8:1:2::5', 'referer.example.org')");
    const auto r = rule({{"ip", strategy(Strategy::Kind::truncate_ip), {}},
                         {"ip_text", strategy(Strategy::Kind::truncate_ip), {}}},
                        "anonymized");
    ASSERT_EQ(purge(r).status, RunResult::Status::ok);
    EXPECT_EQ(field(10, "ip_text"), "::ffff:10.1.2.0");
    EXPECT_EQ(field(10, "ip_text"), *anonymize_text(strategy(Strategy::Kind::truncate_ip),
                                                    "::ffff:10.1.2.3", m_key, nullptr));
    EXPECT_EQ(field(10, "host(ip)"), "::ffff:10.1.2.0");
    EXPECT_EQ(field(11, "ip_text"), "::FFFF:192.0.2.0");
    EXPECT_EQ(field(11, "host(ip)"), "::ffff:192.0.2.0");
    EXPECT_EQ(field(12, "host(ip)"), "2001:db8:1::");
    EXPECT_EQ(field(12, "ip_text"), "referer.example.org");
}

TEST_F(PostgresAnonymizeTest, TimestampMarkMakesRunsIdempotent) {
    const auto r = rule({{"name", strategy(Strategy::Kind::null_value), {}}}, "anonymized_at");
    ASSERT_EQ(purge(r).processed, 2);
    EXPECT_EQ(scalar("SELECT count(*) FROM profiles WHERE anonymized_at IS NOT NULL"), "2");
    EXPECT_EQ(purge(r).processed, 0);
}

TEST_F(PostgresAnonymizeTest, WithoutMarkEachDueRowIsAnonymizedOncePerRun) {
    pg_exec(m_dsn, "INSERT INTO profiles (id, seen, note) SELECT g, now() - interval '3 years', "
                   "'n' FROM generate_series(10, 29) g");
    Strategy fixed = strategy(Strategy::Kind::fixed);
    fixed.fixed_value = "x";
    auto r = rule({{"note", fixed, {}}}, std::nullopt);
    r.batch_size = 3;
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 22);
    std::multiset<std::string> keys;
    for (const auto& i : m_journal.m_intents) {
        EXPECT_EQ(i.action, "anonymize");
        EXPECT_LE(i.keys.size(), 3U);
        keys.insert(i.keys.begin(), i.keys.end());
    }
    EXPECT_EQ(keys.size(), 22U);
    for (const auto& k : keys) {
        EXPECT_EQ(keys.count(k), 1U) << k << " anonymized twice";
    }
    EXPECT_EQ(m_engine->records_present(r, "public.profiles", {"1"}), Presence::unknown);
}

TEST_F(PostgresAnonymizeTest, DependentsAreAnonymizedInTheSameBatch) {
    pg_exec(m_dsn, "CREATE TABLE orders (id bigint PRIMARY KEY, profile_id bigint REFERENCES "
                   "profiles (id), shipping_name text, shipping_ip text);"
                   "INSERT INTO orders VALUES (1, 1, 'Jeanne', '10.9.8.7'), (2, 1, 'Jeanne', "
                   "'10.9.8.6'), (3, 3, 'Recent', '10.0.0.2')");
    auto r = rule({{"email", strategy(Strategy::Kind::email_domain), {}}}, "anonymized");
    Dependent d;
    d.table = "orders";
    d.column = "profile_id";
    d.action = Dependent::Action::anonymize;
    d.anonymize = {{"shipping_name", strategy(Strategy::Kind::null_value), {}},
                   {"shipping_ip", strategy(Strategy::Kind::truncate_ip), {}}};
    edit_spec<PostgresRule>(r).dependents = {d};
    EXPECT_TRUE(problems(m_engine->check(r)).empty());
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.counters.at("dependents.orders.anonymize"), 2);
    EXPECT_EQ(scalar("SELECT string_agg(coalesce(shipping_name, '-') || ' ' || shipping_ip, ',' "
                     "ORDER BY id) FROM orders"),
              "- 10.9.8.0,- 10.9.8.0,Recent 10.0.0.2");
}

} // namespace
} // namespace retentiond::test
