#include "retentiond/cli.hpp"

#include "coverage_cli.hpp"
#include "erase_cli.hpp"
#include "options.hpp"
#include "report_cli.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/config.hpp"
#include "retentiond/daemon.hpp"
#include "retentiond/duration.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/logging.hpp"
#include "retentiond/notify.hpp"
#include "retentiond/policy_table.hpp"
#include "retentiond/progress.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/report.hpp"
#include "retentiond/runner.hpp"
#include "retentiond/timeutil.hpp"
#include "retentiond/version.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

namespace retentiond {
namespace {

constexpr const char* k_exit_codes_help = R"(Exit codes (sysexits):
  0   success
  64  usage error (bad command line)
  65  data error: a record could not be parsed, or the audit log failed verification
  69  a datastore was unavailable
  70  internal error
  74  the audit log cannot be written or read (a purge stops before the batch whose line it
      cannot write: nothing is applied without its intent), or an output file cannot be written
  75  a run partly failed, was stopped, or was refused by a limit (see --force)
  78  configuration invalid
)";

constexpr const char* k_run_help = R"(Usage: retentiond run   (global option: --config FILE)

Runs as a daemon: every rule on its schedule (daemon.timezone, daemon.splay), one worker per
datastore, missed runs caught up from the audit log, SIGHUP reloads the configuration between runs,
SIGTERM finishes each running batch and exits 0. Under systemd (Type=notify) it reports READY=1,
STATUS= and WATCHDOG=1; /metrics and /healthz on daemon.metrics. See retentiond(8) and
docs/daemon.md.

)";

constexpr const char* k_main_help = R"(Usage: retentiond [--config FILE] COMMAND [OPTIONS]

Enforces data-retention rules written in YAML on PostgreSQL, files and Redis.

Commands:
  run                         run as a daemon: every rule on its schedule
  purge --now                 apply the rules once, now (see purge --help)
  check [--offline]           validate the configuration (and the live datastores)
  coverage                    personal data no rule covers (see coverage --help)
  report                      dry-run report for the DPO
  policy-table                the privacy policy's retention table, from the rules
  audit verify                check the audit log's hash chain
  audit prove                 was a given record purged, when, by which run?
  erase --subject KIND=VALUE  an erasure request (see erase --help)

Options:
  --config FILE   main configuration file (default $RETENTIOND_CONFIG, else
                  /etc/retentiond/retentiond.yaml)
  --version       print the version
  -h, --help      this help; COMMAND --help for a command's options

)";

struct Args {
    std::optional<std::string> config;
    std::string verb;
    std::vector<std::string> rest;
};

Args split_args(int argc, char** argv) {
    Args args;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--config") {
            if (i + 1 >= argc) {
                throw UsageError("--config needs a file");
            }
            args.config = argv[++i];
        } else if (arg.rfind("--config=", 0) == 0) {
            args.config = arg.substr(9);
        } else if (args.verb.empty() && (arg == "--version" || arg == "-h" || arg == "--help")) {
            args.verb = arg;
        } else if (args.verb.empty() && !arg.empty() && arg[0] != '-') {
            args.verb = arg;
        } else {
            args.rest.push_back(arg);
        }
    }
    return args;
}

std::string config_path(const Args& args) {
    return args.config ? *args.config : default_config_path();
}

void print_diagnostics(std::ostream& err, const ConfigError& e) {
    for (const auto& d : e.diagnostics()) {
        err << d.to_string() << '\n';
    }
    err << "configuration rejected: " << e.diagnostics().size() << " error"
        << (e.diagnostics().size() == 1 ? "" : "s") << '\n';
}

void print_warnings(std::ostream& err, const Config& config) {
    for (const auto& w : config.warnings) {
        err << "warning: " << w.to_string() << '\n';
    }
}

std::string pad(const std::string& s, std::size_t width) {
    // Column widths count code points, not bytes, so accented rule names line up.
    std::size_t points = 0;
    for (const unsigned char c : s) {
        points += (c & 0xC0) != 0x80 ? 1 : 0;
    }
    return points >= width ? s : s + std::string(width - points, ' ');
}

