// Bench driver: one purge (or dry run) of a kind: redis rule, timed, against a live Redis.
//   redis_purge_bench URL PATTERN RETAIN [--max-ttl D] [--hash-field F | --idle] [--batch N]
//                     [--scan-count N] [--max-fraction X] [--force] [--dry-run]
// Prints one line of key=value figures. The journal only counts batches (no audit file): the
// audit log's cost is measured by its own bench.
#include "retentiond/audit.hpp"
#include "retentiond/engines.hpp"
#include "retentiond/timeutil.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

namespace {

using namespace retentiond;

class CountingJournal : public BatchJournal {
public:
    std::string intent(const BatchIntent& batch) override {
        m_keys += static_cast<std::int64_t>(batch.keys.size());
        return std::to_string(m_intents++);
    }
    void outcome(const std::string&, bool committed, std::int64_t) override {
        m_committed += committed ? 1 : 0;
    }
    void event(const std::string&, const nlohmann::json&) override { ++m_events; }

    std::int64_t m_intents = 0;
    std::int64_t m_committed = 0;
    std::int64_t m_keys = 0;
    std::int64_t m_events = 0;
};

[[noreturn]] void usage() {
    std::cerr << "usage: redis_purge_bench URL PATTERN RETAIN [--max-ttl D] [--hash-field F | "
                 "--idle] [--batch N] [--scan-count N] [--max-fraction X] [--force] "
                 "[--dry-run]\n";
    std::exit(64);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        usage();
    }
    Datastore store;
    store.name = "bench";
    store.kind = DatastoreKind::redis;
    store.url = Secret(argv[1]);

    Rule rule;
    rule.name = "bench-sessions";
    rule.datastore = store.name;
    rule.kind = DatastoreKind::redis;
    rule.retain = parse_duration(argv[3]);
    rule.limits = Limits{std::nullopt, 0.5};
    RedisRule spec;
    spec.keys = argv[2];
    spec.clock.kind = RedisClock::Kind::hash_field;
    spec.clock.hash_field = "last_seen";
    bool force = false;
    bool dry = false;
    for (int i = 4; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage();
            }
            return argv[++i];
        };
        if (a == "--max-ttl") {
            spec.max_ttl = parse_duration(next());
        } else if (a == "--hash-field") {
            spec.clock.hash_field = next();
        } else if (a == "--idle") {
            spec.clock.kind = RedisClock::Kind::idle;
        } else if (a == "--batch") {
            rule.batch_size = std::stoi(next());
        } else if (a == "--scan-count") {
            spec.scan_count = std::stoi(next());
        } else if (a == "--max-fraction") {
            rule.limits.max_fraction = std::stod(next());
        } else if (a == "--force") {
            force = true;
        } else if (a == "--dry-run") {
            dry = true;
        } else {
            usage();
        }
    }
    rule.spec = spec;

    Config config;
    auto engine = make_redis_engine(store, config);
    CountingJournal journal;
    RunContext ctx;
    ctx.run_id = "bench";
    ctx.force = force;
    ctx.tz = find_zone("UTC");
    ctx.journal = &journal;

    const auto start = std::chrono::steady_clock::now();
    if (dry) {
        const auto d = engine->dry_run(rule, ctx);
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf(
            "mode=dry_run seconds=%.3f in_scope=%lld due=%lld no_ttl=%lld "
            "ttl_above_max=%lld keys_read_per_s=%.0f\n",
            secs, static_cast<long long>(d.in_scope), static_cast<long long>(d.due),
            static_cast<long long>(d.counters.count("no_ttl") ? d.counters.at("no_ttl") : 0),
            static_cast<long long>(
                d.counters.count("ttl_above_max") ? d.counters.at("ttl_above_max") : 0),
            static_cast<double>(d.in_scope) / secs);
        return 0;
    }
    const auto r = engine->purge(rule, ctx);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    auto counter = [&](const char* name) -> long long {
        const auto it = r.counters.find(name);
        return it == r.counters.end() ? 0 : it->second;
    };
    std::printf("mode=purge status=%d seconds=%.3f deleted=%lld due=%lld expired=%lld "
                "batches=%lld deleted_per_s=%.0f %s\n",
                static_cast<int>(r.status), secs, static_cast<long long>(r.processed),
                static_cast<long long>(r.due), counter("expired"),
                static_cast<long long>(r.batches), static_cast<double>(r.processed) / secs,
                r.message.c_str());
    return r.status == RunResult::Status::ok ? 0 : 1;
}
