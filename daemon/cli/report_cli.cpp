// `retentiond report`: a dry run of the rules, rendered for the DPO.
#include "report_cli.hpp"

#include "options.hpp"
#include "retentiond/crypto.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/fd.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/report.hpp"
#include "retentiond/timeutil.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <system_error>

namespace retentiond {
namespace {

constexpr const char* k_report_help =
    R"(Usage: retentiond report [--format md|html|json|csv] [--output FILE] [--lang fr|en]
                         [--rule NAME]... [--log AUDIT_LOG]

A report for the Data Protection Officer: per rule, the policy in its own words, the records in
scope, due, held and without a clock, the oldest record's age against the limit, the forecast for
the next 7/30/90 days, the last successful run (from the audit log), records purged per week, and
a status: compliant, never run, overdue, failing or unknown. It is a dry run: nothing is changed.
It never contains personal data: counts, ages and digests only.

  --format F    md (default when writing to stdout), html (one self-contained printable page),
                json (docs/report-schema.md) or csv (one row per rule). With --output and no
                --format, the file's extension (.md .html .json .csv) chooses.
  --output FILE write the report to FILE atomically (same directory, then rename)
  --lang L      fr (default) or en: the report's own words; the policy's texts are shown as written
  --rule NAME   only this rule (repeatable)
  --log FILE    audit log to read (default: daemon.audit_log)

Exit codes: 0 report produced; 75 produced, but a datastore could not be read (its rules are
"unknown"); 64 usage; 74 the output cannot be written; 78 configuration invalid.
)";

[[noreturn]] void throw_io(const std::string& what, const std::string& path, int err) {
    throw IoError(what + " " + path + ": " + std::strerror(err));
}

// Same directory, fsync, rename: a reader never sees half a report.
void write_atomically(const std::string& path, const std::string& text) {
    namespace fs = std::filesystem;
    const fs::path target(path);
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    const std::string tmp =
        (dir / ("." + target.filename().string() + ".tmp-" + random_hex(4))).string();
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        throw_io("cannot create", tmp, errno);
    }
    bool renamed = false;
    try {
        const Fd closer(fd);
        std::size_t done = 0;
        while (done < text.size()) {
            const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw_io("cannot write", tmp, errno);
            }
            done += static_cast<std::size_t>(n);
        }
        if (::fsync(fd) != 0) {
            throw_io("cannot fsync", tmp, errno);
        }
        if (::rename(tmp.c_str(), path.c_str()) != 0) {
            throw_io("cannot rename to", path, errno);
        }
        renamed = true;
        try {
            fsync_dir(dir); // the report is written; a directory that cannot be synced is no error
        } catch (const std::system_error&) {
        }
    } catch (...) {
        if (!renamed) {
            ::unlink(tmp.c_str());
        }
        throw;
    }
}

std::string format_from_extension(const std::string& path) {
    const auto ext = std::filesystem::path(path).extension().string();
    if (ext == ".html" || ext == ".htm") {
        return "html";
    }
    if (ext == ".json") {
        return "json";
    }
    if (ext == ".csv") {
        return "csv";
    }
    return "md";
}

struct ReportOptions {
    std::string format; // md, html, json or csv
    std::optional<std::string> output;
    std::optional<std::string> log;
    std::string lang; // fr or en
    std::vector<std::string> rules;
};

// The report's options, or nullopt when --help was asked (and printed).
std::optional<ReportOptions> parse_report_options(const std::vector<std::string>& args,
                                                  std::ostream& out) {
    OptionParser opts(args, "report");
    if (opts.flag("--help") || opts.flag("-h")) {
        out << k_report_help;
        return std::nullopt;
    }
    ReportOptions o;
    const auto format = opts.value("--format");
    o.output = opts.value("--output");
    o.log = opts.value("--log");
    o.lang = opts.last_value("--lang").value_or("fr");
    o.rules = opts.values("--rule");
    opts.finish();
    o.format = format ? *format : o.output ? format_from_extension(*o.output) : "md";
    if (o.format != "md" && o.format != "html" && o.format != "json" && o.format != "csv") {
        throw UsageError("report: --format must be md, html, json or csv");
    }
    if (o.lang != "fr" && o.lang != "en") {
        throw UsageError("report: --lang must be fr or en");
    }
    return o;
}

// What the report could not show, on stderr; the exit code (75 when a datastore was not read).
int report_gaps(const ReportData& data, std::ostream& err) {
    int unknown = 0;
    for (const auto& r : data.rules) {
        if (r.status == RuleStatus::unknown) {
            ++unknown;
            err << "report: rule \"" << r.rule << "\": datastore \"" << r.datastore
                << "\" could not be read: " << r.error << '\n';
        }
    }
    if (!data.audit_log_read) {
        err << "report: audit log " << data.audit_log << " " << data.audit_log_error
            << ": runs cannot be shown\n";
    }
    return unknown != 0 ? k_exit_partial : k_exit_ok;
}

} // namespace

namespace {

// The report of a chain kept in PostgreSQL (daemon.audit_store): a store that cannot be read is
// reported like a file log that cannot (its rules then "unknown"), never thrown.
ReportData report_from_store(const Config& config, const std::vector<RuleDryRun>& dries) {
    const auto lines = open_audit_lines(config, std::nullopt);
    return build_report_data(config, dries, lines.get(), lines->name(), now_utc());
}

} // namespace

int cmd_report(const std::string& config_path, const std::vector<std::string>& args,
               std::ostream& out, std::ostream& err) {
    const auto options = parse_report_options(args, out);
    if (!options) {
        return k_exit_ok;
    }
    const Config config = load_config(config_path);
    for (const auto& w : config.warnings) {
        err << "warning: " << w.to_string() << '\n';
    }
    select_rules(config,
                 options->rules); // an unknown rule is a usage error before any store is read
    Runner runner(config);
    const auto dries = runner.dry_run(options->rules);
    auto data = options->log || !audit_store_target(config)
                    ? build_report_data(config, dries,
                                        options->log.value_or(config.daemon.audit_log), now_utc())
                    : report_from_store(config, dries);
    data.coverage = collect_coverage(config); // "personal data without a rule"
    try { // "erasure requests"; an unreadable log is already the report's audit_log_error
        data.erasures = read_ledger(*open_audit_lines(config, options->log));
    } catch (const std::exception&) {
    }
    const auto text = render_report(data, options->format, options->lang);
    if (options->output) {
        write_atomically(*options->output, text);
        err << "report: " << data.rules.size() << " rule" << (data.rules.size() == 1 ? "" : "s")
            << ", overall " << to_string(data.overall) << ", written to " << *options->output
            << '\n';
    } else {
        out << text;
    }
    return report_gaps(data, err);
}

} // namespace retentiond