std::string age_text(std::chrono::microseconds age) {
    const auto days = std::chrono::duration_cast<std::chrono::hours>(age).count() / 24;
    if (days >= 1) {
        return std::to_string(days) + "d";
    }
    const auto hours = std::chrono::duration_cast<std::chrono::minutes>(age).count() / 60;
    return std::to_string(hours) + "h";
}

// --- verbs ---------------------------------------------------------------------------------

int cmd_check(const Args& args, std::ostream& out, std::ostream& err) {
    OptionParser opts(args.rest);
    if (opts.flag("--help")) {
        out << "Usage: retentiond check [--offline]\n\n"
               "Validates the configuration: every file, key, duration, schedule and reference.\n"
               "Without --offline, also connects to every datastore and checks each rule against\n"
               "it (tables, columns, foreign keys not covered by dependents, roots).\n\n"
            << k_exit_codes_help;
        return k_exit_ok;
    }
    const bool offline = opts.flag("--offline");
    opts.finish();
    const Config config = load_config(config_path(args));
    print_warnings(err, config);
    if (offline) {
        out << "configuration valid: " << config.rules.size() << " rules, "
            << config.datastores.size() << " datastores (" << config.files.size()
            << " files, sha256 " << config.sha256.substr(0, 12) << ")\n";
        return k_exit_ok;
    }
    Runner runner(config);
    std::vector<Diagnostic> problems;
    bool unavailable = false;
    for (const auto& rule : config.rules) {
        try {
            auto found = runner.engine(rule.datastore).check(rule);
            problems.insert(problems.end(), found.begin(), found.end());
        } catch (const UnavailableError& e) {
            unavailable = true;
            err << "datastore \"" << rule.datastore << "\" unavailable (rule \"" << rule.name
                << "\"): " << e.what() << '\n';
            runner.reset_engine(rule.datastore);
        }
    }
    const auto warnings = std::partition(problems.begin(), problems.end(),
                                         [](const Diagnostic& d) { return !d.warning; });
    for (auto it = warnings; it != problems.end(); ++it) {
        err << "warning: " << it->to_string() << '\n';
    }
    problems.erase(warnings, problems.end());
    for (const auto& d : problems) {
        err << d.to_string() << '\n';
    }
    if (!problems.empty()) {
        err << "check failed: " << problems.size() << " problem"
            << (problems.size() == 1 ? "" : "s") << '\n';
        return k_exit_config;
    }
    if (unavailable) {
        return k_exit_unavailable;
    }
    // Informational: the gate is `retentiond coverage`; check's exit code stays the rules'.
    out << coverage_summary(collect_coverage(config)) << '\n';
    out << "configuration and datastores valid: " << config.rules.size() << " rules, "
        << config.datastores.size() << " datastores\n";
    return k_exit_ok;
}

void print_dry_runs(std::ostream& out, const std::vector<RuleDryRun>& dries) {
    out << pad("RULE", 34) << pad("IN SCOPE", 10) << pad("DUE", 9) << pad("HELD", 7)
        << pad("NO CLOCK", 10) << pad("OLDEST", 8) << pad("7D", 7) << pad("30D", 7) << "90D\n";
    for (const auto& d : dries) {
        if (!d.dry) {
            out << pad(d.rule, 34) << (d.unavailable ? "UNAVAILABLE: " : "ERROR: ") << d.error
                << '\n';
            continue;
        }
        const auto& r = *d.dry;
        out << pad(d.rule, 34) << pad(std::to_string(r.in_scope), 10)
            << pad(std::to_string(r.due), 9) << pad(std::to_string(r.held), 7)
            << pad(std::to_string(r.no_clock), 10)
            << pad(r.oldest_clock ? age_text(r.now - *r.oldest_clock) : "-", 8)
            << pad(std::to_string(r.due_7d), 7) << pad(std::to_string(r.due_30d), 7) << r.due_90d
            << '\n';
        for (const auto& [name, value] : r.counters) {
            out << "    " << name << ": " << value << '\n';
        }
        for (const auto& note : r.notes) {
            out << "    note: " << note << '\n';
        }
    }
}

volatile std::sig_atomic_t g_stop = 0;
void on_stop_signal(int) {
    g_stop = 1;
}

