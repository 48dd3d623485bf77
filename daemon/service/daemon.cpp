#include "retentiond/daemon.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/config.hpp"
#include "retentiond/daemon_erasure.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/kind.hpp"
#include "retentiond/ledger.hpp"
#include "retentiond/metrics.hpp"
#include "retentiond/notify.hpp"
#include "retentiond/progress.hpp"
#include "retentiond/registry.hpp"
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

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <sstream>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>

namespace retentiond {
namespace {

namespace asio = boost::asio;

std::chrono::system_clock::time_point to_system(TimePoint t) {
    return std::chrono::time_point_cast<std::chrono::system_clock::duration>(t);
}

double unix_seconds(TimePoint t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// A scheduled run handed to a worker: the rule and the slot it stands for.
struct Job {
    std::string rule;
    TimePoint slot{};
};

// What a worker hands back to the io thread after one rule.
struct JobResult {
    std::string worker; // the worker's datastore (its activity line ends)
    std::string rule;
    std::string datastore;    // the rule's
    std::string coordination; // the datastore holding the rule's lock and slots, if any
    std::string down_store;   // the store found unavailable (the rule's or the coordination one)
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

// The journal line for a rule's run: info when it finished or stopped, else a warning or error.
void log_outcome(const JobResult& result, const Rule& rule) {
    const auto& run = result.run;
    switch (result.outcome) {
    case RunOutcome::success:
    case RunOutcome::stopped:
        spdlog::info("rule {}: {} ({} of {} due records processed in {} ms)", result.rule,
                     result.outcome == RunOutcome::success ? "ok" : "stopped", run.result.processed,
                     run.result.due, run.elapsed.count());
        break;
    case RunOutcome::unavailable:
        spdlog::warn("rule {}: datastore {} unavailable: {}", result.rule, rule.datastore,
                     run.error);
        break;
    default:
        spdlog::error("rule {}: failed: {}", result.rule,
                      run.error.empty() ? run.result.message : run.error);
    }
}

// Where a rule takes its advisory lock and records its slots: its own datastore when its kind
// coordinates runs (postgres), else daemon.coordination when set, else nowhere.
const Datastore* coordination_store(const Config& config, const Rule& rule) {
    const Datastore& own = config.datastores.at(rule.datastore);
    if (own.kind != nullptr && own.kind->coordinates_runs()) {
        return &own;
    }
    if (!config.daemon.coordination.empty()) {
        return &config.datastores.at(config.daemon.coordination);
    }
    return nullptr;
}

std::string host_id() {
    char name[256] = {};
    if (::gethostname(name, sizeof(name) - 1) != 0) {
        std::snprintf(name, sizeof(name), "unknown");
    }
    return std::string(name) + ":" + std::to_string(::getpid());
}

struct WorkerHooks {
    std::function<void(JobResult)> on_result;
    // "purging RULE: done/total", for STATUS=.
    std::function<void(const std::string& worker, std::string activity)> on_activity;
    std::function<void(const std::string& worker)> on_exit;
    // The worker's crash recovery at start is done: its datastore's batches in flight are from
    // now on its own runs' or an erasure pass's (which must not be taken for abandoned ones).
    std::function<void(const std::string& worker)> on_recovered;
};

// Executes the rule runs of ONE datastore, one at a time, off the io thread: rules of the same
// datastore never overlap, rules of different datastores run in parallel on their own workers,
// and timers, signals, the watchdog and /metrics stay responsive during a long purge. The audit
// log is shared by all workers (AuditLog locks each append, so the chain stays linear).
class Worker {
public:
    Worker(std::string datastore, bool recovers_orphans, std::shared_ptr<const Config> config,
           AuditLog& audit, const std::atomic<bool>& stop, std::string host, WorkerHooks hooks)
        : m_datastore(std::move(datastore)), m_recovers_orphans(recovers_orphans),
          m_pending(std::move(config)), m_audit(audit), m_stop(stop), m_host(std::move(host)),
          m_hooks(std::move(hooks)) {}

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
    void enqueue(Job job) {
        {
            const std::lock_guard lock(m_mutex);
            m_queue.push_back(std::move(job));
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
        m_hooks.on_recovered(m_datastore);
        for (;;) {
            Job job;
            {
                std::unique_lock lock(m_mutex);
                m_cv.wait(lock, [this] { return m_exit || !m_queue.empty(); });
                if (m_exit) {
                    break;
                }
                job = std::move(m_queue.front());
                m_queue.pop_front();
            }
            swap_config();
            if (m_unresolved) {
                // A run that lost its datastore mid-batch (or a crash's batches the store could not
                // be asked about yet) left intents without outcomes: settled here, once the store
                // answers again, not only at the next start.
                recover();
            }
            JobResult result;
            try {
                result = run_one(job);
            } catch (const std::exception& e) {
                // An audit write failure lands here: logged loudly, the rule counts as failed.
                spdlog::error("rule {}: {}", job.rule, e.what());
                result.rule = job.rule;
                result.outcome = RunOutcome::failed;
            }
            if (result.outcome == RunOutcome::unavailable || result.outcome == RunOutcome::failed) {
                m_unresolved = true; // cheap to check: the pending directory is read, that is all
            }
            result.worker = m_datastore;
            m_hooks.on_result(std::move(result));
        }
        m_hooks.on_exit(m_datastore);
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

    // Batches a crash left pending on this worker's datastore (and, for one worker, those of
    // datastores no longer in the config), and this process's own batches that a run abandoned
    // when the datastore went away. Sets m_unresolved when some remain (the store is still down).
    void recover() {
        try {
            std::vector<AuditLog::Pending> batches;
            for (auto& p : m_audit.pending()) {
                if (p.batch.datastore == m_datastore ||
                    (m_recovers_orphans && m_config->datastores.count(p.batch.datastore) == 0)) {
                    batches.push_back(std::move(p));
                }
            }
            // This process's own batches a run abandoned when its datastore went away: none of
            // them is in flight, the worker runs one rule at a time.
            for (auto& p : m_audit.abandoned(m_datastore)) {
                batches.push_back(std::move(p));
            }
            const int n = m_runner->resolve(m_audit, batches);
            if (n > 0) {
                spdlog::warn("resolved {} batch(es) left unresolved by a crash or an outage", n);
            }
            m_unresolved = n < static_cast<int>(batches.size());
        } catch (const std::exception& e) {
            spdlog::error("crash recovery: {}", e.what());
            m_unresolved = true;
        }
    }

    JobResult unavailable(JobResult result, const Rule& rule, const std::string& store,
                          const std::string& message) {
        result.outcome = RunOutcome::unavailable;
        result.down_store = store;
        result.run.rule = rule.name;
        result.run.datastore = rule.datastore;
        result.run.failure = RuleRun::Failure::unavailable;
        result.run.error = message;
        m_audit.event("error", {{"rule", rule.name},
                                {"datastore", store},
                                {"unavailable", true},
                                {"message", message}});
        spdlog::warn("rule {}: datastore {} unavailable: {}", rule.name, store, message);
        return result;
    }

    JobResult skipped(JobResult result, const Rule& rule, const Job& job,
                      const std::string& reason) {
        m_audit.event("skipped", {{"rule", job.rule},
                                  {"datastore", rule.datastore},
                                  {"slot", format_utc_seconds(job.slot)},
                                  {"reason", reason}});
        result.outcome = RunOutcome::skipped;
        return result;
    }

    // The advisory lock a rule runs under, and whether its slot was found free in rule_runs.
    struct SlotClaim {
        std::unique_ptr<RunLock> lock;
        bool slot_checked = false;
    };

    // Takes the rule's advisory lock on `coord` and checks the slot: nullopt when the run may go
    // ahead, else its result (skipped, or the coordination store unavailable).
    std::optional<JobResult> claim_slot(const Datastore& coord, const Rule& rule, const Job& job,
                                        const JobResult& result, SlotClaim& claim) {
        const std::string& name = job.rule;
        try {
            claim.lock = coord.kind->try_lock_run(coord, name, [this] { return m_stop.load(); });
        } catch (const UnavailableError& e) {
            return unavailable(result, rule, coord.name, e.what());
        }
        if (!claim.lock) {
            spdlog::info("rule {} is running on another host: skipped", name);
            return skipped(result, rule, job, "running on another host (advisory lock)");
        }
        try {
            if (const auto by = claim.lock->slot_taken(name, job.slot)) {
                spdlog::info("rule {}: slot {} already run by {}: skipped", name,
                             format_utc_seconds(job.slot), *by);
                return skipped(result, rule, job, "slot already run by " + *by);
            }
            claim.slot_checked = true;
        } catch (const UnavailableError& e) {
            return unavailable(result, rule, coord.name, e.what());
        } catch (const std::exception& e) {
            // No CREATE privilege, say: the lock alone still keeps runs from overlapping.
            spdlog::warn("rule {}: retentiond.rule_runs unusable ({}): running under the "
                         "advisory lock alone, another host may run this slot again",
                         name, e.what());
        }
        return std::nullopt;
    }

    // The rule's purge, its progress shown in STATUS= and in the journal.
    RuleRun purge(const Rule& rule, TimePoint slot) {
        PurgeOptions options;
        options.mode = "daemon";
        options.slot = slot;
        options.stop_requested = [this] { return m_stop.load(); };
        // STATUS= shows the phase and done/due; the journal gets a progress line every ~10 s.
        ProgressReporter progress(
            {nullptr, [](const std::string& line) { spdlog::info("{}", line); },
             [this](const std::string& text) { m_hooks.on_activity(m_datastore, text); }});
        options.progress = [&progress](const Rule& r, std::int64_t done, std::int64_t total) {
            progress.progress(r.name, done, total);
        };
        options.phase = [&progress](const Rule& r, std::string_view phase) {
            progress.phase(r.name, phase);
        };
        auto run = m_runner->run_rule(rule, m_audit, new_run_id(), options);
        log_audit_head(m_audit); // the anchor `audit verify --head` checks the chain against
        return run;
    }

    void record_slot(RunLock& lock, const Job& job, TimePoint started, const RuleRun& run) {
        try {
            lock.record_slot(job.rule, job.slot, m_host, started, rule_run_status(run));
        } catch (const std::exception& e) {
            spdlog::warn("rule {}: slot {} not recorded ({}): another host may run it again",
                         job.rule, format_utc_seconds(job.slot), e.what());
        }
    }

    JobResult run_one(const Job& job) {
        JobResult result;
        result.rule = job.rule;
        const Rule* rule = m_config->find_rule(job.rule);
        if (rule == nullptr) {
            result.removed = true;
            return result;
        }
        result.datastore = rule->datastore;
        result.action = std::string(to_string(rule->action));
        m_hooks.on_activity(m_datastore, "purging " + job.rule);

        // Several hosts: one run at a time (advisory lock), and each slot once (rule_runs).
        SlotClaim claim;
        if (const Datastore* coord = coordination_store(*m_config, *rule)) {
            result.coordination = coord->name;
            if (auto refused = claim_slot(*coord, *rule, job, result, claim)) {
                return std::move(*refused);
            }
        }
        const TimePoint started = now_utc();
        result.run = purge(*rule, job.slot);
        result.outcome = outcome_of(result.run);
        if (result.outcome == RunOutcome::unavailable) {
            result.down_store = rule->datastore;
        }
        log_outcome(result, *rule);
        // A finished slot (a refusal would be refused again) is recorded for the other hosts; an
        // outage or a stop leaves it to whoever runs it next.
        if (claim.slot_checked &&
            (result.outcome == RunOutcome::success || result.outcome == RunOutcome::failed)) {
            record_slot(*claim.lock, job, started, result.run);
        }
        return result;
    }

    const std::string m_datastore;
    const bool m_recovers_orphans;
    // Intents of this worker's datastore may be waiting for an outcome (see loop()).
    bool m_unresolved = false;

    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<Job> m_queue;
    std::shared_ptr<const Config> m_pending;
    bool m_exit = false;

    // Worker thread only.
    std::shared_ptr<const Config> m_config;
    std::unique_ptr<Runner> m_runner;

    AuditLog& m_audit;
    const std::atomic<bool>& m_stop;
    const std::string m_host;
    WorkerHooks m_hooks;
    std::thread m_thread;
};

// The scheduler's knobs from the config (reloadable).
SchedulerSettings settings_of(const DaemonSettings& d) {
    SchedulerSettings s;
    s.max_splay = d.splay;
    s.backoff.initial = d.retry_backoff_initial;
    s.backoff.max = d.retry_backoff_max;
    return s;
}

// Raises the soft RLIMIT_NOFILE to the hard one (LimitNOFILE=; at most 65536) and returns how
// many /metrics connections may be open at once: few enough that k_reserve descriptors always
// stay for the daemon's own work (datastore connections, files, the audit log, sd_notify).
std::size_t reserve_descriptors() {
    constexpr rlim_t k_most = 65536;
    constexpr rlim_t k_reserve = 512;
    constexpr std::size_t k_cap = 64;
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return k_cap;
    }
    const rlim_t want = std::min(lim.rlim_max, k_most);
    if (lim.rlim_cur < want) {
        const rlimit raised{want, lim.rlim_max};
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            lim.rlim_cur = want;
        }
    }
    if (lim.rlim_cur >= k_reserve + 2 * k_cap) {
        return k_cap;
    }
    const auto cap = std::max<std::size_t>(4, static_cast<std::size_t>(lim.rlim_cur / 16));
    spdlog::warn("only {} file descriptors (LimitNOFILE=): /metrics limited to {} connections",
                 static_cast<unsigned long long>(lim.rlim_cur), cap);
    return cap;
}

// The io thread's side: timers, signals, watchdog, metrics, status. Every member is touched only
// from the io thread; workers reach it by posting (WorkerHooks) or through their locked methods.
class Daemon {
public:
    Daemon(std::string config_path, std::shared_ptr<const Config> config, AuditLog& audit)
        : m_config_path(std::move(config_path)), m_config(std::move(config)),
          m_settings(settings_of(m_config->daemon)), m_audit(audit), m_host(host_id()),
          m_signals(m_io, SIGHUP, SIGTERM, SIGINT), m_watchdog(m_io), m_ledger_timer(m_io),
          m_erasure_timer(m_io), m_rng(std::random_device{}()) {}

    ~Daemon() {
        if (m_ledger_thread.joinable()) {
            m_ledger_thread.join(); // it uses m_io
        }
        if (m_erasure_thread.joinable()) {
            m_erasure_thread.join(); // it uses m_io and the audit log
        }
        for (auto& [name, w] : m_workers) {
            w->request_exit();
        }
        m_workers.clear(); // joins
    }
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Binds /metrics now, so a taken port fails the start rather than a later request. The
    // server has its own thread and reads only what publish_metrics() hands it: a client can
    // neither delay this thread's timers and watchdog nor see a half-updated state.
    void start_metrics(std::size_t max_connections) {
        const auto& spec = m_config->daemon.metrics;
        if (spec == "off") {
            return;
        }
        m_metrics_address = spec;
        publish_metrics();
        MetricsServerLimits limits;
        limits.max_connections = max_connections;
        m_server = std::make_unique<MetricsServer>(
            parse_listen_address(spec),
            [this](std::string_view target) { return handle_http(target); }, limits);
        spdlog::info("metrics on http://{}:{}/metrics (at most {} connections)",
                     parse_listen_address(spec).host, m_server->port(), max_connections);
    }

    int run() {
        m_started = now_utc();
        for (const auto& [name, store] : m_config->datastores) {
            m_metrics.datastores[name] = DatastoreMetrics{};
        }
        read_last_successes();
        plan_rules(true);
        m_signals.async_wait([this](auto ec, int sig) { on_signal(ec, sig); });
        if (const auto interval = Notifier::watchdog_interval()) {
            m_watchdog_interval = *interval;
            spdlog::info("systemd watchdog enabled: pinging every {} ms",
                         std::chrono::duration_cast<std::chrono::milliseconds>(*interval).count());
            arm_watchdog();
        }
        ensure_workers(true);
        if (!m_metrics_address.empty()) {
            arm_ledger();
        }
        want_erasure(); // at start: a restore while the daemon was down is found now
        m_notifier.ready();
        spdlog::info("retentiond running: {} rules, {} datastores", m_config->rules.size(),
                     m_config->datastores.size());
        update_status();
        m_io.run();
        for (auto& [name, w] : m_workers) {
            w->join();
        }
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
        bool queued = false; // in a worker's queue or running
    };

    NextSlot next_slot(const Schedule& schedule) const {
        const date::time_zone* tz = m_config->zone();
        return [schedule, tz](TimePoint after) { return next_run(schedule, after, tz); };
    }

    // Missed runs: the last success of each rule, from the audit log (its tail, and path.1).
    void read_last_successes() {
        std::set<std::string> names;
        for (const auto& rule : m_config->rules) {
            names.insert(rule.name);
        }
        try {
            m_last_success = last_successes(*open_audit_lines(*m_config, std::nullopt), names);
        } catch (const std::exception& e) {
            // Unknown last success = run at start: the safe side for a retention promise.
            spdlog::warn("cannot read the last successes from the audit log ({}): every rule "
                         "runs at start",
                         e.what());
        }
    }

    // One worker per datastore, created at start and for datastores a reload adds. Workers of
    // datastores a reload removes stay idle until exit.
    void ensure_workers(bool at_start) {
        bool first = at_start;
        for (const auto& [name, store] : m_config->datastores) {
            if (m_workers.count(name) != 0) {
                continue;
            }
            WorkerHooks hooks;
            hooks.on_result = [this](JobResult r) {
                asio::post(m_io, [this, r = std::move(r)]() mutable { on_result(std::move(r)); });
            };
            hooks.on_activity = [this](const std::string& worker, std::string text) {
                asio::post(m_io, [this, worker, text = std::move(text)]() mutable {
                    m_activity[worker] = std::move(text);
                    update_status();
                });
            };
            hooks.on_exit = [this](const std::string& worker) {
                asio::post(m_io, [this, worker] { on_worker_exit(worker); });
            };
            hooks.on_recovered = [this](const std::string& worker) {
                asio::post(m_io, [this, worker] {
                    m_recovered.insert(worker);
                    maybe_start_erasure();
                });
            };
            auto worker = std::make_unique<Worker>(name, first, m_config, m_audit, m_stop, m_host,
                                                   std::move(hooks));
            first = false;
            worker->start();
            m_workers.emplace(name, std::move(worker));
            ++m_live_workers;
        }
    }

    // At start a rule runs at once when it never succeeded or a slot fell due since its last
    // success (once, however many slots were missed); otherwise at its next slot. On reload
    // only new or rescheduled rules are planned afresh, at their next slot.
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
            auto& m = m_metrics.rules[rule.name]; // failures_total 0 and overdue 0 from the start
            if (at_start) {
                std::optional<TimePoint> last;
                if (const auto it = m_last_success.find(rule.name); it != m_last_success.end()) {
                    last = it->second;
                    m.last_success_timestamp = unix_seconds(it->second);
                }
                e.due = plan_at_start(e.state, slot, rule.schedule.period(), now, last);
                e.state.watch_since = now; // overdue counts from the daemon's start
                if (e.due <= now) {
                    spdlog::info("rule {}: {}: runs now for slot {}", rule.name,
                                 last ? "a slot was missed since its last success at " +
                                            format_utc_seconds(*last)
                                      : std::string("no success in the audit log"),
                                 format_utc_seconds(e.state.slot));
                } else {
                    spdlog::info("rule {}: last success at {}: waiting for its next slot {}",
                                 rule.name, format_utc_seconds(*last), format_utc_seconds(e.due));
                }
            } else {
                e.state.slot = slot(now);
                e.due = e.state.slot;
            }
            e.due += random_splay(rule_splay(m_settings.max_splay, e.schedule.period()), m_rng);
            next.emplace(rule.name, std::move(e));
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
            e.state.slot = next_slot(e.schedule)(now_utc());
            e.due = e.state.slot;
            arm(name, e);
            return;
        }
        if ((m_erasure_wanted || m_erasure_running) && m_erasure_stores.count(e.datastore) != 0) {
            // An erasure pass rewrites the same files and rows: the run waits for its end.
            m_held_jobs.insert(name);
            return;
        }
        e.queued = true;
        ensure_workers(false);
        m_workers.at(e.datastore)->enqueue(Job{name, e.state.slot});
    }

    void mark_store(const std::string& name, bool up, TimePoint now) {
        auto it = m_metrics.datastores.find(name);
        if (name.empty() || it == m_metrics.datastores.end()) {
            return;
        }
        auto& store = it->second;
        if (!up && store.up) {
            store.down_since = now;
        }
        if (up) {
            store.down_since.reset();
        }
        store.up = up;
    }

    void on_result(JobResult r) {
        m_activity.erase(r.worker);
        if (r.removed) {
            spdlog::info("rule {} left the configuration before it could run", r.rule);
        }
        auto it = m_rules.find(r.rule);
        const TimePoint now = now_utc();
        if (r.outcome == RunOutcome::unavailable) {
            // The coordination store answered if the rule's own store is the one down.
            if (r.down_store != r.coordination) {
                mark_store(r.coordination, true, now);
            }
            mark_store(r.down_store, false, now);
        } else if (r.outcome != RunOutcome::stopped) {
            mark_store(r.coordination, true, now);
            if (r.outcome != RunOutcome::skipped) {
                mark_store(r.datastore, true, now);
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
            e.due += random_splay(rule_splay(m_settings.max_splay, e.schedule.period()), m_rng);
        } else {
            spdlog::info("rule {}: retrying at {} (outage #{})", r.rule, format_utc_seconds(e.due),
                         e.state.consecutive_unavailable);
        }
        arm(r.rule, e);
        update_status();
        maybe_start_erasure();
    }

    void update_status() {
        publish_metrics();
        if (m_stopping) {
            return;
        }
        std::string down;
        for (const auto& [name, d] : m_metrics.datastores) {
            if (!d.up) {
                down += (down.empty() ? "" : ", ") + name;
            }
        }
        std::string text;
        for (const auto& [worker, activity] : m_activity) {
            text += (text.empty() ? "" : "; ") + activity;
        }
        if (text.empty()) {
            text = "idle";
        }
        if (!down.empty()) {
            text += "; datastore down: " + down;
        }
        if (m_activity.empty()) {
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
                fresh->daemon.audit_store != m_config->daemon.audit_store ||
                fresh->daemon.audit_schema != m_config->daemon.audit_schema ||
                fresh->daemon.audit_key.reveal() != m_config->daemon.audit_key.reveal()) {
                spdlog::warn("daemon.audit_log, audit_store and audit_key changes take effect at "
                             "the next restart");
            }
            if (fresh->daemon.metrics != m_config->daemon.metrics) {
                spdlog::warn("daemon.metrics changes take effect at the next restart");
            }
            m_config = fresh;
            m_settings = settings_of(m_config->daemon);
            for (auto& [name, w] : m_workers) {
                w->set_config(fresh);
            }
            ensure_workers(false);
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
        spdlog::info("{}: finishing the current batches, then stopping",
                     sig == SIGTERM ? "SIGTERM" : "SIGINT");
        m_stopping = true;
        m_stop = true;
        m_notifier.stopping();
        for (auto& [name, e] : m_rules) {
            e.timer->cancel();
        }
        for (auto& [name, w] : m_workers) {
            w->request_exit();
        }
        m_erasure_timer.cancel();
        if (m_live_workers == 0 && !m_erasure_running) {
            shut_down();
        }
    }

    void on_worker_exit(const std::string& worker) {
        spdlog::debug("worker {} stopped", worker);
        if (--m_live_workers == 0 && m_stopping && !m_erasure_running) {
            shut_down();
        }
    }

    void shut_down() {
        boost::system::error_code ignored;
        m_signals.cancel(ignored);
        m_watchdog.cancel();
        m_ledger_timer.cancel();
        m_erasure_timer.cancel();
        if (m_server) {
            m_server->stop();
        }
        m_io.stop();
    }

    // The erasure request gauges: the ledger (ledger.hpp) is read off the io thread, which a long
    // audit log must not hold up, at start and every k_ledger_every; the deadlines of the open
    // requests are posted back. Overdue is decided at each scrape.
    static constexpr std::chrono::minutes k_ledger_every{5};

    void refresh_ledger() {
        if (m_ledger_busy) {
            return;
        }
        if (m_ledger_thread.joinable()) {
            m_ledger_thread.join(); // finished: its result was posted
        }
        m_ledger_busy = true;
        m_ledger_thread = std::thread([this, config = m_config] {
            std::optional<std::vector<TimePoint>> deadlines;
            try {
                std::vector<TimePoint> open;
                // Only the lines added since the last refresh are read (one thread at a time).
                for (const auto& r :
                     m_ledger_cache.refresh(*open_audit_lines(*config, std::nullopt))) {
                    if (r.open()) {
                        open.push_back(r.deadline);
                    }
                }
                deadlines = std::move(open);
            } catch (const std::exception& e) {
                spdlog::warn("erasure requests: cannot read the audit log ({})", e.what());
            }
            asio::post(m_io, [this, deadlines = std::move(deadlines)]() mutable {
                m_ledger_busy = false;
                if (deadlines) {
                    m_metrics.erasures = ErasureMetrics{std::move(*deadlines), 0};
                    publish_metrics();
                }
            });
        });
    }

    void arm_ledger() {
        refresh_ledger();
        m_ledger_timer.expires_after(k_ledger_every);
        m_ledger_timer.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) {
                arm_ledger();
            }
        });
    }

