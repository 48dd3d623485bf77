// Leaf partitions of a range on the clock, judged by their bounds before any row is read (and any
// other partition with a btree index on the clock, by its clock's extremes, re-checked once it is
// detached and no row can arrive any more). A leaf
// whose upper bound is due (every row's clock is below it, so every row is due) is emptied whole:
// in one transaction bounded by lock_timeout, DETACH PARTITION (then the keys, with
// `partition_digests: keys`, or a count(*), with `partition_rows: exact`), the audit intent naming
// the partition, its bounds and its row count (by default the planner's estimate, labelled so: a
// count would read every row, and the drop's cost would grow with them),
// then DROP TABLE (or the table kept detached, `partitions: detach`) and COMMIT. A crash or a
// failure before the commit leaves the partition attached and intact; the intent then has a
// rolled-back outcome (or crash recovery finds the partition still attached). A held row inside,
// a rule with dependents or notices, `partitions: rows`, or any failure sends the leaf back to the
// batches. A leaf whose lower bound is not due holds no due row and is not read at all.
//
// Not with DETACH ... CONCURRENTLY: it cannot run inside a transaction, so the detach, the audit
// intent and the drop could not commit together, and it is refused when a DEFAULT partition
// exists. The plain DETACH takes an ACCESS EXCLUSIVE lock on the parent for the few milliseconds
// of the transaction, waiting at most lock_timeout for it.
#include "postgres_engine.hpp"

#include "pg_audit_tx.hpp"
#include "pg_copy.hpp"
#include "pg_errors.hpp"
#include "pg_shape.hpp"
#include "pg_statements.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"

#include <algorithm>
#include <iterator>
#include <regex>
#include <set>

namespace retentiond::pg {

using pg_sql::exec;

namespace {

// The leaves among $1 whose parent is partitioned by range on the single column $2.
constexpr const char* k_range_leaves_sql = R"(
SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', pn.nspname, p.relname),
       n.nspname || '.' || c.relname, pg_get_expr(c.relpartbound, c.oid),
       c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_inherits i ON i.inhrelid = c.oid
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_partitioned_table pt ON pt.partrelid = i.inhparent
JOIN pg_attribute a ON a.attrelid = i.inhparent AND a.attnum = pt.partattrs[0]
WHERE c.oid = ANY ($1::regclass[]) AND c.relispartition AND pt.partstrat = 'r'
  AND pt.partnatts = 1 AND a.attname = $2)";

// The partitioned table $1 is a partition of, its name as schema.name, its estimated rows.
constexpr const char* k_partition_of_sql = R"(
SELECT format('%I.%I', pn.nspname, p.relname), n.nspname || '.' || c.relname, c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_inherits i ON i.inhrelid = c.oid
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE c.oid = $1::regclass AND c.relispartition)";

// "FOR VALUES FROM ('a') TO ('b')": the two bound literals as the server prints them.
bool split_bounds(const std::string& text, std::string& from, std::string& to) {
    static const std::regex re(R"(^FOR VALUES FROM \((.*)\) TO \((.*)\)$)");
    std::smatch m;
    if (!std::regex_match(text, m, re)) {
        return false;
    }
    from = m[1].str();
    to = m[2].str();
    return true;
}

enum class Verdict { whole, none, boundary };

// Judges one leaf by its bounds (literals from the catalog, cast to the clock's type).
Verdict judge(pqxx::transaction_base& tx, const Plan& plan, const std::string& type,
              WholePartition& p, const std::string& from_literal, const std::string& to_literal) {
    if (to_literal == "MAXVALUE") {
        return Verdict::boundary;
    }
    Params q;
    const auto retain = q.add(plan.rule->retain.to_pg_interval()) + "::interval";
    const auto now = q.add(plan.now_text) + "::timestamptz";
    const bool has_from = from_literal != "MINVALUE";
    const auto lower = "(" + (has_from ? from_literal : "NULL") + ")::" + type;
    const auto upper = "(" + to_literal + ")::" + type;
    const auto row = exec(
        tx,
        "SELECT " + upper + " + " + retain + " <= " + now + ", " + lower + " + " + retain +
            " <= " + now + ", " + upper + "::text, " + lower + "::text, (extract(epoch FROM " +
            upper + ") * 1000000)::bigint, (extract(epoch FROM " + lower + ") * 1000000)::bigint",
        q)[0];
    p.to = row[2].c_str();
    p.to_us = row[4].as<std::int64_t>();
    if (has_from) {
        p.from = row[3].c_str();
        p.from_us = row[5].as<std::int64_t>();
    }
    if (row[0].as<bool>()) {
        return Verdict::whole;
    }
    return has_from && !row[1].as<bool>() ? Verdict::none : Verdict::boundary;
}

