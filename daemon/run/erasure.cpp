// Erasure requests, run (erasure.hpp): shared by `retentiond erase` and the daemon.
#include "retentiond/erasure.hpp"

#include "retentiond/engine_common.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/runner.hpp"
#include "retentiond/timeutil.hpp"

#include <algorithm>
#include <map>
#include <ostream>
#include <set>

namespace retentiond {
namespace {

std::string pad(const std::string& s, std::size_t width) {
    return s.size() >= width ? s + " " : s + std::string(width - s.size(), ' ');
}

void count_all(std::vector<ErasureTarget>& targets, ErasureSession& s) {
    for (auto& t : targets) {
        try {
            t.counted = s.engine(t.rule->datastore).erase_subject(*t.rule, t.query, s.ctx(), true);
        } catch (const UnavailableError& e) {
            t.unavailable = e.what();
        }
    }
}

// The limits over every rule before any is applied: the first refusal refuses the request.
std::optional<std::string> refusal(std::vector<ErasureTarget>& targets, const RunContext& ctx) {
    for (auto& t : targets) {
        if (!t.unavailable.empty() || t.counted.status != RunResult::Status::ok) {
            continue;
        }
        const std::int64_t matched = t.counted.due + t.counted.counters["held"];
        const LimitScope scope{matched, t.counted.counters["in_scope"], "records",
                               "matching the subject in rule " + t.rule->name};
        RunResult r;
        if (refuse_over_limits(*t.rule, ctx, scope, r)) {
            return r.message;
        }
    }
    return std::nullopt;
}

void apply_all(std::vector<ErasureTarget>& targets, ErasureSession& s) {
    for (auto& t : targets) {
        if (!t.unavailable.empty() || t.counted.status != RunResult::Status::ok ||
            t.counted.due == 0) {
            continue;
        }
        try {
            t.applied = s.engine(t.rule->datastore).erase_subject(*t.rule, t.query, s.ctx(), false);
        } catch (const UnavailableError& e) {
            t.unavailable = e.what();
        }
    }
}

ErasureRuleOutcome outcome_of(const ErasureTarget& t) {
    ErasureRuleOutcome o;
    o.rule = t.rule->name;
    const RunResult& r = t.applied ? *t.applied : t.counted;
    o.erased = t.applied ? t.applied->processed : 0;
    o.deferred = t.counted.counters.count("held") ? t.counted.counters.at("held") : 0;
    if (!t.unavailable.empty()) {
        o.status = "unavailable";
        o.reason = t.unavailable;
    } else if (r.status != RunResult::Status::ok) {
        o.status = "failed";
        o.reason = r.message;
    } else if (t.applied && o.erased < t.counted.due) {
        o.status = "failed";
        o.reason = std::to_string(t.counted.due - o.erased) + " record(s) changed meanwhile";
    } else {
        o.status = o.deferred > 0 ? "deferred" : o.erased > 0 ? "erased" : "none";
    }
    return o;
}

// The request's new state from its rules' outcomes.
void settle(ErasureRequest& req, const std::vector<ErasureTarget>& targets, ErasureMode mode) {
    req.rules.clear();
    bool failed = false;
    bool deferred = false;
    std::int64_t erased = 0;
    for (const auto& t : targets) {
        req.rules.push_back(outcome_of(t));
        const auto& o = req.rules.back();
        failed = failed || o.status == "failed" || o.status == "unavailable";
        deferred = deferred || o.deferred > 0;
        erased += o.erased;
    }
    req.status = failed ? "open" : deferred ? "deferred" : "done";
    req.erased = mode == ErasureMode::reapply ? 0 : erased;
    req.reapplied = mode == ErasureMode::reapply ? erased : 0;
}

// Whether a pass over a recorded request changed anything worth a ledger line (the recorded
// rules come back from the line in name order, the new ones in config order).
bool changed(const ErasureRequest& before, const ErasureRequest& after) {
    if (after.erased > 0 || after.reapplied > 0 || after.status != before.status ||
        after.rules.size() != before.rules.size()) {
        return true;
    }
    std::map<std::string, std::pair<std::string, std::int64_t>> recorded;
    for (const auto& b : before.rules) {
        recorded[b.rule] = {b.status, b.deferred};
    }
    for (const auto& a : after.rules) {
        const auto it = recorded.find(a.rule);
        if (it == recorded.end() || it->second != std::make_pair(a.status, a.deferred)) {
            return true;
        }
    }
    return false;
}

int exit_code_of(const std::vector<ErasureTarget>& targets) {
    int code = k_exit_ok;
    for (const auto& t : targets) {
        const RunResult& r = t.applied ? *t.applied : t.counted;
        if (!t.unavailable.empty()) {
            code = std::max(code, static_cast<int>(k_exit_unavailable));
        } else if (r.status != RunResult::Status::ok) {
            code = code == k_exit_ok ? (r.data_error ? k_exit_data : k_exit_partial) : code;
        }
    }
    return code;
}

void print_row(std::ostream& out, const ErasureTarget& t, bool dry) {
    const auto o = outcome_of(t);
    std::string status = o.status;
    if (dry && o.reason.empty()) {
        status = t.counted.due > 0 ? "would erase" : o.deferred > 0 ? "would defer" : "none";
    }
    out << pad(t.rule->name, 34) << pad(status, 13) << pad(std::to_string(t.counted.due), 8);
    if (dry) {
        out << pad(std::to_string(o.deferred), 8) << o.reason << '\n';
    } else {
        out << pad(std::to_string(o.erased), 8) << pad(std::to_string(o.deferred), 10) << o.reason
            << '\n';
    }
    // The counters of what ran (a dry run's too: "idle_reset" says what its reads did).
    for (const auto& [name, value] : (t.applied ? *t.applied : t.counted).counters) {
        if (value != 0 && name != "in_scope" && name != "held") {
            out << "    " << name << ": " << value << '\n';
        }
    }
}

void print_targets(std::ostream& out, const std::vector<ErasureTarget>& targets, bool dry) {
    out << pad("RULE", 34) << pad("STATUS", 13) << pad("FOUND", 8)
        << pad(dry ? "HELD" : "ERASED", 8) << pad(dry ? "" : "DEFERRED", dry ? 0 : 10)
        << "DETAIL\n";
    for (const auto& t : targets) {
        print_row(out, t, dry);
    }
}

} // namespace

std::vector<ErasureTarget> erasure_targets(const Config& config, const std::string& kind,
                                           const SubjectQuery& base) {
    std::vector<ErasureTarget> out;
    std::set<std::string> declared;
    for (const auto& rule : config.rules) {
        for (const auto& [k, field] : rule.subjects) {
            declared.insert(k);
        }
        const auto it = rule.subjects.find(kind);
        if (it == rule.subjects.end()) {
            continue;
        }
        ErasureTarget t;
        t.rule = &rule;
        t.query = base;
        t.query.kind = kind;
        t.query.field = it->second;
        out.push_back(std::move(t));
    }
    if (out.empty()) {
        std::string list;
        for (const auto& k : declared) {
            list += (list.empty() ? "" : ", ") + k;
        }
        throw UsageError("--subject: no rule declares the identifier kind \"" + kind +
                         "\" (subject:)" +
                         (list.empty() ? "; no rule declares any" : "; declared: " + list));
    }
    return out;
}

ErasureSession::ErasureSession(const Config& config, AuditLog* log, std::function<bool()> stop)
    : m_config(config), m_log(log) {
    m_ctx.run_id = log != nullptr ? log->run_id() : new_run_id();
    m_ctx.tz = config.zone();
    m_ctx.audit_key = &config.daemon.audit_key;
    m_ctx.stop_requested = std::move(stop);
    m_ctx.journal = log;
}

Engine& ErasureSession::engine(const std::string& datastore) {
    auto& e = m_engines[datastore];
    if (!e) {
        e = make_engine(m_config.datastores.at(datastore), m_config);
    }
    return *e;
}

int process_erasure(ErasureSession& s, ErasureRequest& req, std::vector<ErasureTarget>& targets,
                    ErasureMode mode, std::ostream& out, std::ostream& err) {
    s.ctx().request = req.subject;
    count_all(targets, s);
    if (const auto why = refusal(targets, s.ctx())) {
        err << "retentiond: erasure request " << req.id << " refused, nothing touched: " << *why
            << '\n';
        return k_exit_partial;
    }
    if (!s.dry()) {
        const ErasureRequest before = req;
        apply_all(targets, s);
        settle(req, targets, mode);
        if (mode == ErasureMode::request || changed(before, req)) {
            s.log()->event(std::string(k_erasure_event), erasure_event_fields(req));
        }
    }
    out << (mode == ErasureMode::reapply ? "re-application of request " : "request ") << req.id
        << " (" << req.kind << ", received " << format_utc_seconds(req.received) << ", deadline "
        << format_utc_seconds(req.deadline) << ")" << (s.dry() ? ": dry run, nothing changed" : "")
        << '\n';
    print_targets(out, targets, s.dry());
    if (!s.dry()) {
        out << "status: " << req.status << '\n';
    }
    return exit_code_of(targets);
}

LedgerPass run_ledger_pass(const Config& config, AuditLog& log, ErasureMode mode,
                           const std::string& reason, const std::function<bool()>& stop,
                           std::ostream& out, std::ostream& err) {
    const auto ledger = read_ledger(*open_audit_lines(config, std::nullopt));
    ErasureSession s(config, &log, stop);
    LedgerPass pass;
    for (auto req : ledger) {
        if ((mode == ErasureMode::resume && !req.open()) || (stop && stop())) {
            continue;
        }
        SubjectQuery base;
        base.digests.insert(req.subject);
        base.audit_key = &config.daemon.audit_key;
        std::vector<ErasureTarget> targets;
        try {
            targets = erasure_targets(config, req.kind, base);
        } catch (const UsageError& e) {
            // The configuration no longer declares its kind: the request cannot be run again.
            err << "retentiond: request " << req.id << " skipped: " << e.what() << '\n';
            pass.code = std::max(pass.code, static_cast<int>(k_exit_partial));
            continue;
        }
        pass.code = std::max(pass.code, process_erasure(s, req, targets, mode, out, err));
        pass.erased += req.erased + req.reapplied;
        ++pass.requests;
    }
    if (mode == ErasureMode::reapply) {
        // When every request was last re-applied (the daemon's weekly pass counts from it). A
        // store down or a stop is tried again; another failure would fail the same way.
        const bool stopped = stop && stop();
        log.event(std::string(k_reapply_event),
                  {{"reason", reason},
                   {"requests", pass.requests},
                   {"reapplied", pass.erased},
                   {"ok", pass.code != k_exit_unavailable && !stopped}});
    }
    return pass;
}

} // namespace retentiond
