#pragma once

// Erasure requests, run (issue 20): one request through every rule that declares its identifier's
// kind, and the ledger's open requests resumed or every request re-applied. Shared by
// `retentiond erase` (cli/) and `retentiond run` (service/: the daemon resumes open requests and
// re-applies erased subjects on its own, docs/operations.md).
//
// 1. the rules declaring the kind (none: usage error), one engine per datastore;
// 2. every rule counts the subject's records (Engine::erase_subject, dry) and the limits are
//    checked over all of them: one over-broad match refuses the whole request, nothing touched;
// 3. every rule applies its action to the records not held (deferred otherwise), journaled with
//    the request's digest in each intent;
// 4. one `erasure_request` event (ledger.hpp) records the request's state: done, deferred (held
//    records remain) or open (a rule failed or its store was down: a rerun resumes it).

#include "retentiond/audit.hpp"
#include "retentiond/config.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/ledger.hpp"
#include "retentiond/subject.hpp"

#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace retentiond {

enum class ErasureMode { request, resume, reapply };

// One rule's part of a request.
struct ErasureTarget {
    const Rule* rule = nullptr;
    SubjectQuery query;
    RunResult counted;
    std::optional<RunResult> applied;
    std::string unavailable; // the store's error, when it could not be reached
};

// The rules that declare `kind`, each with `base` as its query; a usage error naming the declared
// kinds when none does.
std::vector<ErasureTarget> erasure_targets(const Config& config, const std::string& kind,
                                           const SubjectQuery& base);

// What requests are run with: the context, the engines (one per datastore, made on first use) and
// the audit log (null for a dry run).
class ErasureSession {
public:
    ErasureSession(const Config& config, AuditLog* log, std::function<bool()> stop);
    Engine& engine(const std::string& datastore);
    bool dry() const { return m_log == nullptr; }
    AuditLog* log() const { return m_log; }
    RunContext& ctx() { return m_ctx; }
    const Config& config() const { return m_config; }

private:
    const Config& m_config;
    AuditLog* m_log;
    RunContext m_ctx;
    std::map<std::string, std::unique_ptr<Engine>> m_engines;
};

// Counts, checks the limits, applies and records one request (a dry run only counts); prints the
// per-rule table to `out`, a refusal to `err`. Returns the exit code (errors.hpp). A resume or a
// re-application that changed nothing (no record erased, same status) records no event: a
// request deferred for years by a hold does not grow the ledger at each daemon pass.
int process_erasure(ErasureSession& s, ErasureRequest& req, std::vector<ErasureTarget>& targets,
                    ErasureMode mode, std::ostream& out, std::ostream& err);

// What a pass over the ledger did.
struct LedgerPass {
    int code = 0;             // the worst exit code of its requests
    std::size_t requests = 0; // requests run
    std::int64_t erased = 0;  // records erased (resume) or erased again (reapply)
};

// --resume (every open request) or --reapply (every request) of the ledger, each found again
// from its subject's digest, recorded in `log` (the caller writes run_start / run_end). A
// re-application ends with an `erasure_reapply` event (ledger.hpp) giving `reason` ("requested",
// "schedule", "identity changed: app") and whether every request went through.
LedgerPass run_ledger_pass(const Config& config, AuditLog& log, ErasureMode mode,
                           const std::string& reason, const std::function<bool()>& stop,
                           std::ostream& out, std::ostream& err);

} // namespace retentiond
