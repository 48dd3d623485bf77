#pragma once

// The daemon's erasure passes (`retentiond run`, docs/operations.md "Erasure requests in the
// daemon"): every daemon.erasure_resume, the open requests are resumed (a record deferred by a
// hold is erased once the hold lifts); every request is re-applied every daemon.erasure_reapply
// and whenever a datastore's identity (Kind::store_identity) differs from the one last recorded in
// the audit chain (a restore from a backup). The identities seen are recorded in the chain, so the
// comparison survives restarts.

#include "retentiond/audit.hpp"
#include "retentiond/config.hpp"
#include "retentiond/erasure.hpp"

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace retentiond {

// Whether any rule declares `subject:` (no pass otherwise).
bool declares_subjects(const Config& config);

struct DaemonErasurePass {
    std::string reapply_reason; // empty: the open requests were resumed (if any)
    LedgerPass pass;
    std::vector<std::string> notes; // a store whose identity could not be read, and why
};

// One pass at `now`: identities read, then a re-application when due or an identity changed,
// else a resume of the open requests; the new identities recorded unless a store was down. The
// per-request tables go to `out`, skipped requests to `err`.
DaemonErasurePass daemon_erasure_pass(const Config& config, AuditLog& log, TimePoint now,
                                      const std::function<bool()>& stop, std::ostream& out,
                                      std::ostream& err);

} // namespace retentiond
