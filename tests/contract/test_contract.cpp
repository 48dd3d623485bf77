// The datastore contract: every kind (postgres, files, redis) must pass these same tests.
#include "contract/contract.hpp"

#include "retentiond/subject.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <functional>

namespace retentiond::test {
namespace {

using namespace std::chrono_literals;

using BackendFactory = std::function<std::unique_ptr<ContractBackend>()>;

struct Kind {
    std::string name;
    BackendFactory make;
};

class Contract : public ::testing::TestWithParam<Kind> {
protected:
    void SetUp() override { m_backend = GetParam().make(); }

    RunResult purge(const Rule& rule, bool force = false) {
        RunContext ctx;
        ctx.run_id = "test-run";
        ctx.force = force;
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        return m_backend->engine().purge(rule, ctx);
    }
    DryRun dry_run(const Rule& rule) {
        RunContext ctx;
        ctx.run_id = "test-dry";
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        return m_backend->engine().dry_run(rule, ctx);
    }
    static RuleOptions days(int n) {
        RuleOptions o;
        o.retain = parse_duration(std::to_string(n) + " days");
        return o;
    }

    std::unique_ptr<ContractBackend> m_backend;
    RecordingJournal m_journal;
    Secret m_key{"contract-audit-key"};
};

// 30-day rule: a is 40 days old (due), b 10 days (kept), c 31 days but held, d no clock.
std::vector<ContractRecord> basic_fixture() {
    return {
        {"a", std::chrono::seconds(40 * 86400), false},
        {"b", std::chrono::seconds(10 * 86400), false},
        {"c", std::chrono::seconds(31 * 86400), true},
        {"d", std::nullopt, false},
        {"e", std::chrono::seconds(400 * 86400), false},
    };
}

TEST_P(Contract, DeletesExactlyTheDueUnheldRecords) {
    m_backend->seed(basic_fixture());
    const auto before = m_backend->fingerprints();
    const auto result = purge(m_backend->make_rule(days(30)));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(m_backend->remaining_keys(), (std::set<std::string>{"b", "c", "d"}));
    const auto after = m_backend->fingerprints();
    for (const auto& key : {"b", "c", "d"}) {
        EXPECT_EQ(after.at(key), before.at(key)) << "untouched record " << key << " changed";
    }
}

TEST_P(Contract, DryRunCountsAndChangesNothing) {
    m_backend->seed(basic_fixture());
    const auto before = m_backend->fingerprints();
    const auto dry = dry_run(m_backend->make_rule(days(30)));
    EXPECT_EQ(dry.in_scope, 5);
    EXPECT_EQ(dry.due, 2);
    EXPECT_EQ(dry.held, 1);
    EXPECT_EQ(dry.no_clock, 1);
    ASSERT_TRUE(dry.oldest_clock.has_value());
    const auto age = dry.now - *dry.oldest_clock;
    EXPECT_NEAR(std::chrono::duration_cast<std::chrono::hours>(age).count(), 400 * 24, 2);
    EXPECT_EQ(m_backend->fingerprints(), before);
    EXPECT_TRUE(m_journal.m_intents.empty());
}

// One definition of the dry run's counters (DryRunTally): a record without a clock is counted as
// such even when `clock_null: due` makes it due, in every kind.
TEST_P(Contract, DryRunCountsARecordWithoutClockAlsoWhenItIsDue) {
    m_backend->seed(basic_fixture());
    auto options = days(30);
    options.clock_null_due = true;
    const auto dry = dry_run(m_backend->make_rule(options));
    EXPECT_EQ(dry.in_scope, 5);
    EXPECT_EQ(dry.due, 3);
    EXPECT_EQ(dry.held, 1);
    EXPECT_EQ(dry.no_clock, 1);
}

TEST_P(Contract, ForecastCountsRecordsFallingDueSoon) {
    m_backend->seed({
        {"soon", std::chrono::seconds(25 * 86400), false}, // due in 5 days
        {"month", std::chrono::seconds(5 * 86400), false}, // due in 25 days
        {"later", std::chrono::seconds(0), false},         // due in 30 days
    });
    const auto dry = dry_run(m_backend->make_rule(days(30)));
    EXPECT_EQ(dry.due, 0);
    EXPECT_EQ(dry.due_7d, 1);
    EXPECT_EQ(dry.due_30d, 3);
    EXPECT_EQ(dry.due_90d, 3);
}

TEST_P(Contract, NullClockIsDueOnlyWhenTheRuleSaysSo) {
    m_backend->seed(basic_fixture());
    auto options = days(30);
    options.clock_null_due = true;
    const auto result = purge(m_backend->make_rule(options));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(m_backend->remaining_keys(), (std::set<std::string>{"b", "c"}));
}

TEST_P(Contract, SecondRunFindsNothingToDo) {
    m_backend->seed(basic_fixture());
    const auto rule = m_backend->make_rule(days(30));
    ASSERT_EQ(purge(rule).processed, 2);
    const auto again = purge(rule);
    EXPECT_EQ(again.status, RunResult::Status::ok);
    EXPECT_EQ(again.processed, 0);
    EXPECT_EQ(m_backend->remaining_keys(), (std::set<std::string>{"b", "c", "d"}));
}

TEST_P(Contract, SmallBatchesProcessEveryDueRecordOnceAndJournalEachBatch) {
    std::vector<ContractRecord> records;
    std::set<std::string> kept;
    for (int i = 0; i < 23; ++i) {
        const bool due = i % 3 != 0;
        const auto key = "k" + std::to_string(i);
        records.push_back({key, std::chrono::seconds((due ? 50 : 5) * 86400 + i), false});
        if (!due) {
            kept.insert(key);
        }
    }
    m_backend->seed(records);
    auto options = days(30);
    options.batch_size = 4;
    const auto result = purge(m_backend->make_rule(options));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 15);
    EXPECT_EQ(m_backend->remaining_keys(), kept);

