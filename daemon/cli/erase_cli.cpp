// `retentiond erase`: the verb's options, --status and `audit prove --subject`; a request, a
// resume and a re-application are run by run/erasure.cpp (erasure.hpp), which the daemon shares.
#include "erase_cli.hpp"

#include "options.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/erasure.hpp"
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

std::string pad(const std::string& s, std::size_t width) {
    return s.size() >= width ? s + " " : s + std::string(width - s.size(), ' ');
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

// A rerun of an open request keeps its received date: --received may repeat it, not change it
// (the deadline counts from the day the person asked).
void check_received(const ErasureRequest& open, const std::optional<std::string>& received,
                    const Config& config) {
    if (!received) {
        return;
    }
    const auto given = format_utc_seconds(parse_received(*received, config));
    if (given != format_utc_seconds(open.received)) {
        throw UsageError("--received " + *received + " (" + given + "): request " + open.id +
                         " of this subject is still open, received " +
                         format_utc_seconds(open.received) +
                         "; a rerun resumes it and keeps that date (omit --received, or give "
                         "another --request for a new request)");
    }
}

// The request to run: the open one of the same subject (a rerun resumes it: same id, same
// deadline), or a new one.
ErasureRequest request_for(const Config& config, const RequestArgs& a, ErasureRequest req,
                           const std::string& run_id) {
    const auto open =
        a.dry ? std::nullopt
              : open_request_for(read_ledger(*open_audit_lines(config, std::nullopt)), req.subject);
    if (open && (!a.id || *a.id == open->id)) {
        check_received(*open, a.received, config);
        return *open;
    }
    req.id = a.id.value_or(run_id);
    req.received = a.received ? parse_received(*a.received, config) : now_utc();
    req.deadline = add(req.received, config.daemon.erasure_deadline, config.zone());
    return req;
}

int run_request(const Config& config, const RequestArgs& a, std::ostream& out, std::ostream& err) {
    SubjectQuery base;
    base.values.insert(normalize_subject(a.subject.kind, a.subject.value));
    base.audit_key = &config.daemon.audit_key;
    auto targets = erasure_targets(config, a.subject.kind, base);
    if (!a.dry) {
        require_key(config);
    }
    if (a.received) {
        parse_received(*a.received, config); // a malformed date fails before the log is opened
    }
    const auto log = a.dry ? nullptr : open_audit_log(config, new_run_id());
    ErasureSession s(config, log.get(), [] { return g_erase_stop != 0; });
    ErasureRequest req;
    req.kind = a.subject.kind;
    req.subject = a.dry ? std::string()
                        : subject_digest(config.daemon.audit_key, req.kind, *base.values.begin());
    req = request_for(config, a, std::move(req), s.ctx().run_id);
    if (log) {
        log->run_start(config, "erase");
    }
    const int code = process_erasure(s, req, targets, ErasureMode::request, out, err);
    if (log) {
        log->run_end(code == k_exit_ok ? "ok" : "failed", {{"request", req.id}});
        out << "audit log: " << describe_audit(config) << '\n';
    }
    return code;
}

// --resume / --reapply: every open request (resume) or every request (reapply) of the ledger.
int run_ledger(const Config& config, ErasureMode mode, std::ostream& out, std::ostream& err) {
    require_key(config);
    const auto log = open_audit_log(config, new_run_id());
    log->run_start(config, mode == ErasureMode::resume ? "erase-resume" : "erase-reapply");
    const auto pass = run_ledger_pass(
        config, *log, mode, "requested", [] { return g_erase_stop != 0; }, out, err);
    log->run_end(pass.code == k_exit_ok ? "ok" : "failed", {{"requests", pass.requests}});
    out << pass.requests
        << (mode == ErasureMode::resume ? " open request(s) resumed" : " request(s) re-applied")
        << "\naudit log: " << describe_audit(config) << '\n';
    return pass.code;
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
erased once the hold lifts by the daemon (`retentiond run`, hourly) or `erase --resume`. The
limits are checked over every rule first: an over-broad match refuses the whole request. The
identifier is never written: the audit log records the request by its HMAC digest.
  --subject KIND=VALUE  the identifier (email=..., user_id=...), normalized (docs)
  --request ID          the request's id (default: the run id); a rerun resumes an open request
  --received DATE       when the request was received (default now): the deadline counts from it;
                        a rerun of an open request keeps the recorded date
  --dry-run             counts per rule, nothing changed, nothing recorded
  --status              open and overdue requests
  --resume              every open request again (deferred records whose hold lifted, stores
                        that were down)
  --reapply             every request again, after a restore brought erased records back (the
                        daemon does it weekly and after a restore it detects: postgres only)
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
        return run_ledger(config, resume ? ErasureMode::resume : ErasureMode::reapply, out, err);
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
    if (!lines->written()) {
        out << "no erasure recorded: the audit log " << lines->name()
            << " does not exist yet (no run has written it)\n";
        return k_exit_ok;
    }
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
