// `retentiond erase`: an erasure request through every rule that declares the identifier's kind.
//
// 1. the rules declaring the kind (none: usage error), one engine per datastore;
// 2. every rule counts the subject's records (Engine::erase_subject, dry) and the limits are
//    checked over all of them: one over-broad match refuses the whole request, nothing touched;
// 3. every rule applies its action to the records not held (deferred otherwise), journaled with
//    the request's digest in each intent;
// 4. one `erasure_request` event (ledger.hpp) records the request's state: done, deferred (held
//    records remain) or open (a rule failed or its store was down: a rerun resumes it).
// --resume and --reapply do 2-4 for the requests of the ledger, from the subject's digest alone.
#include "erase_cli.hpp"

#include "options.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/ledger.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/runner.hpp"
#include "retentiond/subject.hpp"
#include "retentiond/timeutil.hpp"

#include <csignal>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>

namespace retentiond {
namespace {

volatile std::sig_atomic_t g_erase_stop = 0;

void on_erase_stop(int) {
    g_erase_stop = 1;
}

enum class Mode { request, resume, reapply };

// One rule's part of a request.
struct Target {
    const Rule* rule = nullptr;
    SubjectQuery query;
    RunResult counted;
    std::optional<RunResult> applied;
    std::string unavailable; // the store's error, when it could not be reached
};

class Engines {
public:
    explicit Engines(const Config& config) : m_config(config) {}
    Engine& get(const std::string& datastore) {
        auto& e = m_engines[datastore];
        if (!e) {
            e = make_engine(m_config.datastores.at(datastore), m_config);
        }
        return *e;
    }

private:
    const Config& m_config;
    std::map<std::string, std::unique_ptr<Engine>> m_engines;
};

std::string pad(const std::string& s, std::size_t width) {
    return s.size() >= width ? s + " " : s + std::string(width - s.size(), ' ');
}

// The rules that declare `kind`; a usage error naming the declared kinds when none does.
std::vector<Target> targets_for(const Config& config, const std::string& kind,
                                const SubjectQuery& base) {
    std::vector<Target> out;
    std::set<std::string> declared;
    for (const auto& rule : config.rules) {
        for (const auto& [k, field] : rule.subjects) {
            declared.insert(k);
        }
        const auto it = rule.subjects.find(kind);
        if (it == rule.subjects.end()) {
            continue;
        }
        Target t;
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

void count_all(std::vector<Target>& targets, Engines& engines, RunContext& ctx) {
    for (auto& t : targets) {
        try {
            t.counted = engines.get(t.rule->datastore).erase_subject(*t.rule, t.query, ctx, true);
        } catch (const UnavailableError& e) {
            t.unavailable = e.what();
        }
    }
}

// The limits over every rule before any is applied: the first refusal refuses the request.
std::optional<std::string> refusal(std::vector<Target>& targets, const RunContext& ctx) {
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

void apply_all(std::vector<Target>& targets, Engines& engines, RunContext& ctx) {
    for (auto& t : targets) {
        if (!t.unavailable.empty() || t.counted.status != RunResult::Status::ok ||
            t.counted.due == 0) {
            continue;
        }
        try {
            t.applied = engines.get(t.rule->datastore).erase_subject(*t.rule, t.query, ctx, false);
        } catch (const UnavailableError& e) {
            t.unavailable = e.what();
        }
    }
}

ErasureRuleOutcome outcome_of(const Target& t) {
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
void settle(ErasureRequest& req, const std::vector<Target>& targets, Mode mode) {
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
    req.erased = mode == Mode::reapply ? 0 : erased;
    req.reapplied = mode == Mode::reapply ? erased : 0;
}

int exit_code_of(const std::vector<Target>& targets) {
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

void print_targets(std::ostream& out, const std::vector<Target>& targets, bool dry) {
    out << pad("RULE", 34) << pad("STATUS", 13) << pad("FOUND", 8)
        << pad(dry ? "HELD" : "ERASED", 8) << pad(dry ? "" : "DEFERRED", dry ? 0 : 10)
        << "DETAIL\n";
    for (const auto& t : targets) {
        const auto o = outcome_of(t);
        std::string status = o.status;
        if (dry && !o.reason.empty()) {
            status = o.status;
        } else if (dry) {
            status = t.counted.due > 0 ? "would erase" : o.deferred > 0 ? "would defer" : "none";
        }
        out << pad(t.rule->name, 34) << pad(status, 13) << pad(std::to_string(t.counted.due), 8);
        if (dry) {
            out << pad(std::to_string(o.deferred), 8) << o.reason << '\n';
        } else {
            out << pad(std::to_string(o.erased), 8) << pad(std::to_string(o.deferred), 10)
                << o.reason << '\n';
        }
        // The counters of what ran (a dry run's too: "idle_reset" says what its reads did).
        for (const auto& [name, value] : (t.applied ? *t.applied : t.counted).counters) {
            if (value != 0 && name != "in_scope" && name != "held") {
                out << "    " << name << ": " << value << '\n';
            }
        }
    }
}

// What a request is run with: the run's context and log, the engines.
struct Session {
    const Config& config;
    Engines engines;
    std::unique_ptr<AuditLog> log; // null for a dry run
    RunContext ctx;

    Session(const Config& c, bool dry) : config(c), engines(c) {
        ctx.run_id = new_run_id();
        ctx.tz = c.zone();
        ctx.audit_key = &c.daemon.audit_key;
        ctx.stop_requested = [] { return g_erase_stop != 0; };
        if (!dry) {
            log = open_audit_log(c, ctx.run_id); // the file, or daemon.audit_store
            ctx.journal = log.get();
        }
    }
};

// Counts, checks the limits, applies and records one request; returns its exit code.
int process(Session& s, ErasureRequest& req, std::vector<Target>& targets, Mode mode,
            std::ostream& out, std::ostream& err) {
    const bool dry = s.log == nullptr;
    s.ctx.request = req.subject;
    count_all(targets, s.engines, s.ctx);
    if (const auto why = refusal(targets, s.ctx)) {
        err << "retentiond: erasure request " << req.id << " refused, nothing touched: " << *why
            << '\n';
        return k_exit_partial;
    }
    if (!dry) {
        apply_all(targets, s.engines, s.ctx);
        settle(req, targets, mode);
        s.log->event(std::string(k_erasure_event), erasure_event_fields(req));
    }
    out << (mode == Mode::reapply ? "re-application of request " : "request ") << req.id << " ("
        << req.kind << ", received " << format_utc_seconds(req.received) << ", deadline "
        << format_utc_seconds(req.deadline) << ")" << (dry ? ": dry run, nothing changed" : "")
        << '\n';
    print_targets(out, targets, dry);
    if (!dry) {
        out << "status: " << req.status << '\n';
    }
    return exit_code_of(targets);
}

void require_key(const Config& config) {
    if (config.daemon.audit_key.empty()) {
        throw ConfigError({Diagnostic{{config.main_file, 0, 0},
                                      "",
                                      "daemon.audit_key is not set: an erasure request is "
                                      "recorded by the identifier's digest"}});
    }
}

struct RequestArgs {
    SubjectArg subject;
    std::optional<std::string> id;
    std::optional<std::string> received;
    bool dry = false;
};

TimePoint parse_received(const std::string& text, const Config& config) {
    const auto t = parse_timestamp(text, "", config.zone());
    if (!t) {
        throw UsageError("--received: expected a date or ISO 8601 time, got \"" + text + "\"");
    }
    return *t;
}

// A new request, or the open one of the same subject (a rerun resumes it: same id, same deadline).
int run_request(const Config& config, const RequestArgs& a, std::ostream& out, std::ostream& err) {
    SubjectQuery base;
    base.values.insert(normalize_subject(a.subject.kind, a.subject.value));
    base.audit_key = &config.daemon.audit_key;
    auto targets = targets_for(config, a.subject.kind, base);
    if (!a.dry) {
        require_key(config);
    }
    Session s(config, a.dry);
    ErasureRequest req;
    req.kind = a.subject.kind;
    req.subject = a.dry ? std::string()
                        : subject_digest(config.daemon.audit_key, req.kind, *base.values.begin());
    const auto open =
        a.dry ? std::nullopt
              : open_request_for(read_ledger(*open_audit_lines(config, std::nullopt)), req.subject);
    if (open && (!a.id || *a.id == open->id)) {
        req = *open;
    } else {
        req.id = a.id.value_or(s.ctx.run_id);
        req.received = a.received ? parse_received(*a.received, config) : now_utc();
        req.deadline = add(req.received, config.daemon.erasure_deadline, config.zone());
    }
    if (s.log) {
        s.log->run_start(config, "erase");
    }
    const int code = process(s, req, targets, Mode::request, out, err);
    if (s.log) {
        s.log->run_end(code == k_exit_ok ? "ok" : "failed", {{"request", req.id}});
        out << "audit log: " << describe_audit(config) << '\n';
    }
    return code;
}

// --resume / --reapply: every open request (resume) or every request (reapply) of the ledger,
// found again from its digest.
int run_ledger(const Config& config, Mode mode, std::ostream& out, std::ostream& err) {
    require_key(config);
    const auto ledger = read_ledger(*open_audit_lines(config, std::nullopt));
    Session s(config, false);
    s.log->run_start(config, mode == Mode::resume ? "erase-resume" : "erase-reapply");
    int code = k_exit_ok;
    std::size_t n = 0;
    for (auto req : ledger) {
        if (mode == Mode::resume && !req.open()) {
            continue;
        }
        SubjectQuery base;
        base.digests.insert(req.subject);
        base.audit_key = &config.daemon.audit_key;
        std::vector<Target> targets;
        try {
            targets = targets_for(config, req.kind, base);
        } catch (const UsageError& e) {
            // The configuration no longer declares its kind: the request cannot be run again.
            err << "retentiond: request " << req.id << " skipped: " << e.what() << '\n';
            code = std::max(code, static_cast<int>(k_exit_partial));
            continue;
        }
        code = std::max(code, process(s, req, targets, mode, out, err));
        ++n;
    }
    s.log->run_end(code == k_exit_ok ? "ok" : "failed", {{"requests", n}});
    out << n << (mode == Mode::resume ? " open request(s) resumed" : " request(s) re-applied")
        << "\naudit log: " << describe_audit(config) << '\n';
    return code;
}

int print_status(const Config& config, std::ostream& out) {
    const auto now = now_utc();
    out << pad("REQUEST", 28) << pad("KIND", 9) << pad("RECEIVED", 22) << pad("DEADLINE", 22)
        << pad("STATUS", 10) << pad("ERASED", 8) << "DEFERRED\n";
    std::size_t open = 0;
    std::size_t overdue = 0;
    auto ledger = read_ledger(*open_audit_lines(config, std::nullopt));
    std::stable_sort(ledger.begin(), ledger.end(), [&](const auto& a, const auto& b) {
        return a.overdue(now) && !b.overdue(now);
    });
    for (const auto& r : ledger) {
        if (!r.open()) {
            continue;
        }
        ++open;
        overdue += r.overdue(now) ? 1 : 0;
        out << pad(r.id, 28) << pad(r.kind, 9) << pad(format_utc_seconds(r.received), 22)
            << pad(format_utc_seconds(r.deadline), 22)
            << pad(r.overdue(now) ? "overdue" : r.status, 10) << pad(std::to_string(r.erased), 8)
            << r.deferred() << '\n';
    }
    out << open << " open request(s), " << overdue << " overdue\n";
    return k_exit_ok;
}

constexpr const char* k_erase_help =
    R"(Usage: retentiond erase --subject KIND=VALUE [--request ID] [--received DATE] [--dry-run]
       retentiond erase --status | --resume | --reapply

An erasure request: every rule declaring the identifier's kind (subject:) erases the person's
records whatever their clock, with its action and dependents; a held record is deferred and
erased by `erase --resume` once the hold lifts. The limits are checked over every rule first:
an over-broad match refuses the whole request. The identifier is never written: the audit log
records the request by its HMAC digest.
  --subject KIND=VALUE  the identifier (email=..., user_id=...), normalized (docs)
  --request ID          the request's id (default: the run id); a rerun resumes an open request
  --received DATE       when the request was received (default now): the deadline counts from it
  --dry-run             counts per rule, nothing changed, nothing recorded
  --status              open and overdue requests
  --resume              every open request again (deferred records whose hold lifted, stores
                        that were down)
  --reapply             every request again, after a restore brought erased records back
)";

} // namespace

int cmd_erase(const std::string& config_path, const std::vector<std::string>& args,
              std::ostream& out, std::ostream& err) {
    OptionParser opts(args, "erase");
    if (opts.flag("--help")) {
        out << k_erase_help;
        return k_exit_ok;
    }
    const bool status = opts.flag("--status");
    const bool resume = opts.flag("--resume");
    const bool reapply = opts.flag("--reapply");
    RequestArgs a;
    const auto subject = opts.value("--subject");
    a.id = opts.value("--request");
    a.received = opts.value("--received");
    a.dry = opts.flag("--dry-run");
    opts.finish();
    if (static_cast<int>(status) + static_cast<int>(resume) + static_cast<int>(reapply) +
            static_cast<int>(subject.has_value()) !=
        1) {
        throw UsageError("erase needs one of --subject KIND=VALUE, --status, --resume, --reapply");
    }
    if (subject) {
        a.subject = parse_subject_arg(*subject);
    }
    const Config config = load_config(config_path);
    std::signal(SIGTERM, on_erase_stop);
    std::signal(SIGINT, on_erase_stop);
    if (status) {
        return print_status(config, out);
    }
    if (resume || reapply) {
        return run_ledger(config, resume ? Mode::resume : Mode::reapply, out, err);
    }
    return run_request(config, a, out, err);
}

int prove_subject(const std::string& config_path, const std::string& subject,
                  const std::string& log, std::ostream& out) {
    const auto arg = parse_subject_arg(subject);
    const Config config = load_config(config_path);
    require_key(config);
    const auto lines =
        open_audit_lines(config, log.empty() ? std::nullopt : std::optional<std::string>(log));
    const auto digest =
        subject_digest(config.daemon.audit_key, arg.kind, normalize_subject(arg.kind, arg.value));
    std::size_t n = 0;
    for (const auto& r : read_ledger(*lines)) {
        if (r.subject != digest) {
            continue;
        }
        ++n;
        out << "request " << r.id << " (received " << format_utc_seconds(r.received)
            << ", deadline " << format_utc_seconds(r.deadline) << "): ";
        if (r.open()) {
            out << r.status << " since " << r.last_ts << ", " << r.erased << " record(s) erased, "
                << r.deferred() << " deferred\n";
        } else {
            out << "erased, done at " << r.done_ts << ", " << r.erased << " record(s)\n";
        }
        for (const auto& o : r.rules) {
            out << "    " << o.rule << ": " << o.status << " (" << o.erased << " erased, "
                << o.deferred << " deferred)\n";
        }
        if (r.reapplied > 0) {
            out << "    re-applied after a restore: " << r.reapplied << " record(s), last at "
                << r.last_ts << '\n';
        }
    }
    if (n == 0) {
        out << "never seen: no erasure request in " << lines->name() << " names that identifier\n";
    }
    return k_exit_ok;
}

} // namespace retentiond