    // Erasure requests (daemon_erasure.hpp): a pass at start and every daemon.erasure_resume (or
    // erasure_reapply when resuming is off), on a thread of its own, while no rule of the
    // datastores it touches (m_erasure_stores) runs: their rules that fall due meanwhile wait for
    // its end (m_held_jobs), and it waits for their runs in flight and for their workers' crash
    // recovery at start. Rules of other datastores go on.
    static constexpr const char* k_erasure_activity = " erasure"; // no datastore name has a blank

    std::chrono::seconds erasure_interval() const {
        const auto& d = m_config->daemon;
        return d.erasure_resume.count() > 0 ? d.erasure_resume : d.erasure_reapply;
    }

    void want_erasure() {
        if (m_stopping || erasure_interval().count() == 0 || !declares_subjects(*m_config)) {
            return;
        }
        m_erasure_wanted = true;
        m_erasure_stores.clear();
        for (const auto& rule : m_config->rules) {
            if (!rule.subjects.empty()) {
                m_erasure_stores.insert(rule.datastore);
            }
        }
        maybe_start_erasure();
    }

    void maybe_start_erasure() {
        if (!m_erasure_wanted || m_erasure_running || m_stopping) {
            return;
        }
        for (const auto& [name, e] : m_rules) {
            if (e.queued && m_erasure_stores.count(e.datastore) != 0) {
                return; // started by on_result once the last run in flight ends
            }
        }
        for (const auto& store : m_erasure_stores) {
            if (m_recovered.count(store) == 0) {
                return; // started once that worker's recovery is done (on_recovered)
            }
        }
        if (m_erasure_thread.joinable()) {
            m_erasure_thread.join(); // finished: its result was posted
        }
        m_erasure_wanted = false;
        m_erasure_running = true;
        m_activity[k_erasure_activity] = "erasure requests";
        update_status();
        m_erasure_thread = std::thread([this, config = m_config] { erasure_pass(*config); });
    }

