// Kind redis: its keys, its readers and its engine.
#include "redis_kind.hpp"

namespace retentiond {

namespace {

class RedisKind final : public Kind {
public:
    std::string_view name() const override { return "redis"; }
    const Keys& datastore_keys() const override {
        static const Keys keys = {"url"};
        return keys;
    }
    const Keys& rule_keys() const override {
        static const Keys keys = {"keys", "max_ttl", "scan_count"};
        return keys;
    }
    std::shared_ptr<const DatastoreSpec> read_datastore(ConfigReader& in,
                                                        const ConfigMap& section) const override {
        return read_redis_datastore(in, section);
    }
    std::shared_ptr<const RuleSpec> read_rule(ConfigReader& in, const ConfigMap& section,
                                              const Rule& rule) const override {
        return read_redis_rule(in, section, rule);
    }
    // action: anonymize is refused by the reader ("redis rules support action: delete only").
    bool supports_anonymize() const override { return false; }
    bool subject_in_hash_field() const override { return true; }
    std::unique_ptr<Engine> make_engine(const Datastore& store,
                                        const Config& config) const override {
        return make_redis_engine(store, config);
    }
    CoverageScan scan_coverage(const Datastore& store,
                               const std::vector<const Rule*>& rules) const override {
        return scan_redis_coverage(store, rules);
    }
};

} // namespace

const Kind& redis_kind() {
    static const RedisKind kind;
    return kind;
}

} // namespace retentiond
