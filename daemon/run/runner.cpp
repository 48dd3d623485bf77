#include "retentiond/runner.hpp"

#include "retentiond/audit_pg_store.hpp"
#include "retentiond/crypto.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/timeutil.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

namespace retentiond {

std::vector<const Rule*> select_rules(const Config& config, const std::vector<std::string>& names) {
    std::vector<const Rule*> selected;
    for (const auto& name : names) {
        if (config.find_rule(name) == nullptr) {
            throw std::invalid_argument("unknown rule \"" + name + "\"");
        }
    }
    for (const auto& rule : config.rules) {
        if (names.empty() || std::find(names.begin(), names.end(), rule.name) != names.end()) {
            selected.push_back(&rule);
        }
    }
    return selected;
}

std::string describe_audit(const Config& config) {
    if (config.daemon.audit_store.empty()) {
        return config.daemon.audit_log;
    }
    return "audit store " + config.daemon.audit_store + " (" + config.daemon.audit_schema +
           ".audit_log)";
}

std::unique_ptr<AuditLog> open_audit_log(const Config& config, const std::string& run_id) {
    if (config.daemon.audit_key.empty()) {
        // Digests under no key would be unverifiable: refuse rather than write them.
        throw ConfigError({Diagnostic{{config.main_file, 0, 0},
                                      "",
                                      "daemon.audit_key is not set: refusing to purge without "
                                      "an audit key (digests could not be proven)"}});
    }
    try {
        if (const auto target = audit_store_target(config)) {
            return std::make_unique<AuditLog>(open_pg_audit_store(*target), config.daemon.audit_key,
                                              run_id);
        }
        return std::make_unique<AuditLog>(config.daemon.audit_log, config.daemon.audit_key, run_id);
    } catch (const UnavailableError& e) {
        throw UnavailableError(std::string("audit log: ") + e.what());
    } catch (const std::exception& e) {
        throw AuditWriteError(std::string("audit log: ") + e.what());
    }
}

std::optional<PgAuditTarget> audit_store_target(const Config& config) {
    const auto& name = config.daemon.audit_store;
    if (name.empty()) {
        return std::nullopt;
    }
    const auto& store = config.datastores.at(name); // the loader checked it exists
    PgAuditTarget target{store.kind->audit_conninfo(store), config.daemon.audit_schema, name, {}};
    // A policy may name the store's database under a datastore of its own (Scalingo: `audit` in
    // the main config, the service's name in its policy): the same connection string is the same
    // database, so its batches' lines go in their transactions too.
    for (const auto& [other, ds] : config.datastores) {
        if (other != name && ds.kind == store.kind &&
            ds.kind->audit_conninfo(ds) == target.conninfo) {
            target.same_database.push_back(other);
        }
    }
    return target;
}

std::unique_ptr<AuditLines> open_audit_lines(const Config& config,
                                             const std::optional<std::string>& log_file,
                                             bool with_rotated) {
    if (log_file) {
        return file_audit_lines(*log_file, with_rotated);
    }
    if (const auto target = audit_store_target(config)) {
        return pg_audit_lines(*target);
    }
    return file_audit_lines(config.daemon.audit_log, with_rotated);
}

void log_audit_head(const AuditLog& audit) {
    spdlog::info("audit head: seq={} sha256={} ({})", audit.last_seq(), audit.last_hash(),
                 audit.path());
}

void Runner::log_audit_head() const {
    if (!m_head.empty()) {
        spdlog::info("{}", m_head);
    }
}

Engine& Runner::engine(const std::string& datastore) {
    auto it = m_engines.find(datastore);
    if (it == m_engines.end()) {
        it = m_engines.emplace(datastore, make_engine(m_config.datastores.at(datastore), m_config))
                 .first;
    }
    return *it->second;
}

void Runner::reset_engine(const std::string& datastore) {
    m_engines.erase(datastore);
}

int Runner::recover(AuditLog& audit) {
    return resolve(audit, audit.pending());
}

int Runner::resolve(AuditLog& audit, const std::vector<AuditLog::Pending>& batches) {
    int resolved = 0;
    for (const auto& pending : batches) {
        const Rule* rule = m_config.find_rule(pending.batch.rule);
        if (rule == nullptr) {
            audit.resolve(pending, false, "undetermined: rule no longer in the config");
            spdlog::warn("audit: batch {} of removed rule {} left unresolved by a crash; "
                         "recorded as undetermined",
                         pending.batch_id, pending.batch.rule);
            ++resolved;
            continue;
        }
        // A store that is down keeps its batch pending until a later run can look.
        try {
            const auto presence =
                engine(rule->datastore)
                    .records_present(*rule, pending.batch.target, pending.batch.keys);
            switch (presence) {
            case Presence::present:
                audit.resolve(pending, false, "records still present: rolled back");
                break;
            case Presence::absent:
                audit.resolve(pending, true, "records gone: committed");
                break;
            case Presence::unknown:
                audit.resolve(pending, false, "undetermined: the store cannot tell");
                break;
            }
            ++resolved;
        } catch (const UnavailableError& e) {
            reset_engine(rule->datastore);
            spdlog::warn("audit: cannot resolve batch {} of rule {} yet: {}", pending.batch_id,
                         rule->name, e.what());
        }
    }
    return resolved;
}

std::string rule_run_status(const RuleRun& run) {
    switch (run.failure) {
    case RuleRun::Failure::unavailable:
        return "unavailable";
    case RuleRun::Failure::error:
        return "failed";
    case RuleRun::Failure::none:
        break;
    }
    switch (run.result.status) {
    case RunResult::Status::ok:
        return "ok";
    case RunResult::Status::refused:
        return "refused";
    case RunResult::Status::failed:
        return "failed";
    case RunResult::Status::stopped:
        return "stopped";
    }
    return "failed";
}

RuleRun Runner::run_rule(const Rule& rule, AuditLog& audit, const std::string& run_id,
                         const PurgeOptions& options) {
    RuleRun run;
    run.run_id = run_id;
    run.rule = rule.name;
    run.datastore = rule.datastore;
    const auto started = std::chrono::steady_clock::now();
    RunContext ctx;
    ctx.run_id = run_id;
    ctx.force = options.force;
    ctx.tz = m_config.zone();
    ctx.audit_key = &m_config.daemon.audit_key;
    ctx.journal = &audit;
    ctx.stop_requested = options.stop_requested;
    if (options.progress) {
        ctx.on_progress = [&](std::int64_t done, std::int64_t total) {
            options.progress(rule, done, total);
        };
    }
    if (options.phase) {
        ctx.on_phase = [&](std::string_view phase) { options.phase(rule, phase); };
    }
    try {
        run.result = engine(rule.datastore).purge(rule, ctx);
    } catch (const UnavailableError& e) {
        run.failure = RuleRun::Failure::unavailable;
        run.error = e.what();
        reset_engine(rule.datastore);
    } catch (const AuditWriteError& e) {
        run.failure = RuleRun::Failure::error;
        run.error = std::string("audit log: ") + e.what();
        run.audit_error = true;
    } catch (const std::exception& e) {
        run.failure = RuleRun::Failure::error;
        run.error = e.what();
    }
    run.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    try {
        write_rule_end(audit, run, options);
    } catch (const AuditWriteError& e) {
        // The batches applied have their lines; this run's end cannot be told: exit 74.
        run.failure = RuleRun::Failure::error;
        run.audit_error = true;
        if (run.error.empty()) {
            run.error = std::string("audit log: ") + e.what();
        }
    }
    return run;
}

void Runner::write_rule_end(AuditLog& audit, const RuleRun& run, const PurgeOptions& options) {
    const auto& rule = run.rule;
    if (run.failure != RuleRun::Failure::none) {
        audit.event("error", {{"rule", rule},
                              {"datastore", run.datastore},
                              {"unavailable", run.failure == RuleRun::Failure::unavailable},
                              {"message", run.error}});
    }
    // One line per rule run, even when nothing was due: the report tells "compliant, ran
    // today" from "never ran" and "failing" by it.
    nlohmann::json end{{"rule", rule},
                       {"datastore", run.datastore},
                       {"ok", run.ok()},
                       {"status", rule_run_status(run)},
                       {"due", run.result.due},
                       {"processed", run.result.processed},
                       {"elapsed_ms", run.elapsed.count()}};
    if (!run.result.path.empty()) {
        end["path"] = run.result.path;
    }
    if (options.slot) {
        end["slot"] = format_utc_seconds(*options.slot);
    }
    audit.event("rule_end", end);
}

std::vector<RuleRun> Runner::purge(const PurgeOptions& options) {
    const auto rules = select_rules(m_config, options.rules);
    const auto run_id = new_run_id();
    const auto audit = open_audit_log(m_config, run_id);
    audit->run_start(m_config, options.mode);
    recover(*audit);
    std::vector<RuleRun> runs;
    for (const Rule* rule : rules) {
        if (options.stop_requested && options.stop_requested()) {
            break;
        }
        runs.push_back(run_rule(*rule, *audit, run_id, options));
        if (runs.back().audit_error) {
            break; // every later batch would fail on its intent line
        }
    }
    nlohmann::json summary = nlohmann::json::array();
    for (const auto& run : runs) {
        summary.push_back({{"rule", run.rule},
                           {"processed", run.result.processed},
                           {"ok", run.ok()},
                           {"elapsed_ms", run.elapsed.count()}});
    }
    const int code = exit_code(runs);
    try {
        audit->run_end(code == 0 ? "ok" : "partial", summary);
    } catch (const AuditWriteError& e) {
        if (runs.empty()) {
            throw;
        }
        runs.back().audit_error = true;
        runs.back().failure = RuleRun::Failure::error;
        runs.back().error = std::string("audit log: ") + e.what();
    }
    m_head = "audit head: seq=" + std::to_string(audit->last_seq()) +
             " sha256=" + audit->last_hash() + " (" + audit->path() + ")";
    return runs;
}

std::vector<RuleDryRun> Runner::dry_run(const std::vector<std::string>& names) {
    std::vector<RuleDryRun> out;
    RunContext ctx;
    ctx.run_id = "dry-run";
    ctx.tz = m_config.zone();
    ctx.audit_key = &m_config.daemon.audit_key;
    for (const Rule* rule : select_rules(m_config, names)) {
        RuleDryRun dry;
        dry.rule = rule->name;
        dry.datastore = rule->datastore;
        try {
            dry.dry = engine(rule->datastore).dry_run(*rule, ctx);
        } catch (const UnavailableError& e) {
            dry.unavailable = true;
            dry.error = e.what();
            reset_engine(rule->datastore);
        } catch (const std::exception& e) {
            dry.error = e.what();
        }
        out.push_back(std::move(dry));
    }
    return out;
}

int exit_code(const std::vector<RuleRun>& runs) {
    bool audit = false;
    bool data = false;
    bool unavailable = false;
    bool partial = false;
    for (const auto& run : runs) {
        audit = audit || run.audit_error;
        data = data || run.result.data_error;
        unavailable = unavailable || run.failure == RuleRun::Failure::unavailable;
        partial = partial || !run.ok();
    }
    if (audit) {
        return k_exit_ioerr; // without its log lines, nothing else the run says can be proven
    }
    if (data) {
        return k_exit_data;
    }
    if (unavailable) {
        return k_exit_unavailable;
    }
    return partial ? k_exit_partial : k_exit_ok;
}

} // namespace retentiond