    std::multiset<std::string> journaled;
    ASSERT_EQ(m_journal.m_outcomes.size(), m_journal.m_intents.size());
    for (const auto& o : m_journal.m_outcomes) {
        EXPECT_TRUE(o.committed);
        const auto& intent = m_journal.m_intents.at(o.intent);
        if (intent.action != "delete") {
            continue; // dependents, expiries
        }
        EXPECT_LE(intent.keys.size(), 4U) << "a batch larger than batch_size";
        journaled.insert(intent.keys.begin(), intent.keys.end());
    }
    EXPECT_EQ(journaled.size(), 15U) << "every deleted record journaled exactly once";
    for (const auto& key : journaled) {
        EXPECT_EQ(kept.count(key), 0U) << key << " journaled but it was not due";
        EXPECT_EQ(journaled.count(key), 1U) << key << " journaled twice";
    }
}

TEST_P(Contract, MaxFractionRefusesBeforeTouchingAnythingUnlessForced) {
    m_backend->seed(basic_fixture());
    auto options = days(30);
    options.limits = Limits{std::nullopt, 0.2}; // 2 of 5 due = 0.4 > 0.2
    const auto rule = m_backend->make_rule(options);
    const auto before = m_backend->fingerprints();
    const auto refused = purge(rule);
    EXPECT_EQ(refused.status, RunResult::Status::refused);
    EXPECT_NE(refused.message.find("max_fraction"), std::string::npos) << refused.message;
    EXPECT_EQ(m_backend->fingerprints(), before);
    EXPECT_TRUE(m_journal.m_intents.empty());
    ASSERT_FALSE(m_journal.m_events.empty()) << "a refusal is journaled";

    const auto forced = purge(rule, true);
    EXPECT_EQ(forced.status, RunResult::Status::ok) << forced.message;
    EXPECT_EQ(forced.processed, 2);
}

TEST_P(Contract, MaxRowsRefuses) {
    m_backend->seed(basic_fixture());
    auto options = days(30);
    options.limits = Limits{1, 1.0};
    const auto refused = purge(m_backend->make_rule(options));
    EXPECT_EQ(refused.status, RunResult::Status::refused);
    EXPECT_NE(refused.message.find("max_rows"), std::string::npos) << refused.message;
    EXPECT_EQ(m_backend->remaining_keys().size(), 5U);
}

TEST_P(Contract, StopRequestEndsAfterTheCurrentBatch) {
    std::vector<ContractRecord> records;
    for (int i = 0; i < 12; ++i) {
        records.push_back({"s" + std::to_string(i), std::chrono::seconds(60 * 86400), false});
    }
    m_backend->seed(records);
    auto options = days(30);
    options.batch_size = 5;
    const auto rule = m_backend->make_rule(options);
    RunContext ctx;
    ctx.run_id = "stop";
    ctx.tz = find_zone("UTC");
    ctx.audit_key = &m_key;
    ctx.journal = &m_journal;
    ctx.stop_requested = [] { return true; };
    const auto result = m_backend->engine().purge(rule, ctx);
    EXPECT_EQ(result.status, RunResult::Status::stopped);
    EXPECT_LE(result.processed, 5);
    EXPECT_EQ(m_backend->remaining_keys().size(), 12U - static_cast<std::size_t>(result.processed));
}

TEST_P(Contract, AnonymizeRewritesDueRecordsAndKeepsThem) {
    if (!m_backend->supports_anonymize()) {
        GTEST_SKIP() << GetParam().name << " has no anonymize action by design";
    }
    m_backend->seed(basic_fixture());
    auto options = days(30);
    options.action = Action::anonymize;
    const auto before = m_backend->fingerprints();
    const auto result = purge(m_backend->make_rule(options));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(m_backend->remaining_keys(), (std::set<std::string>{"a", "b", "c", "d", "e"}));
    EXPECT_EQ(m_backend->anonymized_keys(), (std::set<std::string>{"a", "e"}));
    const auto after = m_backend->fingerprints();
    for (const auto& key : {"b", "c", "d"}) {
        EXPECT_EQ(after.at(key), before.at(key)) << "untouched record " << key << " changed";
    }
}

TEST_P(Contract, RecordsPresentTellsWhetherABatchCommitted) {
    m_backend->seed(basic_fixture());
    const auto rule = m_backend->make_rule(days(30));
    ASSERT_EQ(purge(rule).processed, 2);
    ASSERT_FALSE(m_journal.m_intents.empty());
    const auto& intent = m_journal.m_intents.front();
    EXPECT_EQ(m_backend->engine().records_present(rule, intent.target, intent.keys),
              Presence::absent);
    EXPECT_EQ(m_backend->engine().records_present(rule, intent.target, {"b"}), Presence::present);
}

// Every kind journals a refusal as one "refusal" event with the same fields (engines/common).
TEST_P(Contract, RefusalIsOneEventWithTheSameFieldsInEveryKind) {
    m_backend->seed(basic_fixture());
    auto fraction = days(30);
    fraction.limits = Limits{std::nullopt, 0.2}; // 2 of 5 due
    ASSERT_EQ(purge(m_backend->make_rule(fraction)).status, RunResult::Status::refused);
    auto rows = days(30);
    rows.limits = Limits{1, 1.0};
    ASSERT_EQ(purge(m_backend->make_rule(rows)).status, RunResult::Status::refused);

    ASSERT_EQ(m_journal.m_events.size(), 2U);
    for (const auto& [type, fields] : m_journal.m_events) {
        EXPECT_EQ(type, "refusal");
        EXPECT_EQ(fields.at("due"), 2) << fields.dump();
        EXPECT_EQ(fields.at("rows"), 5) << fields.dump();
        EXPECT_TRUE(fields.contains("rule")) << fields.dump();
        EXPECT_TRUE(fields.contains("datastore")) << fields.dump();
    }
    const auto& by_fraction = m_journal.m_events[0].second;
    EXPECT_EQ(by_fraction.at("limit"), "max_fraction");
    EXPECT_DOUBLE_EQ(by_fraction.at("max_fraction").get<double>(), 0.2);
    const auto& by_rows = m_journal.m_events[1].second;
    EXPECT_EQ(by_rows.at("limit"), "max_rows");
    EXPECT_EQ(by_rows.at("max_rows"), 1);
    EXPECT_TRUE(m_journal.m_intents.empty());
}

// Erasure requests (Engine::erase_subject): the subject's records whatever their clock, a held one
// deferred, the identifier matched after its normalization, or found again from its digest alone.
TEST_P(Contract, EraseSubjectTakesTheSubjectsRecordsWhateverTheirClockAndDefersHeldOnes) {
    m_backend->seed(basic_fixture());
    const auto before = m_backend->fingerprints();
    SubjectQuery q;
    q.kind = "email";
    q.field = m_backend->subject_field();
    q.audit_key = &m_key;
    std::string shouted = " " + m_backend->subject_of("b") + "\t";
    std::transform(shouted.begin(), shouted.end(), shouted.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    q.values = {normalize_subject("email", shouted),
                normalize_subject("email", m_backend->subject_of("c"))};
    const auto rule = m_backend->make_rule(days(30));
    RunContext ctx;
    ctx.run_id = "erase";
    ctx.tz = find_zone("Europe/Paris");
    ctx.audit_key = &m_key;
    ctx.journal = &m_journal;
    ctx.request = "request-digest";

    const auto dry = m_backend->engine().erase_subject(rule, q, ctx, true);
    EXPECT_EQ(dry.status, RunResult::Status::ok) << dry.message;
    EXPECT_EQ(dry.due, 1);                 // b, not due by its clock
    EXPECT_EQ(dry.counters.at("held"), 1); // c
    EXPECT_EQ(dry.counters.at("in_scope"), 5);
    EXPECT_EQ(m_backend->fingerprints(), before);
    EXPECT_TRUE(m_journal.m_intents.empty());

    const auto r = m_backend->engine().erase_subject(rule, q, ctx, false);
    EXPECT_EQ(r.status, RunResult::Status::ok) << r.message;
    EXPECT_EQ(r.processed, 1);
    EXPECT_EQ(m_backend->remaining_keys(), (std::set<std::string>{"a", "c", "d", "e"}));
    const auto after = m_backend->fingerprints();
    for (const auto& key : {"a", "c", "d", "e"}) {
        EXPECT_EQ(after.at(key), before.at(key)) << "untouched record " << key << " changed";
    }
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].keys, std::vector<std::string>{"b"});
    EXPECT_EQ(m_journal.m_intents[0].request, "request-digest");
    ASSERT_EQ(m_journal.m_outcomes.size(), 1U);
    EXPECT_TRUE(m_journal.m_outcomes[0].committed);
    EXPECT_EQ(m_journal.m_outcomes[0].count, 1);