// On a terminal, a bar redrawn in place on stderr; otherwise (systemd, Scalingo) a log line
// every ~10 s. STATUS= either way (a no-op without NOTIFY_SOCKET).
ProgressReporter::Sinks progress_sinks(bool tty, std::ostream& err, Notifier& notifier) {
    ProgressReporter::Sinks sinks;
    if (tty) {
        sinks.tty = [&err](const std::string& line) { err << "\r\033[K" << line << std::flush; };
    } else {
        sinks.log = [](const std::string& line) { spdlog::info("{}", line); };
    }
    sinks.status = [&notifier](const std::string& text) { notifier.status(text); };
    return sinks;
}

// The log's progress interval: 10 s, or RETENTIOND_PROGRESS_EVERY ("2 s", "500 ms").
std::chrono::milliseconds progress_log_every() {
    const char* env = std::getenv("RETENTIOND_PROGRESS_EVERY");
    if (env == nullptr || *env == '\0') {
        return std::chrono::seconds{10};
    }
    try {
        const Duration d = parse_fixed_duration(env);
        if (d.months == 0) {
            return std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::microseconds{d.micros} + std::chrono::days{d.days});
        }
    } catch (const ParseError&) {
    }
    throw UsageError("RETENTIOND_PROGRESS_EVERY: invalid duration \"" + std::string(env) + "\"");
}

void print_purge_results(std::ostream& out, const std::vector<RuleRun>& runs);

int cmd_purge(const Args& args, std::ostream& out, std::ostream& err) {
    OptionParser opts(args.rest);
    if (opts.flag("--help")) {
        out << "Usage: retentiond purge --now [--rule NAME]... [--dry-run] [--force]\n\n"
               "Applies the rules once, now, in the order of the configuration.\n"
               "  --now       required for a real purge (a guard against a stray invocation)\n"
               "  --rule N    only this rule (repeatable)\n"
               "  --dry-run   count what would be done; change nothing (no audit key needed)\n"
               "  --force     run even when a rule's limits (max_rows, max_fraction) refuse it\n\n"
            << k_exit_codes_help;
        return k_exit_ok;
    }
    const bool now = opts.flag("--now");
    const bool dry = opts.flag("--dry-run");
    const bool force = opts.flag("--force");
    const auto rules = opts.values("--rule");
    opts.finish();
    if (!now && !dry) {
        throw UsageError("purge needs --now (or --dry-run)");
    }
    const Config config = load_config(config_path(args));
    print_warnings(err, config);
    select_rules(config, rules); // unknown rule names are a usage error before anything runs
    Runner runner(config);
    if (dry) {
        const auto dries = runner.dry_run(rules);
        print_dry_runs(out, dries);
        for (const auto& d : dries) {
            if (!d.dry) {
                return d.unavailable ? k_exit_unavailable : k_exit_partial;
            }
        }
        return k_exit_ok;
    }

    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGINT, on_stop_signal);
    const bool tty = isatty(STDERR_FILENO) != 0;
    PurgeOptions options;
    options.rules = rules;
    options.force = force;
    options.stop_requested = [] { return g_stop != 0; };
    Notifier notifier;
    ProgressReporter progress(progress_sinks(tty, err, notifier), progress_log_every());
    options.progress = [&](const Rule& rule, std::int64_t done, std::int64_t total) {
        progress.progress(rule.name, done, total);
    };
    options.phase = [&](const Rule& rule, std::string_view phase) {
        progress.phase(rule.name, phase);
    };
    const auto runs = runner.purge(options);
    if (tty) {
        err << "\r\033[K";
    }
    print_purge_results(out, runs);
    runner.log_audit_head(); // the anchor `audit verify --head` checks the chain against
    out << "audit log: " << describe_audit(config) << '\n';
    return exit_code(runs);
}