// Whether a leaf wholly due may be emptied without per-row statements.
bool may_empty_whole(const Rule& rule) {
    const auto& pg = spec_of<PostgresRule>(rule);
    return rule.action == Action::remove && pg.dependents.empty() && !pg.notice &&
           pg.partitions != PostgresRule::Partitions::rows;
}

// Whether every row of `leaf` is due, from its clock's extremes (an index makes them cheap):
// the latest clock is due and no row lacks a clock (unless `clock_null: due`). Also selects the
// extremes: text, then microseconds since the epoch. NULL when the leaf is empty.
std::string min_max_sql(const Plan& plan, const std::string& leaf, Params& q) {
    const auto retain = q.add(plan.rule->retain.to_pg_interval()) + "::interval";
    const auto now = q.add(plan.now_text) + "::timestamptz";
    const std::string& c = plan.clock;
    const std::string no_null = plan.rule->clock_null_due ? std::string()
                                                          : " AND NOT EXISTS (SELECT 1 FROM " +
                                                                leaf + " WHERE " + c + " IS NULL)";
    return "SELECT max(" + c + ") + " + retain + " <= " + now + no_null + ", min(" + c +
           ")::text, max(" + c + ")::text, (extract(epoch FROM min(" + c +
           ")) * 1000000)::bigint, (extract(epoch FROM max(" + c + ")) * 1000000)::bigint FROM " +
           leaf;
}

// A partition no range on the clock judges (list, hash, DEFAULT, the one across the cutoff)
// whose every row is due by its clock's extremes, read through a btree index on the clock.
std::optional<WholePartition> whole_by_extremes(pqxx::transaction_base& tx, const Plan& plan,
                                                const std::string& clock, const std::string& leaf) {
    if (pg_shape::clock_btree_index(tx, leaf, clock).empty()) {
        return std::nullopt;
    }
    const auto of = exec(tx, k_partition_of_sql, Params({leaf}));
    if (of.empty()) {
        return std::nullopt; // an inheritance child: DETACH PARTITION does not apply
    }
    Params q;
    const auto row = exec(tx, min_max_sql(plan, leaf, q), q)[0];
    if (row[0].is_null() || !row[0].as<bool>()) {
        return std::nullopt;
    }
    WholePartition p{leaf,
                     of[0][0].c_str(),
                     of[0][1].c_str(),
                     row[1].c_str(),
                     row[2].c_str(),
                     row[3].as<std::int64_t>(),
                     row[4].as<std::int64_t>() + 1,
                     of[0][2].as<std::int64_t>()};
    p.by_extremes = true;
    return p;
}

// The rows a leaf stands for in the limits: the planner's estimate, or its count when there is
// none (never analyzed) or when a hold keeps some of its rows (then its due rows).
void estimate_rows(pqxx::transaction_base& tx, const Plan& plan, WholePartition& p, bool whole) {
    if (!(whole && spec_of<PostgresRule>(*plan.rule).hold) && p.estimated_rows >= 1) {
        return;
    }
    Params c;
    const auto where = whole ? " WHERE " + due_sql(plan, tx, c) : std::string();
    p.estimated_rows =
        exec(tx, "SELECT count(*) FROM " + p.leaf + where, c)[0][0].as<std::int64_t>();
}

} // namespace

void PostgresEngine::classify_partitions(pqxx::transaction_base& tx, PreparedRun& run) {
    const auto& pg = spec_of<PostgresRule>(*run.plan.rule);
    if (!run.by_heaps || pg.clock.size() != 1) {
        return;
    }
    const std::string type = run.plan.columns.at(pg.clock.front()).type;
    std::set<std::string> judged;
    std::vector<std::string> tables; // "ONLY parent" (an inheritance parent) is no partition
    std::copy_if(run.heaps.begin(), run.heaps.end(), std::back_inserter(tables),
                 [](const std::string& h) { return h.rfind("ONLY ", 0) != 0; });
    const auto leaves =
        exec(tx, k_range_leaves_sql, Params({pg_sql::array_literal(tables), pg.clock.front()}));
    for (const auto& row : leaves) {
        WholePartition p{row[0].c_str(),           row[1].c_str(), row[2].c_str(), "", "", {}, 0,
                         row[4].as<std::int64_t>()};
        std::string from;
        std::string to;
        if (!split_bounds(row[3].c_str(), from, to)) {
            continue;
        }
        const Verdict verdict = judge(tx, run.plan, type, p, from, to);
        const bool whole = verdict == Verdict::whole && may_empty_whole(*run.plan.rule);
        if (verdict != Verdict::boundary) {
            estimate_rows(tx, run.plan, p, whole);
        }
        if (whole && p.estimated_rows == 0) {
            judged.insert(p.leaf); // nothing in it: nothing to empty, nothing to walk
        } else if (whole) {
            judged.insert(p.leaf);
            run.whole.push_back(std::move(p));
        } else if (verdict == Verdict::none) {
            judged.insert(p.leaf);
            ++run.skipped_partitions;
            run.skipped_rows += p.estimated_rows;
        }
    }
    for (const auto& leaf : tables) {
        if (judged.count(leaf) != 0 || !may_empty_whole(*run.plan.rule)) {
            continue;
        }
        if (auto p = whole_by_extremes(tx, run.plan, pg.clock.front(), leaf)) {
            estimate_rows(tx, run.plan, *p, true);
            judged.insert(leaf);
            if (p->estimated_rows > 0) {
                run.whole.push_back(std::move(*p));
            }
        }
    }
    std::erase_if(run.heaps, [&](const std::string& h) { return judged.count(h) != 0; });
}

