// Contract backend for kind redis: each record is a hash `<key>` with `user`, `last_seen` (epoch
// seconds, absent for "no clock") and `legal_hold`. Records are stored under their bare key,
// because the contract asks records_present() about bare keys ("b"); isolation comes from a
// database index of its own per backend (FLUSHDB on seed) instead of a key prefix. A decoy key
// outside the rule's pattern must survive every test: it proves that SCAN MATCH bounds what a rule
// touches.
#include "contract/contract.hpp"
#include "engines/redis/redis_kind.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace retentiond::test {
namespace {

constexpr std::string_view k_pattern = "[a-z]*";
constexpr std::string_view k_decoy = "Z:decoy";

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

class RedisBackend final : public ContractBackend {
public:
    RedisBackend() : m_server(RedisServer::shared()) {
        // Databases 1..15 in turn; 0 is left to other suites.
        static int next = 0;
        m_db = 1 + next++ % 15;
        m_store.name = "sessions";
        m_store.kind = &redis_kind();
        m_store.spec = spec_ptr(RedisStore(Secret(m_server.url(m_db))));
        m_engine = make_redis_engine(m_store, m_config);
    }

    SubjectField subject_field() const override { return {"user", true, {}}; }
    std::string subject_of(const std::string& key) const override { return "u-" + key; }

    void seed(const std::vector<ContractRecord>& records) override {
        cmd({"FLUSHDB"});
        const auto now = std::stoll(lines(cmd({"TIME"})).at(0));
        cmd({"HSET", std::string(k_decoy), "user", "decoy", "last_seen", "1"});
        for (const auto& r : records) {
            std::vector<std::string> args = {"HSET", r.key, "user", "u-" + r.key};
            if (r.age) {
                args.push_back("last_seen");
                args.push_back(std::to_string(now - r.age->count()));
            }
            args.push_back("legal_hold");
            args.push_back(r.held ? "yes" : "no");
            cmd(args);
        }
    }

    Rule make_rule(const RuleOptions& options) override {
        Rule rule;
        rule.name = "contract-redis";
        rule.datastore = m_store.name;
        rule.kind = &redis_kind();
        rule.retain = options.retain;
        rule.action = options.action;
        rule.batch_size = options.batch_size;
        rule.limits = options.limits;
        rule.clock_null_due = options.clock_null_due;
        RedisRule spec;
        spec.keys = std::string(k_pattern);
        spec.clock.kind = RedisClock::Kind::hash_field;
        spec.clock.hash_field = "last_seen";
        if (options.with_hold) {
            spec.hold = RedisHold{"legal_hold", "yes"};
        }
        spec.scan_count = 7; // several SCAN pages even for small fixtures
        rule.spec = spec_ptr(spec);
        return rule;
    }

    Engine& engine() override { return *m_engine; }

    std::set<std::string> remaining_keys() override {
        if (cmd({"EXISTS", std::string(k_decoy)}) != "1") {
            ADD_FAILURE() << "the key outside the rule's pattern was deleted";
        }
        const auto keys = lines(cmd({"KEYS", std::string(k_pattern)}));
        return {keys.begin(), keys.end()};
    }

    std::set<std::string> anonymized_keys() override { return {}; }
    bool supports_anonymize() const override { return false; }

    std::map<std::string, std::string> fingerprints() override {
        std::map<std::string, std::string> out;
        for (const auto& key : remaining_keys()) {
            out[key] = cmd({"HGETALL", key}) + "\nttl=" + cmd({"TTL", key});
        }
        return out;
    }

    std::unique_ptr<Engine> unreachable_engine() override {
        Datastore down = m_store;
        down.spec =
            spec_ptr(RedisStore(Secret("redis://127.0.0.1:1/0"))); // nothing listens on port 1
        return make_redis_engine(down, m_config);
    }

    std::optional<MissingTarget> missing_target(const RuleOptions&) override {
        return std::nullopt;
    }

private:
    std::string cmd(const std::vector<std::string>& args) {
        return redis_cmd(m_server, args, m_db);
    }

    RedisServer& m_server;
    int m_db = 1;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
};

} // namespace

std::unique_ptr<ContractBackend> make_redis_backend() {
    return std::make_unique<RedisBackend>();
}

} // namespace retentiond::test