// The table of a purge's results, one row per rule and its counters; each also logged.
void print_purge_results(std::ostream& out, const std::vector<RuleRun>& runs) {
    out << pad("RULE", 34) << pad("STATUS", 13) << pad("DUE", 10) << pad("DONE", 10)
        << pad("TIME", 9) << "DETAIL\n";
    for (const auto& run : runs) {
        const std::string status = rule_run_status(run);
        const std::string detail =
            run.failure == RuleRun::Failure::none ? run.result.message : run.error;
        std::ostringstream secs;
        secs << std::fixed << std::setprecision(1)
             << static_cast<double>(run.elapsed.count()) / 1000.0 << "s";
        out << pad(run.rule, 34) << pad(status, 13) << pad(std::to_string(run.result.due), 10)
            << pad(std::to_string(run.result.processed), 10) << pad(secs.str(), 9) << detail
            << '\n';
        if (!run.result.path.empty()) {
            out << "    path: " << run.result.path << '\n';
        }
        for (const auto& [name, value] : run.result.counters) {
            out << "    " << name << ": " << value << '\n';
        }
        spdlog::info("rule {}: {} ({} of {} due records processed in {} ms){}", run.rule, status,
                     run.result.processed, run.result.due, run.elapsed.count(),
                     detail.empty() ? "" : ": " + detail);
    }
}

int cmd_policy_table(const Args& args, std::ostream& out) {
    OptionParser opts(args.rest);
    if (opts.flag("--help")) {
        out << "Usage: retentiond policy-table [--format md|html] [--lang fr|en]\n\n"
               "Prints the retention table of the privacy policy, generated from the rules, so\n"
               "that the published promise and the enforced rules cannot drift apart.\n";
        return k_exit_ok;
    }
    const auto format = opts.value("--format").value_or("md");
    const auto lang = opts.value("--lang").value_or("fr");
    opts.finish();
    if (format != "md" && format != "html") {
        throw UsageError("--format must be md or html");
    }
    if (lang != "fr" && lang != "en") {
        throw UsageError("--lang must be fr or en");
    }
    const Config config = load_config(config_path(args));
    out << render_policy_table(config, format, lang);
    return k_exit_ok;
}

constexpr const char* k_audit_help =
    "Usage: retentiond audit verify [--log FILE] [--head SEQ:SHA256]...\n"
    "       retentiond audit prove --rule NAME --key VALUE [--log FILE]\n"
    "       retentiond audit prove --subject KIND=VALUE [--log FILE]\n"
    "       retentiond audit export --output FILE [--since TIME] [--until TIME]\n"
    "       retentiond audit import --log FILE\n\n"
    "verify checks every line's JSON and the SHA-256 chain of the configured audit log (a file,\n"
    "or the PostgreSQL table of daemon.audit_store) or of FILE; exit 65 names the first bad\n"
    "line. --head checks that line SEQ still hashes to SHA256, as a run logged it (\"audit head:\n"
    "seq=N sha256=H\"): a chain rewritten whole in the store is caught by it. prove recomputes a\n"
    "record's digest under the audit key and says when it was purged or anonymized, by which\n"
    "run, with which cutoff. export writes the chain (or the lines from --since to --until, a\n"
    "contiguous slice) as a JSON Lines file `audit verify --log` accepts. import moves a file log\n"
    "into an empty audit store, whose chain then continues from it.\n\n";

// "SEQ:SHA256" as a run logged it.
AuditHeadCheck parse_head(const std::string& text) {
    const auto colon = text.find(':');
    AuditHeadCheck h;
    try {
        std::size_t used = 0;
        h.seq = std::stoull(text.substr(0, colon), &used);
        if (used != colon) {
            throw std::invalid_argument(text);
        }
    } catch (const std::exception&) {
        throw UsageError("--head " + text +
                         ": expected SEQ:SHA256 (\"audit head: seq=N sha256=H\")");
    }
    h.sha256 = colon == std::string::npos ? "" : text.substr(colon + 1);
    if (h.sha256.size() != 64 || !std::all_of(h.sha256.begin(), h.sha256.end(), [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        })) {
        throw UsageError("--head " + text + ": the SHA-256 must be 64 lower-case hex digits");
    }
    return h;
}