void PostgresEngine::empty_whole_partitions(PreparedRun& run, RunContext& ctx,
                                            RunResult& result) const {
    if (run.whole.empty()) {
        return;
    }
    auto conn = connect();
    for (const auto& p : run.whole) {
        if (stop_requested(ctx)) {
            run.heaps.push_back(p.leaf); // not reached: left to a later run, said by the stop
            continue;
        }
        if (!empty_partition(*conn, run, p, ctx, result)) {
            run.heaps.push_back(p.leaf); // purged by the batches instead
        }
    }
    if (run.skipped_partitions > 0) {
        result.counters["partitions.skipped_not_due"] = run.skipped_partitions;
    }
}

} // namespace retentiond::pg

namespace retentiond::pg {
namespace {

// The intent of a partition emptied whole: the partition stands for its rows' keys.
BatchIntent partition_intent(const PreparedRun& run, const std::string& datastore,
                             const WholePartition& p, std::int64_t rows) {
    const Rule& rule = *run.plan.rule;
    const auto& pg = spec_of<PostgresRule>(rule);
    BatchIntent intent;
    intent.rule = rule.name;
    intent.datastore = datastore;
    intent.target = p.name;
    intent.action = "delete";
    PartitionBatch part;
    part.parent = pg.table;
    part.from = p.from;
    part.to = p.to;
    part.from_us = p.from_us;
    part.to_us = p.to_us;
    const auto at = std::find(pg.key.begin(), pg.key.end(), pg.clock.front());
    part.key_index = at == pg.key.end() ? -1 : static_cast<int>(at - pg.key.begin());
    part.key_columns = static_cast<int>(pg.key.size());
    part.rows = rows;
    part.disposition = pg.partitions == PostgresRule::Partitions::detach ? "detached" : "dropped";
    intent.partition = std::move(part);
    return intent;
}

// The keys of a detached leaf, canonical, for `partition_digests: keys`: streamed (COPY), each
// digested as it arrives when the journal digests (`intent.digests`), else kept in `intent.keys`.
// Returns the rows read.
std::int64_t read_leaf_keys(pqxx::transaction_base& tx, const Plan& plan, const WholePartition& p,
                            const BatchJournal* journal, BatchIntent& intent) {
    // Room for the digests as the planner expects them (up to 2M: an estimate can be stale).
    const std::int64_t rows = std::clamp<std::int64_t>(p.estimated_rows, 0, std::int64_t{1} << 21);
    const auto digest = journal != nullptr ? journal->digester(plan.rule->name) : nullptr;
    if (digest) {
        intent.digests.emplace();
        intent.digests->reserve(static_cast<std::size_t>(rows) * 67);
    }
    std::string composite;
    return copy_rows(
        tx, "SELECT " + keys_text_sql(plan) + " FROM " + p.leaf, [&](const CopyRow& row) {
            if (row.fields.size() != 1) {
                composite = canonical_key(row.fields);
            }
            const std::string& key = row.fields.size() == 1 ? row.fields.front() : composite;
            if (digest) {
                digest(key, *intent.digests);
            } else {
                intent.keys.push_back(key);
            }
        });
}

// Inside the detach transaction, the leaf detached (no row can arrive any more): throws, sending
// it back to the batches, when a row not due yet is in a leaf judged by its clock's extremes, or
// when it holds a held row.
void check_detached(pqxx::work& tx, const Plan& plan, const WholePartition& p) {
    Params x;
    if (p.by_extremes && !exec(tx, min_max_sql(plan, p.leaf, x), x)[0][0].as<bool>(false)) {
        throw std::runtime_error("a row not due yet arrived in it");
    }
    Params h;
    if (spec_of<PostgresRule>(*plan.rule).hold &&
        exec(tx, "SELECT EXISTS (SELECT 1 FROM " + p.leaf + " WHERE " + held_sql(plan, tx, h) + ")",
             h)[0][0]
            .as<bool>()) {
        throw std::runtime_error("it holds a held row");
    }
}

// The detached leaf's intent: its rows the planner's estimate (partition_rows: estimate, no row
// read), a count(*) (exact), or its keys read for their digests (partition_digests: keys).
BatchIntent detached_intent(pqxx::work& tx, const PreparedRun& run, const std::string& datastore,
                            const WholePartition& p, const BatchJournal* journal) {
    const auto& pg = spec_of<PostgresRule>(*run.plan.rule);
    BatchIntent intent = partition_intent(run, datastore, p, p.estimated_rows);
    intent.partition->rows_estimated = !pg.partition_digests && !pg.partition_rows_exact;
    if (pg.partition_digests) {
        intent.partition->rows = read_leaf_keys(tx, run.plan, p, journal, intent);
    } else if (pg.partition_rows_exact) {
        intent.partition->rows = tx.exec1("SELECT count(*) FROM " + p.leaf)[0].as<std::int64_t>();
    }
    return intent;
}

} // namespace

// One leaf emptied whole in one transaction; false (nothing changed, the audit saying why) when it
// must go through the batches instead.
bool PostgresEngine::empty_partition(pqxx::connection& conn, const PreparedRun& run,
                                     const WholePartition& p, RunContext& ctx,
                                     RunResult& result) const {
    const Rule& rule = *run.plan.rule;
    const auto& pg = spec_of<PostgresRule>(rule);
    std::optional<std::string> batch_id;
    BatchIntent intent;
    try {
        pqxx::work tx(conn);
        set_local(tx, run.plan);
        tx.exec0("ALTER TABLE " + p.parent + " DETACH PARTITION " + p.leaf);
        // The run's own transaction id, for the proof that nothing else wrote (pg_targets.cpp).
        run.evidence->add_xid(
            std::stoull(tx.exec1("SELECT pg_current_xact_id()::text")[0].c_str()));
        check_detached(tx, run.plan, p);
        intent = detached_intent(tx, run, m_name, p, ctx.journal);
        intent.cutoff = result.cutoff;
        const bool in_tx = lines_in_transaction(ctx.journal, m_name);
        if (ctx.journal != nullptr && !in_tx) {
            batch_id = ctx.journal->intent(intent);
        }
        if (pg.partitions == PostgresRule::Partitions::drop) {
            tx.exec0("DROP TABLE " + p.leaf);
        }
        if (in_tx) { // the audit store's own database: the lines commit with the partition's end
            write_lines(*ctx.journal->lines_for(intent, intent.partition->rows), tx);
        }
        tx.commit();
    } catch (const pqxx::broken_connection&) {
        throw; // outcome unknown: crash recovery asks whether the partition is still attached
    } catch (const pqxx::in_doubt_error&) {
        throw;
    } catch (const AuditWriteError&) {
        throw; // rolled back; the run stops before touching more
    } catch (const std::exception& e) {
        if (batch_id) {
            ctx.journal->outcome(*batch_id, false, 0);
        }
        const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e);
        journal_event(ctx.journal, rule, "partition_kept",
                      {{"partition", p.name},
                       {"sqlstate", sql != nullptr ? sql->sqlstate() : ""},
                       {"reason", first_line(e.what())}});
        ++result.counters["partitions.kept_attached"];
        recount_due(conn, run, p, result);
        return false;
    }
    const std::int64_t rows = intent.partition->rows;
    if (batch_id) {
        ctx.journal->outcome(*batch_id, true, rows);
    }
    if (intent.partition->rows_estimated) {
        result.counters["partitions.rows_estimated"] += rows;
    }
    result.processed += rows;
    result.due += rows - p.estimated_rows;
    ++result.batches;
    ++result.counters[pg.partitions == PostgresRule::Partitions::drop ? "partitions.dropped"
                                                                      : "partitions.detached"];
    if (ctx.on_progress) {
        ctx.on_progress(result.processed, result.due);
    }
    return true;
}

// A leaf sent back to the batches: its estimate in the due count becomes its exact due rows.
void PostgresEngine::recount_due(pqxx::connection& conn, const PreparedRun& run,
                                 const WholePartition& p, RunResult& result) const {
    pqxx::work tx(conn);
    set_local(tx, run.plan);
    Params c;
    const auto due =
        exec(tx, "SELECT count(*) FROM " + p.leaf + " WHERE " + due_sql(run.plan, tx, c), c)[0][0]
            .as<std::int64_t>();
    tx.commit();
    result.due += due - p.estimated_rows;
}

} // namespace retentiond::pg