    SubjectQuery by_digest;
    by_digest.kind = "email";
    by_digest.field = m_backend->subject_field();
    by_digest.audit_key = &m_key;
    by_digest.digests = {
        subject_digest(m_key, "email", normalize_subject("email", m_backend->subject_of("e")))};
    const auto again = m_backend->engine().erase_subject(rule, by_digest, ctx, false);
    EXPECT_EQ(again.processed, 1) << again.message;
    EXPECT_EQ(m_backend->remaining_keys(), (std::set<std::string>{"a", "c", "d"}));
}

TEST_P(Contract, UnreachableStoreThrowsUnavailableNeverAnEmptyRun) {
    const auto engine = m_backend->unreachable_engine();
    const auto rule = m_backend->make_rule(days(30));
    RunContext ctx;
    ctx.run_id = "down";
    ctx.tz = find_zone("UTC");
    ctx.audit_key = &m_key;
    ctx.journal = &m_journal;
    EXPECT_THROW(engine->dry_run(rule, ctx), UnavailableError);
    EXPECT_THROW(engine->purge(rule, ctx), UnavailableError);
    SubjectQuery q;
    q.kind = "email";
    q.field = m_backend->subject_field();
    q.values = {"x@example.org"};
    EXPECT_THROW(engine->erase_subject(rule, q, ctx, true), UnavailableError);
    EXPECT_TRUE(m_journal.m_intents.empty());
}