int cmd_audit_verify(const Args& args, OptionParser& opts, std::ostream& out, std::ostream& err) {
    const auto log = opts.value("--log");
    std::vector<AuditHeadCheck> heads;
    for (const auto& h : opts.values("--head")) {
        heads.push_back(parse_head(h));
    }
    opts.finish();
    VerifyResult result;
    std::string name;
    try {
        if (log) {
            name = *log;
            // A file that cannot be opened is an I/O problem, not evidence of tampering.
            if (heads.empty()) {
                result = verify_audit_log(*log);
            } else {
                verify_audit_log(*log); // throws when it cannot be read
                result = verify_audit_lines(*file_audit_lines(*log, false), heads);
            }
        } else {
            const Config config = load_config(config_path(args));
            const auto lines = open_audit_lines(config, std::nullopt, false);
            name = lines->name();
            result = audit_store_target(config) || !heads.empty()
                         ? verify_audit_lines(*lines, heads)
                         : verify_audit_log(config.daemon.audit_log);
        }
    } catch (const UnavailableError&) {
        throw;
    } catch (const ConfigError&) {
        throw;
    } catch (const std::exception& e) {
        err << "retentiond: cannot read the audit log: " << e.what() << '\n';
        return k_exit_ioerr;
    }
    if (!result.ok) {
        err << name << ":" << result.bad_line << ": " << result.reason << '\n';
        return k_exit_data;
    }
    out << name << ": intact: " << result.lines << " lines, " << result.runs << " runs, "
        << result.records << " records";
    if (!heads.empty()) {
        out << ", " << heads.size() << " head" << (heads.size() == 1 ? "" : "s") << " matched";
    }
    out << '\n';
    if (!result.note.empty()) {
        out << "note: " << result.note << '\n';
    }
    return k_exit_ok;
}

int cmd_audit_prove(const Args& args, OptionParser& opts, std::ostream& out) {
    const auto rule = opts.value("--rule");
    const auto key = opts.value("--key");
    auto log = opts.value("--log");
    opts.finish();
    if (!rule || !key) {
        throw UsageError("audit prove needs --rule NAME and --key VALUE");
    }
    const Config config = load_config(config_path(args));
    if (config.daemon.audit_key.empty()) {
        throw ConfigError({Diagnostic{
            {config.main_file, 0, 0}, "", "daemon.audit_key is not set: cannot compute digests"}});
    }
    const auto lines = open_audit_lines(config, log);
    const auto proofs = prove(*lines, config.daemon.audit_key, *rule, *key);
    if (proofs.empty()) {
        out << "never seen: no committed batch of rule \"" << *rule << "\" in " << lines->name()
            << " holds that record's digest\n";
        return k_exit_ok;
    }
    for (const auto& p : proofs) {
        out << p.action << " at " << p.time << " by run " << p.run_id << " (rule \"" << *rule
            << "\", target " << p.target << ", cutoff " << p.cutoff << ")\n";
    }
    return k_exit_ok;
}

std::optional<TimePoint> time_option(OptionParser& opts, const std::string& name,
                                     const date::time_zone* tz) {
    const auto text = opts.value(name);
    if (!text) {
        return std::nullopt;
    }
    const auto t = parse_timestamp(*text, "", tz);
    if (!t) {
        throw UsageError(name + " " + *text + ": not a time (2026-08-14 or 2026-08-14T01:00:00Z)");
    }
    return t;
}

int cmd_audit_export(const Args& args, OptionParser& opts, std::ostream& out) {
    const auto output = opts.value("--output");
    const Config config = load_config(config_path(args));
    const auto since = time_option(opts, "--since", config.zone());
    const auto until = time_option(opts, "--until", config.zone());
    opts.finish();
    if (!output) {
        throw UsageError("audit export needs --output FILE");
    }
    const auto lines = open_audit_lines(config, std::nullopt);
    const auto exported = export_audit_lines(*lines, *output, since, until);
    out << "exported " << exported << " lines of " << lines->name() << " to " << *output << '\n';
    return k_exit_ok;
}

int cmd_audit_import(const Args& args, OptionParser& opts, std::ostream& out, std::ostream& err) {
    const auto log = opts.value("--log");
    opts.finish();
    if (!log) {
        throw UsageError("audit import needs --log FILE");
    }
    const Config config = load_config(config_path(args));
    const auto target = audit_store_target(config);
    if (!target) {
        throw UsageError("audit import needs daemon.audit_store in the configuration");
    }
    const auto verified = verify_audit_log(*log); // throws when it cannot be read
    if (!verified.ok) {
        err << *log << ":" << verified.bad_line << ": " << verified.reason
            << " (nothing imported)\n";
        return k_exit_data;
    }
    const auto imported = import_into_pg_audit_store(*target, *file_audit_lines(*log, false));
    const auto lines = pg_audit_lines(*target);
    out << "imported " << imported << " lines of " << *log << " into " << lines->name() << '\n';
    return k_exit_ok;
}

