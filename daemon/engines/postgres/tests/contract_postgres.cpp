// The contract suite on a real PostgreSQL: one fresh database per backend instance.
#include "contract/contract.hpp"
#include "engines/postgres/postgres_kind.hpp"
#include "support/pg_cluster.hpp"

#include <pqxx/pqxx>

#include <atomic>
#include <unistd.h>

namespace retentiond::test {
namespace {

class PostgresBackend final : public ContractBackend {
public:
    PostgresBackend() {
        static std::atomic<int> counter{0};
        const auto name =
            "contract_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
        m_dsn = PgCluster::shared().create_database(name);
        m_store.name = "contract-pg";
        m_store.kind = &postgres_kind();
        m_store.spec = spec_ptr(PostgresStore(Secret(m_dsn)));
        m_engine = make_postgres_engine(m_store, m_config);
    }

    std::optional<PgAuditTarget> own_audit_store() const override {
        return PgAuditTarget{m_dsn, "retentiond", m_store.name, {}};
    }
    SubjectField subject_field() const override { return {"email", false, {}}; }
    std::string subject_of(const std::string& key) const override { return key + "@example.org"; }

    void seed(const std::vector<ContractRecord>& records) override {
        pqxx::connection conn(m_dsn);
        pqxx::work tx(conn);
        tx.exec0("DROP TABLE IF EXISTS records; CREATE TABLE records (key text PRIMARY KEY, "
                 "clock timestamptz NULL, held boolean NOT NULL DEFAULT false, email text, "
                 "note text)");
        for (const auto& r : records) {
            const std::optional<std::string> age =
                r.age ? std::optional<std::string>(std::to_string(r.age->count())) : std::nullopt;
            tx.exec_params0("INSERT INTO records VALUES ($1, now() - $2::bigint * interval '1 "
                            "second', $3, $1 || '@example.org', 'note ' || $1)",
                            r.key, age ? age->c_str() : nullptr, r.held);
        }
        tx.commit();
    }

    Rule make_rule(const RuleOptions& options) override {
        Rule rule;
        rule.name = "contract-pg";
        rule.datastore = m_store.name;
        rule.kind = &postgres_kind();
        rule.retain = options.retain;
        rule.action = options.action;
        rule.batch_size = options.batch_size;
        rule.limits = options.limits;
        rule.clock_null_due = options.clock_null_due;
        PostgresRule pg;
        pg.table = "public.records";
        pg.key = {"key"};
        pg.clock = {"clock"};
        if (options.with_hold) {
            pg.hold = PgHold{"held", PgHold::Kind::equals, "true"};
        }
        rule.spec = spec_ptr(pg);
        if (options.action == Action::anonymize) {
            Strategy s;
            s.kind = Strategy::Kind::email_domain;
            rule.anonymize.push_back(FieldStrategy{"email", s, {}});
        }
        return rule;
    }

    Engine& engine() override { return *m_engine; }

    std::unique_ptr<Engine> unreachable_engine() override {
        Datastore down = m_store;
        down.spec = spec_ptr(
            PostgresStore(Secret("host=/nonexistent-retentiond-socket-dir port=1 dbname=none "
                                 "connect_timeout=2")));
        return make_postgres_engine(down, m_config);
    }

    std::optional<MissingTarget> missing_target(const RuleOptions& options) override {
        Rule rule = make_rule(options);
        edit_spec<PostgresRule>(rule).table = "public.no_such_table";
        return MissingTarget{make_postgres_engine(m_store, m_config), rule, "no_such_table"};
    }

    std::set<std::string> remaining_keys() override {
        std::set<std::string> out;
        for (const auto& row : query("SELECT key FROM records")) {
            out.insert(row[0].c_str());
        }
        return out;
    }

    std::set<std::string> anonymized_keys() override {
        std::set<std::string> out;
        for (const auto& row :
             query("SELECT key FROM records WHERE email IS DISTINCT FROM key || '@example.org'")) {
            out.insert(row[0].c_str());
        }
        return out;
    }

    bool supports_anonymize() const override { return true; }

    std::map<std::string, std::string> fingerprints() override {
        std::map<std::string, std::string> out;
        for (const auto& row : query("SELECT key, records::text FROM records")) {
            out[row[0].c_str()] = row[1].c_str();
        }
        return out;
    }

private:
    pqxx::result query(const std::string& sql) {
        pqxx::connection conn(m_dsn);
        pqxx::nontransaction tx(conn);
        return tx.exec(sql);
    }

    std::string m_dsn;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
};

} // namespace

std::unique_ptr<ContractBackend> make_postgres_backend() {
    return std::make_unique<PostgresBackend>();
}

} // namespace retentiond::test