    // On the erasure thread.
    void erasure_pass(const Config& config) {
        try {
            std::ostringstream out;
            std::ostringstream err;
            const auto r = daemon_erasure_pass(
                config, m_audit, now_utc(), [this] { return m_stop.load(); }, out, err);
            log_erasure_pass(r, out.str(), err.str());
        } catch (const std::exception& e) {
            spdlog::error("erasure requests: {}", e.what());
        }
        asio::post(m_io, [this] { on_erasure_done(); });
    }

    static void log_erasure_pass(const DaemonErasurePass& r, const std::string& out,
                                 const std::string& err) {
        for (const auto& note : r.notes) {
            spdlog::warn("erasure requests: {}", note);
        }
        std::istringstream lines(err);
        for (std::string line; std::getline(lines, line);) {
            spdlog::warn("{}", line);
        }
        if (!r.reapply_reason.empty()) {
            spdlog::info("erasure requests re-applied ({}): {} request(s), {} record(s) erased "
                         "again",
                         r.reapply_reason, r.pass.requests, r.pass.erased);
        } else if (r.pass.requests > 0) {
            spdlog::info("erasure requests resumed: {} open request(s), {} record(s) erased",
                         r.pass.requests, r.pass.erased);
        }
        if (r.pass.erased > 0 || r.pass.code != 0) {
            std::istringstream table(out);
            for (std::string line; std::getline(table, line);) {
                spdlog::info("{}", line);
            }
        }
    }

