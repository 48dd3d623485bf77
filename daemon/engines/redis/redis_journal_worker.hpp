#pragma once

// The journal's calls of a purge, run in order on one worker thread. Private to the redis engine.

#include "retentiond/audit.hpp"
#include "retentiond/engine.hpp"

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace retentiond::redis_detail {

// Runs the journal's calls on one thread, in the order they are made, so the scan keeps reading
// pages (and the server keeps working) while an intent is written and fsynced. A batch is sent
// only once its intent() future is ready; a failed journal write fails every later call, so no
// batch is sent after it. The destructor waits for the calls queued so far.
class JournalWorker {
public:
    explicit JournalWorker(BatchJournal* journal) : m_journal(journal) {
        if (m_journal != nullptr) {
            m_thread = std::thread([this] { loop(); });
        }
    }
    ~JournalWorker() {
        if (m_thread.joinable()) {
            {
                const std::lock_guard lock(m_mutex);
                m_closing = true;
            }
            m_wake.notify_one();
            m_thread.join();
        }
    }
    JournalWorker(const JournalWorker&) = delete;
    JournalWorker& operator=(const JournalWorker&) = delete;

    std::future<std::string> intent(BatchIntent batch) {
        auto done = std::make_shared<std::promise<std::string>>();
        auto id = done->get_future();
        if (m_journal == nullptr) {
            done->set_value("");
            return id;
        }
        post([this, done, batch = std::move(batch)] { done->set_value(m_journal->intent(batch)); },
             [done](std::exception_ptr e) { done->set_exception(e); });
        return id;
    }
    void outcome_except(std::string id, std::int64_t count, std::vector<std::string> kept) {
        if (m_journal != nullptr) {
            post([this, id = std::move(id), count, kept = std::move(kept)] {
                m_journal->outcome_except(id, count, kept);
            });
        }
    }
    void event(std::string type, nlohmann::json fields) {
        if (m_journal != nullptr) {
            post([this, type = std::move(type), fields = std::move(fields)] {
                m_journal->event(type, fields);
            });
        }
    }
    // Waits until every call made so far has run; rethrows the first failure.
    void drain() {
        std::unique_lock lock(m_mutex);
        m_idle.wait(lock, [this] { return m_tasks.empty() && !m_busy; });
        if (m_error) {
            std::rethrow_exception(m_error);
        }
    }

private:
    struct Task {
        std::function<void()> run;
        std::function<void(std::exception_ptr)> fail; // may be empty
    };
    void post(std::function<void()> run, std::function<void(std::exception_ptr)> fail = {}) {
        {
            const std::lock_guard lock(m_mutex);
            m_tasks.push_back(Task{std::move(run), std::move(fail)});
        }
        m_wake.notify_one();
    }
    void loop() {
        std::unique_lock lock(m_mutex);
        for (;;) {
            m_wake.wait(lock, [this] { return m_closing || !m_tasks.empty(); });
            if (m_tasks.empty()) {
                return; // closing, and everything queued has run
            }
            Task task = std::move(m_tasks.front());
            m_tasks.pop_front();
            m_busy = true;
            const auto failed = m_error;
            lock.unlock();
            std::exception_ptr error;
            if (failed) {
                error = failed; // the log is unusable: later calls fail without writing
            } else {
                try {
                    task.run();
                } catch (...) {
                    error = std::current_exception();
                }
            }
            if (error && task.fail) {
                task.fail(error);
            }
            lock.lock();
            if (error && !m_error) {
                m_error = error;
            }
            m_busy = false;
            if (m_tasks.empty()) {
                m_idle.notify_all();
            }
        }
    }

    BatchJournal* m_journal;
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::condition_variable m_idle;
    std::deque<Task> m_tasks;
    bool m_busy = false;
    bool m_closing = false;
    std::exception_ptr m_error;
    std::thread m_thread; // last: started once the members it uses exist
};

} // namespace retentiond::redis_detail
