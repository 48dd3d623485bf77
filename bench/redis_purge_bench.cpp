// Bench driver: one purge (or dry run) of a kind: redis rule, timed, against a live Redis.
//   redis_purge_bench URL PATTERN RETAIN [--max-ttl D] [--hash-field F | --idle] [--batch N]
//                     [--scan-count N] [--max-fraction X] [--force] [--dry-run]
//                     [--journal audit|digest|none] [--dir DIR]
// Prints one line of key=value figures. The journal is, as the CLI runs it, the real AuditLog in
// DIR (HMAC digest of every key, pending-keys file, fsyncs) unless --journal says otherwise:
// digest only computes the digests, none counts batches. journal_s is the time spent inside it.
#include "engines/redis/redis_kind.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/timeutil.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>

namespace {

using namespace retentiond;
using Clock = std::chrono::steady_clock;

// Forwards to the real journal (or digests the keys itself, or nothing) and times every call.
class TimedJournal final : public BatchJournal {
public:
    TimedJournal(BatchJournal* inner, Secret key, bool digest)
        : m_inner(inner), m_key(std::move(key)), m_digest(digest) {}

    std::string intent(const BatchIntent& batch) override {
        const auto t0 = Clock::now();
        std::string id;
        if (m_inner != nullptr) {
            id = m_inner->intent(batch);
        } else {
            if (m_digest) {
                for (const auto& k : batch.keys) {
                    m_sink ^= record_digest(m_key, batch.rule, k).front();
                }
            }
            id = std::to_string(m_intents);
        }
        ++m_intents;
        m_spent += Clock::now() - t0;
        return id;
    }
    void outcome(const std::string& batch_id, bool committed, std::int64_t count) override {
        const auto t0 = Clock::now();
        if (m_inner != nullptr) {
            m_inner->outcome(batch_id, committed, count);
        }
        m_spent += Clock::now() - t0;
    }
    void outcome_except(const std::string& batch_id, std::int64_t count,
                        const std::vector<std::string>& kept) override {
        const auto t0 = Clock::now();
        if (m_inner != nullptr) {
            m_inner->outcome_except(batch_id, count, kept);
        }
        m_spent += Clock::now() - t0;
    }
    void event(const std::string& type, const nlohmann::json& fields) override {
        if (m_inner != nullptr) {
            m_inner->event(type, fields);
        }
    }
    double spent() const { return std::chrono::duration<double>(m_spent).count(); }

private:
    BatchJournal* m_inner;
    Secret m_key;
    bool m_digest;
    std::int64_t m_intents = 0;
    Clock::duration m_spent{};
    char m_sink = 0;
};

[[noreturn]] void usage() {
    std::cerr << "usage: redis_purge_bench URL PATTERN RETAIN [--max-ttl D] [--hash-field F | "
                 "--idle] [--batch N] [--scan-count N] [--max-fraction X] [--force] "
                 "[--dry-run] [--journal audit|digest|none] [--dir DIR]\n";
    std::exit(64);
}

// What the command line asks besides the rule.
struct BenchOptions {
    bool force = false;
    bool dry = false;
    std::string journal_kind = "audit";
    std::string dir = "/tmp";
};

// The rule of PATTERN and RETAIN with the defaults, before the flags.
Rule bench_rule(const std::string& store, const std::string& retain, RedisRule& spec,
                const std::string& pattern) {
    Rule rule;
    rule.name = "bench-sessions";
    rule.datastore = store;
    rule.kind = &redis_kind();
    rule.retain = parse_duration(retain);
    rule.limits = Limits{std::nullopt, 0.5};
    spec.keys = pattern;
    spec.clock.kind = RedisClock::Kind::hash_field;
    spec.clock.hash_field = "last_seen";
    return rule;
}

// The flags after URL PATTERN RETAIN, into the rule, its spec and the options.
BenchOptions parse_flags(int argc, char** argv, Rule& rule, RedisRule& spec) {
    BenchOptions o;
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
            o.force = true;
        } else if (a == "--dry-run") {
            o.dry = true;
        } else if (a == "--journal") {
            o.journal_kind = next();
        } else if (a == "--dir") {
            o.dir = next();
        } else {
            usage();
        }
    }
    return o;
}

int print_dry_run(const DryRun& d, double secs) {
    std::printf("mode=dry_run seconds=%.3f in_scope=%lld due=%lld no_ttl=%lld "
                "ttl_above_max=%lld keys_read_per_s=%.0f\n",
                secs, static_cast<long long>(d.in_scope), static_cast<long long>(d.due),
                static_cast<long long>(d.counters.count("no_ttl") ? d.counters.at("no_ttl") : 0),
                static_cast<long long>(
                    d.counters.count("ttl_above_max") ? d.counters.at("ttl_above_max") : 0),
                static_cast<double>(d.in_scope) / secs);
    return 0;
}

int print_purge(const RunResult& r, double secs, const std::string& journal_kind,
                const TimedJournal& journal) {
    auto counter = [&](const char* name) -> long long {
        const auto it = r.counters.find(name);
        return it == r.counters.end() ? 0 : it->second;
    };
    std::printf("mode=purge status=%d seconds=%.3f deleted=%lld due=%lld expired=%lld "
                "batches=%lld deleted_per_s=%.0f journal=%s journal_s=%.3f %s\n",
                static_cast<int>(r.status), secs, static_cast<long long>(r.processed),
                static_cast<long long>(r.due), counter("expired"),
                static_cast<long long>(r.batches), static_cast<double>(r.processed) / secs,
                journal_kind.c_str(), journal.spent(), r.message.c_str());
    return r.status == RunResult::Status::ok ? 0 : 1;
}

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        usage();
    }
    Datastore store;
    store.name = "bench";
    store.kind = &redis_kind();
    store.spec = spec_ptr(RedisStore(Secret(argv[1])));
    RedisRule spec;
    Rule rule = bench_rule(store.name, argv[3], spec, argv[2]);
    const BenchOptions o = parse_flags(argc, argv, rule, spec);
    rule.spec = spec_ptr(spec);

    Config config;
    auto engine = make_redis_engine(store, config);
    if (o.journal_kind != "audit" && o.journal_kind != "digest" && o.journal_kind != "none") {
        usage();
    }
    const Secret key(std::string(32, 'k'));
    std::unique_ptr<AuditLog> audit;
    if (o.journal_kind == "audit" && !o.dry) {
        audit = std::make_unique<AuditLog>(o.dir + "/bench-audit.jsonl", key, new_run_id());
    }
    TimedJournal journal(audit.get(), key, o.journal_kind == "digest");
    RunContext ctx;
    ctx.run_id = "bench";
    ctx.force = o.force;
    ctx.tz = find_zone("UTC");
    ctx.journal = &journal;
    ctx.audit_key = &key;

    const auto start = Clock::now();
    if (o.dry) {
        const auto d = engine->dry_run(rule, ctx);
        return print_dry_run(d, seconds_since(start));
    }
    const auto r = engine->purge(rule, ctx);
    return print_purge(r, seconds_since(start), o.journal_kind, journal);
}