    void on_erasure_done() {
        m_erasure_running = false;
        m_activity.erase(k_erasure_activity);
        if (m_stopping) {
            if (m_live_workers == 0) {
                shut_down();
            }
            return;
        }
        const auto held = std::move(m_held_jobs);
        m_held_jobs.clear();
        for (const auto& name : held) {
            on_due(name);
        }
        if (!m_metrics_address.empty()) {
            refresh_ledger(); // the open / overdue gauges
        }
        update_status();
        if (const auto every = erasure_interval(); every.count() > 0) {
            m_erasure_timer.expires_after(every);
            m_erasure_timer.async_wait([this](const boost::system::error_code& ec) {
                if (!ec) {
                    want_erasure();
                }
            });
        }
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

    // What /metrics and /healthz read, copied from the io thread's state.
    struct Published {
        MetricsSnapshot metrics;
        std::map<std::string, std::pair<RuleSchedule, std::chrono::seconds>> rules;
        std::chrono::seconds unhealthy_after{0};
    };

    void publish_metrics() {
        if (m_metrics_address.empty()) {
            return;
        }
        auto p = std::make_shared<Published>();
        p->metrics = m_metrics;
        for (const auto& [name, e] : m_rules) {
            p->rules.emplace(name, std::make_pair(e.state, e.schedule.period()));
        }
        p->unhealthy_after = m_config->daemon.store_down_unhealthy;
        const std::lock_guard lock(m_published_mutex);
        m_published = std::move(p);
    }

    // On the metrics server's thread.
    HttpResponse handle_http(std::string_view target) {
        const auto path = target.substr(0, target.find('?'));
        const TimePoint now = now_utc();
        std::shared_ptr<const Published> p;
        {
            const std::lock_guard lock(m_published_mutex);
            p = m_published;
        }
        if (path == "/metrics") {
            MetricsSnapshot m = p->metrics;
            for (const auto& [name, rule] : p->rules) {
                m.rules[name].overdue = is_overdue(rule.first, rule.second, now);
            }
            erasure_gauges(m, now);
            return {200, "text/plain; version=0.0.4; charset=utf-8", render_prometheus(m)};
        }
        if (path == "/healthz") {
            if (is_healthy(p->metrics, now, p->unhealthy_after)) {
                return {200, "text/plain; charset=utf-8", "ok\n"};
            }
            return {503, "text/plain; charset=utf-8", "a datastore has been down too long\n"};
        }
        return {404, "text/plain; charset=utf-8", "not found\n"};
    }

    std::string m_config_path;
    std::shared_ptr<const Config> m_config;
    SchedulerSettings m_settings;
    AuditLog& m_audit;
    const std::string m_host;
    asio::io_context m_io;
    asio::signal_set m_signals;
    asio::steady_timer m_watchdog;
    asio::steady_timer m_ledger_timer;
    std::thread m_ledger_thread; // reads the ledger; joined before the next and at destruction
    bool m_ledger_busy = false;
    LedgerCache m_ledger_cache; // used by the ledger thread only, one refresh at a time
    asio::steady_timer m_erasure_timer;
    std::thread m_erasure_thread;   // an erasure pass; joined before the next and at destruction
    bool m_erasure_wanted = false;  // a pass is due: waits for the runs in flight
    bool m_erasure_running = false; // rules falling due wait in m_held_jobs
    std::set<std::string> m_held_jobs;
    std::set<std::string> m_erasure_stores; // the datastores of the rules declaring subject:
    std::set<std::string> m_recovered;      // workers whose recovery at start is done
    std::chrono::microseconds m_watchdog_interval{0};
    std::mt19937_64 m_rng;
    Notifier m_notifier;
    std::atomic<bool> m_stop{false};
    bool m_stopping = false;
    TimePoint m_started{};
    std::map<std::string, TimePoint> m_last_success; // from the audit log at start
    std::map<std::string, Entry> m_rules;
    std::map<std::string, std::string> m_activity; // worker (datastore) -> what it is doing
    MetricsSnapshot m_metrics;
    std::string m_metrics_address;
    std::mutex m_published_mutex;
    std::shared_ptr<const Published> m_published;
    std::unique_ptr<MetricsServer> m_server; // joined in shut_down() or before the workers
    int m_live_workers = 0;
    // Last: their threads use the members above (the destructor joins them first anyway).
    std::map<std::string, std::unique_ptr<Worker>> m_workers;
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
        audit = open_audit_log(*config, new_run_id());
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

    Daemon daemon(config_path, config, *audit);
    try {
        daemon.start_metrics(reserve_descriptors());
    } catch (const std::exception& e) {
        err << "retentiond: cannot serve metrics on " << config->daemon.metrics << ": " << e.what()
            << '\n';
        audit->run_end("failed", nlohmann::json::array());
        return k_exit_config;
    }
    const int code = daemon.run();
    audit->run_end("ok", daemon.summary());
    spdlog::info("stopped");
    log_audit_head(*audit);
    return code;
}

} // namespace retentiond
