#include "retentiond/daemon.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/config.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/metrics.hpp"
#include "retentiond/notify.hpp"
#include "retentiond/run_lock.hpp"
#include "retentiond/runner.hpp"
#include "retentiond/schedule.hpp"
#include "retentiond/scheduler.hpp"
#include "retentiond/timeutil.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/system_timer.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <map>
#include <mutex>
#include <ostream>
#include <random>
#include <thread>

namespace retentiond {
namespace {

namespace asio = boost::asio;

std::chrono::system_clock::time_point to_system(TimePoint t) {
    return std::chrono::time_point_cast<std::chrono::system_clock::duration>(t);
}

double unix_seconds(TimePoint t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// What the worker hands back to the io thread after one rule.
struct JobResult {
    std::string rule;
    std::string datastore;
    std::string action;
    RunOutcome outcome = RunOutcome::failed;
    RuleRun run;
    bool removed = false; // the rule left the config before it could run
};

RunOutcome outcome_of(const RuleRun& run) {
    switch (run.failure) {
    case RuleRun::Failure::unavailable:
        return RunOutcome::unavailable;
    case RuleRun::Failure::error:
        return RunOutcome::failed;
    case RuleRun::Failure::none:
        break;
    }
    switch (run.result.status) {
    case RunResult::Status::ok:
        return RunOutcome::success;
    case RunResult::Status::stopped:
        return RunOutcome::stopped;
    case RunResult::Status::refused:
    case RunResult::Status::failed:
        break;
    }
    return RunOutcome::failed;
}

// Executes rule runs one at a time, off the io thread, so timers, signals, the watchdog and
// /metrics stay responsive during a long purge. One worker serializes every append to the audit
// log (AuditLog is not thread-safe) and keeps rules of the same datastore from overlapping.
class Worker {
public:
    using ResultSink = std::function<void(JobResult)>;

    Worker(std::shared_ptr<const Config> config, AuditLog& audit, Notifier& notifier,
           const std::atomic<bool>& stop, ResultSink on_result, std::function<void()> on_exit)
        : m_pending(std::move(config)), m_audit(audit), m_notifier(notifier), m_stop(stop),
          m_on_result(std::move(on_result)), m_on_exit(std::move(on_exit)) {}

    ~Worker() { join(); }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    void start() {
        m_thread = std::thread([this] { loop(); });
    }
    void join() {
        if (m_thread.joinable()) {
            m_thread.join();
        }
    }
    void enqueue(const std::string& rule) {
        {
            const std::lock_guard lock(m_mutex);
            m_queue.push_back(rule);
        }
        m_cv.notify_one();
    }
    // Taken between two runs: a running batch is never interrupted by a reload.
    void set_config(std::shared_ptr<const Config> config) {
        const std::lock_guard lock(m_mutex);
        m_pending = std::move(config);
    }
    void request_exit() {
        {
            const std::lock_guard lock(m_mutex);
            m_exit = true;
        }
        m_cv.notify_one();
    }

private:
    void loop() {
        swap_config();
        recover();
        for (;;) {
            std::string name;
            {
                std::unique_lock lock(m_mutex);
                m_cv.wait(lock, [this] { return m_exit || !m_queue.empty(); });
                if (m_exit) {
                    break;
                }
                name = m_queue.front();
                m_queue.pop_front();
            }
            swap_config();
            JobResult result;
            try {
                result = run_one(name);
            } catch (const std::exception& e) {
                // An audit write failure lands here: logged loudly, the rule counts as failed.
                spdlog::error("rule {}: {}", name, e.what());
                result.rule = name;
                result.outcome = RunOutcome::failed;
            }
            m_on_result(std::move(result));
        }
        m_on_exit();
    }

    void swap_config() {
        std::shared_ptr<const Config> next;
        {
            const std::lock_guard lock(m_mutex);
            next = std::move(m_pending);
            m_pending.reset();
        }
        if (next) {
            m_runner.reset(); // it refers to the old config
            m_config = std::move(next);
            m_runner = std::make_unique<Runner>(*m_config);
        }
    }

    void recover() {
        try {
            if (const int n = m_runner->recover(m_audit); n > 0) {
                spdlog::warn("resolved {} batch(es) left unresolved by a previous crash", n);
            }
        } catch (const std::exception& e) {
            spdlog::error("crash recovery: {}", e.what());
        }
    }

    JobResult run_one(const std::string& name) {
        JobResult result;
        result.rule = name;
        const Rule* rule = m_config->find_rule(name);
        if (rule == nullptr) {
            result.removed = true;
            return result;
        }
        result.datastore = rule->datastore;
        result.action = std::string(to_string(rule->action));
        m_notifier.status("purging " + name);

        std::unique_ptr<RunLock> lock;
        const Datastore& store = m_config->datastores.at(rule->datastore);
        if (store.kind == DatastoreKind::postgres) {
            try {
                lock = RunLock::try_acquire(store.dsn.reveal(), name);
            } catch (const UnavailableError& e) {
                result.outcome = RunOutcome::unavailable;
                result.run.rule = name;
                result.run.datastore = rule->datastore;
                result.run.failure = RuleRun::Failure::unavailable;
                result.run.error = e.what();
                m_audit.event("error", {{"rule", name},
                                        {"datastore", rule->datastore},
                                        {"unavailable", true},
                                        {"message", e.what()}});
                spdlog::warn("rule {}: datastore {} unavailable: {}", name, rule->datastore,
                             e.what());
                return result;
            }
            if (!lock) {
                spdlog::info("rule {} is running on another host: skipped", name);
                m_audit.event("skipped", {{"rule", name},
                                          {"datastore", rule->datastore},
                                          {"reason", "running on another host (advisory lock)"}});
                result.outcome = RunOutcome::skipped;
                return result;
            }
        }

        PurgeOptions options;
        options.mode = "daemon";
        options.stop_requested = [this] { return m_stop.load(); };
        options.progress = [this](const Rule& r, std::int64_t done, std::int64_t total) {
            m_notifier.status("purging " + r.name + ": " + std::to_string(done) + "/" +
                              std::to_string(total));
        };
        result.run = m_runner->run_rule(*rule, m_audit, make_run_id(), options);
        result.outcome = outcome_of(result.run);
        const auto& run = result.run;
        switch (result.outcome) {
        case RunOutcome::success:
        case RunOutcome::stopped:
            spdlog::info("rule {}: {} ({} of {} due records processed in {} ms)", name,
                         result.outcome == RunOutcome::success ? "ok" : "stopped",
                         run.result.processed, run.result.due, run.elapsed.count());
            break;
        case RunOutcome::unavailable:
            spdlog::warn("rule {}: datastore {} unavailable: {}", name, rule->datastore, run.error);
            break;
        default:
            spdlog::error("rule {}: failed: {}", name,
                          run.error.empty() ? run.result.message : run.error);
        }
        return result;
    }

    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<std::string> m_queue;
    std::shared_ptr<const Config> m_pending;
    bool m_exit = false;

    // Worker thread only.
    std::shared_ptr<const Config> m_config;
    std::unique_ptr<Runner> m_runner;

    AuditLog& m_audit;
    Notifier& m_notifier;
    const std::atomic<bool>& m_stop;
    ResultSink m_on_result;
    std::function<void()> m_on_exit;
    std::thread m_thread;
};

// The io thread's side: timers, signals, watchdog, metrics. Every member is touched only from
// the io thread, except through Worker's locked methods.
class Daemon {
public:
    Daemon(std::string config_path, std::shared_ptr<const Config> config, AuditLog& audit,
           SchedulerSettings settings)
        : m_config_path(std::move(config_path)), m_config(std::move(config)), m_settings(settings),
          m_signals(m_io, SIGHUP, SIGTERM, SIGINT), m_watchdog(m_io), m_rng(std::random_device{}()),
          m_worker(
              m_config, audit, m_notifier, m_stop,
              [this](JobResult r) {
                  asio::post(m_io, [this, r = std::move(r)]() mutable { on_result(std::move(r)); });
              },
              [this] { asio::post(m_io, [this] { on_worker_exit(); }); }) {}

    // Binds /metrics now, so a taken port fails the start rather than a later request.
    void start_metrics() {
        const auto& spec = m_config->daemon.metrics;
        if (spec == "off") {
            return;
        }
        m_metrics_address = spec;
        m_server = std::make_unique<MetricsServer>(
            m_io, parse_listen_address(spec),
            [this](std::string_view target) { return handle_http(target); });
        spdlog::info("metrics on http://{}:{}/metrics", parse_listen_address(spec).host,
                     m_server->port());
    }

    int run() {
        m_started = now_utc();
        for (const auto& [name, store] : m_config->datastores) {
            m_metrics.datastores[name] = DatastoreMetrics{};
        }
        plan_rules(true);
        m_signals.async_wait([this](auto ec, int sig) { on_signal(ec, sig); });
        if (const auto interval = Notifier::watchdog_interval()) {
            m_watchdog_interval = *interval;
            spdlog::info("systemd watchdog enabled: pinging every {} ms",
                         std::chrono::duration_cast<std::chrono::milliseconds>(*interval).count());
            arm_watchdog();
        }
        m_worker.start();
        m_notifier.ready();
        spdlog::info("retentiond running: {} rules, {} datastores", m_config->rules.size(),
                     m_config->datastores.size());
        update_status();
        m_io.run();
        m_worker.join();
        return k_exit_ok;
    }

    nlohmann::json summary() const {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& [rule, r] : m_metrics.rules) {
            std::uint64_t processed = 0;
            for (const auto& [action, n] : r.records) {
                processed += n;
            }
            out.push_back({{"rule", rule}, {"processed", processed}, {"failures", r.failures}});
        }
        return out;
    }

private:
    struct Entry {
        std::string schedule_text;
        Schedule schedule;
        std::string datastore;
        RuleSchedule state;
        TimePoint due{};
        std::unique_ptr<asio::system_timer> timer;
        bool queued = false; // in the worker's queue or running
    };

    NextSlot next_slot(const Schedule& schedule) const {
        const date::time_zone* tz = m_config->zone();
        return [schedule, tz](TimePoint after) { return next_run(schedule, after, tz); };
    }

    // At start every rule runs once (missed-run policy, see docs/daemon.md); on reload only new
    // or rescheduled rules are planned afresh, at their next slot.
    void plan_rules(bool at_start) {
        const TimePoint now = now_utc();
        std::map<std::string, Entry> next;
        for (const auto& rule : m_config->rules) {
            auto old = m_rules.find(rule.name);
            if (old != m_rules.end() && old->second.schedule_text == rule.schedule.text) {
                Entry kept = std::move(old->second);
                kept.schedule = rule.schedule;
                kept.datastore = rule.datastore;
                next.emplace(rule.name, std::move(kept));
                continue;
            }
            Entry e;
            e.schedule_text = rule.schedule.text;
            e.schedule = rule.schedule;
            e.datastore = rule.datastore;
            e.state.watch_since = now;
            e.timer = std::make_unique<asio::system_timer>(m_io);
            if (old != m_rules.end()) {
                e.state = old->second.state;
                e.queued = old->second.queued;
            }
            const auto slot = next_slot(rule.schedule);
            e.due = at_start ? first_due(slot, now, std::nullopt)
                             : slot(now) + random_splay(m_settings.max_splay, m_rng);
            next.emplace(rule.name, std::move(e));
            m_metrics.rules[rule.name]; // exposes failures_total 0 and overdue 0 from the start
        }
        for (auto& [name, e] : m_rules) {
            if (next.count(name) == 0 && e.timer) {
                e.timer->cancel();
                m_metrics.rules.erase(name);
            }
        }
        m_rules = std::move(next);
        for (auto& [name, e] : m_rules) {
            arm(name, e);
        }
    }

    void arm(const std::string& name, Entry& e) {
        if (m_stopping) {
            return;
        }
        e.timer->expires_at(to_system(e.due));
        e.timer->async_wait([this, name](const boost::system::error_code& ec) {
            if (!ec) {
                on_due(name);
            }
        });
        spdlog::debug("rule {}: next run at {}", name, format_utc_seconds(e.due));
    }

    void on_due(const std::string& name) {
        auto it = m_rules.find(name);
        if (it == m_rules.end() || m_stopping) {
            return;
        }
        Entry& e = it->second;
        if (now_utc() < e.due) {
            arm(name, e); // the system clock was set back: wait for the real due time
            return;
        }
        if (e.queued) {
            // Still running from the previous slot: this slot is covered by it.
            e.due = next_slot(e.schedule)(now_utc());
            arm(name, e);
            return;
        }
        e.queued = true;
        m_worker.enqueue(name);
    }

    void on_result(JobResult r) {
        if (r.removed) {
            spdlog::info("rule {} left the configuration before it could run", r.rule);
        }
        auto it = m_rules.find(r.rule);
        const TimePoint now = now_utc();
        if (!r.datastore.empty()) {
            auto& store = m_metrics.datastores[r.datastore];
            if (r.outcome == RunOutcome::unavailable) {
                if (store.up) {
                    store.down_since = now;
                }
                store.up = false;
            } else if (r.outcome != RunOutcome::stopped) {
                store.up = true;
                store.down_since.reset();
            }
        }
        if (it == m_rules.end()) {
            update_status();
            return;
        }
        Entry& e = it->second;
        e.queued = false;
        auto& m = m_metrics.rules[r.rule];
        if (r.outcome != RunOutcome::skipped && !r.removed) {
            m.run_duration_seconds = std::chrono::duration<double>(r.run.elapsed).count();
        }
        if (r.run.result.processed > 0) {
            m.records[r.action] += static_cast<std::uint64_t>(r.run.result.processed);
        }
        if (r.outcome == RunOutcome::success || r.outcome == RunOutcome::stopped) {
            m.due_records = r.run.result.due;
        }
        if (r.outcome == RunOutcome::success) {
            m.last_success_timestamp = unix_seconds(now);
        } else if (r.outcome == RunOutcome::unavailable || r.outcome == RunOutcome::failed) {
            ++m.failures;
        }
        e.due = after_run(e.state, r.outcome, next_slot(e.schedule), now, m_settings.backoff);
        if (r.outcome != RunOutcome::unavailable) {
            e.due += random_splay(m_settings.max_splay, m_rng);
        } else {
            spdlog::info("rule {}: retrying at {} (outage #{})", r.rule, format_utc_seconds(e.due),
                         e.state.consecutive_unavailable);
        }
        arm(r.rule, e);
        update_status();
    }

    void update_status() {
        if (m_stopping) {
            return;
        }
        for (const auto& [name, e] : m_rules) {
            if (e.queued) {
                return; // the worker reports its own activity
            }
        }
        std::string text = "idle";
        std::string down;
        for (const auto& [name, d] : m_metrics.datastores) {
            if (!d.up) {
                down += (down.empty() ? "" : ", ") + name;
            }
        }
        if (!down.empty()) {
            text += "; datastore down: " + down;
        }
        const Entry* first = nullptr;
        const std::string* first_name = nullptr;
        for (const auto& [name, e] : m_rules) {
            if (first == nullptr || e.due < first->due) {
                first = &e;
                first_name = &name;
            }
        }
        if (first != nullptr) {
            text += "; next: " + *first_name + " at " + format_utc_seconds(first->due);
        }
        m_notifier.status(text);
    }

    void on_signal(const boost::system::error_code& ec, int sig) {
        if (ec) {
            return;
        }
        if (sig == SIGHUP) {
            reload();
        } else {
            begin_stop(sig);
        }
        if (!m_stopping) {
            m_signals.async_wait([this](auto e, int s) { on_signal(e, s); });
        }
    }

    void reload() {
        m_notifier.reloading();
        spdlog::info("SIGHUP: reloading {}", m_config_path);
        try {
            auto fresh = std::make_shared<const Config>(load_config(m_config_path));
            for (const auto& w : fresh->warnings) {
                spdlog::warn("{}", w.to_string());
            }
            if (fresh->daemon.audit_log != m_config->daemon.audit_log ||
                fresh->daemon.audit_key.reveal() != m_config->daemon.audit_key.reveal()) {
                spdlog::warn("daemon.audit_log and daemon.audit_key changes take effect at the "
                             "next restart");
            }
            if (fresh->daemon.metrics != m_config->daemon.metrics) {
                spdlog::warn("daemon.metrics changes take effect at the next restart");
            }
            m_config = fresh;
            m_worker.set_config(fresh);
            for (const auto& [name, store] : m_config->datastores) {
                m_metrics.datastores.try_emplace(name);
            }
            for (auto it = m_metrics.datastores.begin(); it != m_metrics.datastores.end();) {
                it = m_config->datastores.count(it->first) ? std::next(it)
                                                           : m_metrics.datastores.erase(it);
            }
            plan_rules(false);
            spdlog::info("configuration reloaded: {} rules, {} datastores (sha256 {})",
                         m_config->rules.size(), m_config->datastores.size(),
                         m_config->sha256.substr(0, 12));
        } catch (const ConfigError& e) {
            for (const auto& d : e.diagnostics()) {
                spdlog::error("{}", d.to_string());
            }
            spdlog::error("configuration rejected on reload ({} errors): keeping the previous one",
                          e.diagnostics().size());
        } catch (const std::exception& e) {
            spdlog::error("reload failed: {}: keeping the previous configuration", e.what());
        }
        m_notifier.ready();
        update_status();
    }

    void begin_stop(int sig) {
        if (m_stopping) {
            return;
        }
        spdlog::info("{}: finishing the current batch, then stopping",
                     sig == SIGTERM ? "SIGTERM" : "SIGINT");
        m_stopping = true;
        m_stop = true;
        m_notifier.stopping();
        for (auto& [name, e] : m_rules) {
            e.timer->cancel();
        }
        m_worker.request_exit();
    }

    void on_worker_exit() {
        boost::system::error_code ignored;
        m_signals.cancel(ignored);
        m_watchdog.cancel();
        if (m_server) {
            m_server->stop();
        }
        m_io.stop();
    }

    void arm_watchdog() {
        m_notifier.watchdog();
        m_watchdog.expires_after(m_watchdog_interval);
        m_watchdog.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) {
                arm_watchdog();
            }
        });
    }

    HttpResponse handle_http(std::string_view target) {
        const auto path = target.substr(0, target.find('?'));
        const TimePoint now = now_utc();
        if (path == "/metrics") {
            for (auto& [name, e] : m_rules) {
                m_metrics.rules[name].overdue = is_overdue(e.state, e.schedule.period(), now);
            }
            return {200, "text/plain; version=0.0.4; charset=utf-8", render_prometheus(m_metrics)};
        }
        if (path == "/healthz") {
            if (is_healthy(m_metrics, now, m_config->daemon.store_down_unhealthy)) {
                return {200, "text/plain; charset=utf-8", "ok\n"};
            }
            return {503, "text/plain; charset=utf-8", "a datastore has been down too long\n"};
        }
        return {404, "text/plain; charset=utf-8", "not found\n"};
    }

    std::string m_config_path;
    std::shared_ptr<const Config> m_config;
    SchedulerSettings m_settings;
    asio::io_context m_io;
    asio::signal_set m_signals;
    asio::steady_timer m_watchdog;
    std::chrono::microseconds m_watchdog_interval{0};
    std::mt19937_64 m_rng;
    Notifier m_notifier;
    std::atomic<bool> m_stop{false};
    bool m_stopping = false;
    TimePoint m_started{};
    std::map<std::string, Entry> m_rules;
    MetricsSnapshot m_metrics;
    std::string m_metrics_address;
    std::unique_ptr<MetricsServer> m_server;
    Worker m_worker; // last: its thread uses the members above
};

} // namespace