int cmd_audit(const Args& args, std::ostream& out, std::ostream& err) {
    if (args.rest.empty() || args.rest.front() == "--help") {
        out << k_audit_help << k_exit_codes_help;
        return args.rest.empty() ? k_exit_usage : k_exit_ok;
    }
    const std::string sub = args.rest.front();
    OptionParser opts({args.rest.begin() + 1, args.rest.end()});
    if (opts.flag("--help")) {
        out << k_audit_help << k_exit_codes_help;
        return k_exit_ok;
    }
    if (sub == "verify") {
        return cmd_audit_verify(args, opts, out, err);
    }
    if (sub == "prove") {
        if (const auto subject = opts.value("--subject")) {
            const auto log = opts.value("--log");
            opts.finish();
            return prove_subject(config_path(args), *subject, log.value_or(""), out);
        }
        return cmd_audit_prove(args, opts, out);
    }
    if (sub == "export") {
        return cmd_audit_export(args, opts, out);
    }
    if (sub == "import") {
        return cmd_audit_import(args, opts, out, err);
    }
    throw UsageError("unknown audit command \"" + sub + "\" (verify, prove, export, import)");
}

} // namespace

int run_cli(int argc, char** argv, std::ostream& out, std::ostream& err) {
    // A file-size limit (RLIMIT_FSIZE, LimitFSIZE=) must fail a write with EFBIG, which every
    // writer reports (exit 74 for the audit log), not kill the process mid-line.
    std::signal(SIGXFSZ, SIG_IGN);
    try {
        const Args args = split_args(argc, argv);
        setup_logging();
        if (args.verb.empty() || args.verb == "-h" || args.verb == "--help" ||
            args.verb == "help") {
            out << k_main_help << k_exit_codes_help;
            return args.verb.empty() ? k_exit_usage : k_exit_ok;
        }
        if (args.verb == "--version") {
            out << "retentiond " << k_version << '\n';
            return k_exit_ok;
        }
        if (args.verb == "check") {
            return cmd_check(args, out, err);
        }
        if (args.verb == "purge") {
            return cmd_purge(args, out, err);
        }
        if (args.verb == "policy-table") {
            return cmd_policy_table(args, out);
        }
        if (args.verb == "audit") {
            return cmd_audit(args, out, err);
        }
        if (args.verb == "coverage") {
            return cmd_coverage(config_path(args), args.rest, out, err);
        }
        if (args.verb == "erase") {
            return cmd_erase(config_path(args), args.rest, out, err);
        }
        if (args.verb == "report") {
            return cmd_report(config_path(args), args.rest, out, err);
        }
        if (args.verb == "run") {
            OptionParser options(args.rest);
            if (options.flag("--help") || options.flag("-h")) {
                out << k_run_help << k_exit_codes_help;
                return k_exit_ok;
            }
            options.finish();
            return run_daemon(config_path(args), out, err);
        }
        throw UsageError("unknown command \"" + args.verb + "\" (see retentiond --help)");
    } catch (const UsageError& e) {
        err << "retentiond: " << e.what() << '\n';
        return k_exit_usage;
    } catch (const std::invalid_argument& e) {
        err << "retentiond: " << e.what() << '\n';
        return k_exit_usage;
    } catch (const ConfigError& e) {
        print_diagnostics(err, e);
        return k_exit_config;
    } catch (const UnavailableError& e) {
        err << "retentiond: datastore unavailable: " << e.what() << '\n';
        return k_exit_unavailable;
    } catch (const AuditWriteError& e) {
        err << "retentiond: " << e.what() << " (nothing was touched)\n";
        return k_exit_ioerr;
    } catch (const IoError& e) {
        err << "retentiond: " << e.what() << '\n';
        return k_exit_ioerr;
    } catch (const std::exception& e) {
        err << "retentiond: internal error: " << e.what() << '\n';
        return k_exit_software;
    }
}

} // namespace retentiond