TEST_P(Contract, CheckNamesAMissingTarget) {
    auto missing = m_backend->missing_target(days(30));
    if (!missing) {
        GTEST_SKIP() << GetParam().name << ": an absent target is an empty one";
    }
    const auto problems = missing->engine->check(missing->rule);
    ASSERT_FALSE(problems.empty()) << "check() accepted a rule whose target does not exist";
    EXPECT_NE(problems.front().message.find(missing->named), std::string::npos)
        << problems.front().message;
    EXPECT_EQ(problems.front().rule, missing->rule.name);
}

// Every kind whose folder has a contract adapter (the build writes contract_kinds.inc).
// The cases that touch the audit, with the chain in the PostgreSQL store (`daemon.audit_store`)
// instead of a recording journal: a purge, then verify and prove; crash recovery from the
// in-flight table. Postgres puts the store in its own database (the batches' lines commit with
// them); files and redis in a database of the harness.
class ContractWithAuditStore : public Contract {
protected:
    void SetUp() override {
        Contract::SetUp();
        static std::atomic<int> counter{0};
        const auto own = m_backend->own_audit_store();
        m_target = own ? *own
                       : PgAuditTarget{PgCluster::shared().create_database(
                                           "contract_audit_" + std::to_string(::getpid()) + "_" +
                                           std::to_string(++counter)),
                                       "retentiond",
                                       "audit",
                                       {}};
        m_log = open_log("contract-run");
    }
    std::unique_ptr<AuditLog> open_log(const std::string& run_id) const {
        return std::make_unique<AuditLog>(open_pg_audit_store(m_target), m_key, run_id);
    }
    RunResult purge_logged(const Rule& rule) {
        RunContext ctx;
        ctx.run_id = m_log->run_id();
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        ctx.journal = m_log.get();
        return m_backend->engine().purge(rule, ctx);
    }
    std::int64_t in_flight() const {
        return std::stoll(
            pg_scalar(m_target.conninfo, "SELECT count(*) FROM retentiond.in_flight"));
    }
    std::vector<ProofEntry> proof(const Rule& rule, const std::string& key) const {
        return prove(*pg_audit_lines(m_target), m_key, rule.name, key);
    }