int run_daemon(const std::string& config_path, std::ostream& out, std::ostream& err) {
    (void)out;
    std::shared_ptr<const Config> config;
    try {
        config = std::make_shared<const Config>(load_config(config_path));
    } catch (const ConfigError& e) {
        for (const auto& d : e.diagnostics()) {
            err << d.to_string() << '\n';
        }
        err << "configuration rejected: " << e.diagnostics().size() << " error(s)\n";
        return k_exit_config;
    }
    for (const auto& w : config->warnings) {
        spdlog::warn("{}", w.to_string());
    }
    if (config->daemon.metrics != "off") {
        try {
            parse_listen_address(config->daemon.metrics);
        } catch (const std::invalid_argument& e) {
            err << config->main_file << ": daemon.metrics: " << e.what() << '\n';
            return k_exit_config;
        }
    }
    // The audit log first: READY=1 promises it is writable. One log for the daemon's lifetime;
    // each rule run gets its own run id.
    std::unique_ptr<AuditLog> audit;
    try {
        audit = open_audit_log(*config, make_run_id());
        audit->run_start(*config, "daemon");
    } catch (const ConfigError& e) {
        for (const auto& d : e.diagnostics()) {
            err << d.to_string() << '\n';
        }
        return k_exit_config;
    } catch (const std::exception& e) {
        err << "retentiond: " << e.what() << " (nothing was touched)\n";
        return k_exit_ioerr;
    }

    const auto settings = scheduler_settings_from_env();
    Daemon daemon(config_path, config, *audit, settings);
    try {
        daemon.start_metrics();
    } catch (const std::exception& e) {
        err << "retentiond: cannot serve metrics on " << config->daemon.metrics << ": " << e.what()
            << '\n';
        audit->run_end("failed", nlohmann::json::array());
        return k_exit_config;
    }
    const int code = daemon.run();
    audit->run_end("ok", daemon.summary());
    spdlog::info("stopped; audit log {} ends at seq {}, sha256 {}", audit->path(),
                 audit->last_seq(), audit->last_hash());
    return code;
}

} // namespace retentiond
