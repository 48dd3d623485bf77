// Bench driver for bench/pg_purge.sh: runs the postgres engine's purge once and prints the time.
// usage: pg_purge_bench DSN TABLE delete|anonymize BATCH_SIZE
#include "retentiond/engines.hpp"
#include "retentiond/timeutil.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
    using namespace retentiond;
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s DSN TABLE delete|anonymize BATCH_SIZE\n", argv[0]);
        return 64;
    }
    Datastore store;
    store.name = "bench";
    store.dsn = Secret(argv[1]);
    Config config;
    const auto engine = make_postgres_engine(store, config);

    Rule rule;
    rule.name = "bench";
    rule.retain = parse_duration("12 months");
    rule.batch_size = std::atoi(argv[4]);
    rule.limits = Limits{std::nullopt, 1.0};
    PostgresRule pg;
    pg.table = argv[2];
    pg.key = {"id"};
    pg.clock = {"last_login"};
    rule.spec = pg;
    if (std::string(argv[3]) == "anonymize") {
        rule.action = Action::anonymize;
        Strategy null_value;
        Strategy fixed;
        fixed.kind = Strategy::Kind::fixed;
        rule.anonymize = {{"email", null_value, {}}, {"first_name", fixed, {}}};
    }
    RunContext ctx;
    ctx.run_id = "bench";
    ctx.tz = find_zone("UTC");
    const auto start = std::chrono::steady_clock::now();
    const auto result = engine->purge(rule, ctx);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    std::printf("processed %lld batches %lld seconds %.3f status %d %s\n",
                static_cast<long long>(result.processed), static_cast<long long>(result.batches),
                took.count(), static_cast<int>(result.status), result.message.c_str());
    return result.status == RunResult::Status::ok ? 0 : 1;
}