    PgAuditTarget m_target;
    std::unique_ptr<AuditLog> m_log;
};

TEST_P(ContractWithAuditStore, PurgeWritesAChainThatVerifiesAndProvesEachDeletedRecord) {
    m_backend->seed(basic_fixture());
    auto options = days(30);
    options.batch_size = 1;
    const auto rule = m_backend->make_rule(options);
    const auto result = purge_logged(rule);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(in_flight(), 0);
    const auto verified = verify_audit_lines(*pg_audit_lines(m_target));
    EXPECT_TRUE(verified.ok) << verified.reason;
    EXPECT_EQ(verified.records, 2U);
    for (const auto* key : {"a", "e"}) {
        const auto entries = proof(rule, key);
        ASSERT_EQ(entries.size(), 1U) << key;
        EXPECT_EQ(entries[0].action, "delete");
        EXPECT_TRUE(entries[0].recovered.empty());
    }
    EXPECT_TRUE(proof(rule, "b").empty()) << "a record kept is proved deleted";
}

// A crash between a batch's intent and its outcome: the raw keys wait in the store's in_flight
// table (never on disk), and the next process settles the batch against the datastore: committed
// when its records are gone, rolled back when they are still there.
TEST_P(ContractWithAuditStore, CrashRecoverySettlesTheBatchesLeftInFlightInTheStore) {
    m_backend->seed(basic_fixture());
    const auto rule = m_backend->make_rule(days(30));
    ASSERT_EQ(purge(rule).processed, 2); // the change, journaled elsewhere
    ASSERT_FALSE(m_journal.m_intents.empty());
    BatchIntent applied = m_journal.m_intents.front();
    BatchIntent not_applied = applied;
    not_applied.keys = {"b"};
    {
        auto crashed = open_log("crashed-run");
        crashed->intent(applied);
        crashed->intent(not_applied);
        EXPECT_EQ(in_flight(), 2);
    } // the process ends without outcomes: its session (and writer lock) with it
    auto next = open_log("next-run");
    auto pending = next->pending();
    ASSERT_EQ(pending.size(), 2U);
    for (const auto& p : pending) {
        const auto presence =
            m_backend->engine().records_present(rule, p.batch.target, p.batch.keys);
        ASSERT_NE(presence, Presence::unknown);
        next->resolve(p, presence == Presence::absent, "records checked");
    }
    EXPECT_EQ(in_flight(), 0);
    EXPECT_TRUE(next->pending().empty());
    EXPECT_TRUE(verify_audit_lines(*pg_audit_lines(m_target)).ok);
    const auto entries = proof(rule, applied.keys.front());
    ASSERT_EQ(entries.size(), 1U);
    EXPECT_EQ(entries[0].recovered, "records checked");
    EXPECT_TRUE(proof(rule, "b").empty()) << "a batch rolled back is proved";
}

std::vector<Kind> contract_kinds() {
    std::vector<Kind> kinds;
#define RETENTIOND_CONTRACT_KIND(kind) kinds.push_back(Kind{#kind, make_##kind##_backend});
#include "contract_kinds.inc"
#undef RETENTIOND_CONTRACT_KIND
    return kinds;
}

INSTANTIATE_TEST_SUITE_P(Kinds, Contract, ::testing::ValuesIn(contract_kinds()),
                         [](const auto& kind_info) { return kind_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Kinds, ContractWithAuditStore, ::testing::ValuesIn(contract_kinds()),
                         [](const auto& kind_info) { return kind_info.param.name; });

} // namespace
} // namespace retentiond::test
