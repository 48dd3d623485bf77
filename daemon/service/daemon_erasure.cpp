// The daemon's erasure passes (daemon_erasure.hpp).
#include "retentiond/daemon_erasure.hpp"

#include "retentiond/errors.hpp"
#include "retentiond/kind.hpp"
#include "retentiond/ledger.hpp"
#include "retentiond/runner.hpp"

#include <algorithm>
#include <map>

namespace retentiond {
namespace {

// The rules declaring `subject:`, by datastore.
std::map<std::string, std::vector<const Rule*>> subject_rules(const Config& config) {
    std::map<std::string, std::vector<const Rule*>> out;
    for (const auto& rule : config.rules) {
        if (!rule.subjects.empty()) {
            out[rule.datastore].push_back(&rule);
        }
    }
    return out;
}

struct Identities {
    std::map<std::string, std::string> seen; // datastore -> identity now
    std::string changed;                     // "app, cache": differs from the recorded one
    std::string first;                       // never recorded before
    bool complete = true;                    // every store answered
};

Identities read_identities(const Config& config, const ErasureMemory& memory,
                           std::vector<std::string>& notes) {
    Identities out;
    for (const auto& [name, rules] : subject_rules(config)) {
        const Datastore& store = config.datastores.at(name);
        std::string id;
        try {
            id = store.kind->store_identity(store, rules);
        } catch (const UnavailableError& e) {
            notes.push_back(std::string("identity of ") + name + " not read: " + e.what());
            out.complete = false;
            continue;
        }
        if (id.empty()) {
            continue; // the kind cannot tell a restore: the periodic re-application covers it
        }
        out.seen[name] = id;
        const auto it = memory.identities.find(name);
        std::string& list = it == memory.identities.end() ? out.first : out.changed;
        if (it == memory.identities.end() || it->second != id) {
            list += (list.empty() ? "" : ", ") + name;
        }
    }
    return out;
}

// Why every request must be re-applied now, or "" (nothing erased yet: nothing to re-apply).
std::string reapply_reason(const Config& config, const std::vector<ErasureRequest>& ledger,
                           const ErasureMemory& memory, const Identities& ids, TimePoint now) {
    if (ledger.empty()) {
        return {};
    }
    if (!ids.changed.empty()) {
        return "identity changed: " + ids.changed;
    }
    if (!ids.first.empty()) {
        return "identity not recorded yet: " + ids.first;
    }
    const auto every = config.daemon.erasure_reapply;
    if (every.count() > 0 && (!memory.last_reapply || now - *memory.last_reapply >= every)) {
        return "schedule";
    }
    return {};
}

} // namespace

bool declares_subjects(const Config& config) {
    return std::any_of(config.rules.begin(), config.rules.end(),
                       [](const Rule& r) { return !r.subjects.empty(); });
}

DaemonErasurePass daemon_erasure_pass(const Config& config, AuditLog& log, TimePoint now,
                                      const std::function<bool()>& stop, std::ostream& out,
                                      std::ostream& err) {
    DaemonErasurePass r;
    if (!declares_subjects(config)) {
        return r;
    }
    const auto lines = open_audit_lines(config, std::nullopt);
    const auto memory = read_erasure_memory(*lines);
    const auto ledger = read_ledger(*lines);
    const auto ids = read_identities(config, memory, r.notes);
    r.reapply_reason = reapply_reason(config, ledger, memory, ids, now);
    if (!r.reapply_reason.empty()) {
        r.pass =
            run_ledger_pass(config, log, ErasureMode::reapply, r.reapply_reason, stop, out, err);
    } else if (config.daemon.erasure_resume.count() > 0 &&
               std::any_of(ledger.begin(), ledger.end(), [](const auto& q) { return q.open(); })) {
        r.pass = run_ledger_pass(config, log, ErasureMode::resume, "", stop, out, err);
    }
    // A store down or a stop: the identities stay as recorded, so the next pass tries again.
    if (r.pass.code == k_exit_unavailable || (stop && stop())) {
        return r;
    }
    for (const auto& [name, id] : ids.seen) {
        const auto it = memory.identities.find(name);
        if (it == memory.identities.end() || it->second != id) {
            log.event(std::string(k_store_identity_event), {{"datastore", name}, {"identity", id}});
        }
    }
    return r;
}

} // namespace retentiond
