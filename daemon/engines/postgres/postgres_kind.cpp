// Kind postgres: its keys, its readers, its engine, and what the report and the daemon ask of it.
#include "postgres_kind.hpp"

#include "pg_connect.hpp"

#include "retentiond/run_lock.hpp"

namespace retentiond {

namespace {

class PostgresKind final : public Kind {
public:
    std::string_view name() const override { return "postgres"; }
    const Keys& datastore_keys() const override {
        static const Keys keys = {"dsn"};
        return keys;
    }
    const Keys& rule_keys() const override {
        static const Keys keys = {"table",
                                  "key",
                                  "dependents",
                                  "mark",
                                  "lock_timeout",
                                  "statement_timeout",
                                  "sleep_between_batches",
                                  "parallel",
                                  "partitions",
                                  "partition_digests",
                                  "partition_rows",
                                  "notice"};
        return keys;
    }
    std::shared_ptr<const DatastoreSpec> read_datastore(ConfigReader& in,
                                                        const ConfigMap& section) const override {
        return read_postgres_datastore(in, section);
    }
    std::shared_ptr<const RuleSpec> read_rule(ConfigReader& in, const ConfigMap& section,
                                              const Rule& rule) const override {
        return read_postgres_rule(in, section, rule);
    }
    std::unique_ptr<Engine> make_engine(const Datastore& store,
                                        const Config& config) const override {
        return make_postgres_engine(store, config);
    }
    // Batches on dependent tables name their own table: only the rule's table counts.
    bool is_rule_target(const Rule& rule, const std::string& target) const override {
        const auto& table = spec_of<PostgresRule>(rule).table;
        const auto unqualified = [](const std::string& t) {
            const auto dot = t.rfind('.');
            return dot == std::string::npos ? t : t.substr(dot + 1);
        };
        return target == table || unqualified(target) == unqualified(table);
    }
    CoverageScan scan_coverage(const Datastore& store,
                               const std::vector<const Rule*>& rules) const override {
        return scan_postgres_coverage(store, rules);
    }
    std::string store_identity(const Datastore& store,
                               const std::vector<const Rule*>& rules) const override {
        return postgres_store_identity(store, rules);
    }
    bool coordinates_runs() const override { return true; }
    std::unique_ptr<RunLock> try_lock_run(const Datastore& store, std::string_view rule,
                                          const std::function<bool()>& stop) const override {
        return RunLock::try_acquire(spec_of<PostgresStore>(store).dsn.reveal(), rule, stop);
    }
    bool holds_audit() const override { return true; }
    std::string audit_conninfo(const Datastore& store) const override {
        return pg::with_connect_timeout(spec_of<PostgresStore>(store).dsn.reveal());
    }
};

} // namespace

const Kind& postgres_kind() {
    static const PostgresKind kind;
    return kind;
}

} // namespace retentiond
