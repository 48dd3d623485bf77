// The erasure ledger's readers (ledger.hpp).
#include "retentiond/ledger.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/crypto.hpp"
#include "retentiond/timeutil.hpp"

#include <map>

namespace retentiond {

using nlohmann::json;

std::int64_t ErasureRequest::deferred() const {
    std::int64_t n = 0;
    for (const auto& r : rules) {
        n += r.deferred;
    }
    return n;
}

json erasure_event_fields(const ErasureRequest& r) {
    json rules = json::object();
    for (const auto& o : r.rules) {
        json one{{"status", o.status}, {"erased", o.erased}, {"deferred", o.deferred}};
        if (!o.reason.empty()) {
            one["reason"] = o.reason;
        }
        rules[o.rule] = std::move(one);
    }
    return json{{"request", r.id},
                {"subject", r.subject},
                {"kind", r.kind},
                {"received", format_utc_seconds(r.received)},
                {"deadline", format_utc_seconds(r.deadline)},
                {"status", r.status},
                {"erased", r.erased},
                {"reapplied", r.reapplied},
                {"rules", std::move(rules)}};
}

namespace {

TimePoint time_field(const json& j, const char* name) {
    const auto t = parse_timestamp(j.value(name, ""), "", zone_or_utc(std::string_view("UTC")));
    return t.value_or(TimePoint{});
}

std::vector<ErasureRuleOutcome> rule_outcomes(const json& rules) {
    std::vector<ErasureRuleOutcome> out;
    if (!rules.is_object()) {
        return out;
    }
    for (const auto& [name, o] : rules.items()) {
        if (!o.is_object()) {
            continue;
        }
        out.push_back({name, o.value("status", ""), o.value("erased", std::int64_t{0}),
                       o.value("deferred", std::int64_t{0}), o.value("reason", "")});
    }
    return out;
}

// One event onto the request it updates (or a new one).
void apply_event(const json& j, ErasureRequest& r, bool first) {
    const std::string ts = j.value("ts", "");
    if (first) {
        r.id = j.value("request", "");
        r.subject = j.value("subject", "");
        r.kind = j.value("kind", "");
        r.received = time_field(j, "received");
        r.deadline = time_field(j, "deadline");
        r.first_ts = ts;
    }
    r.last_ts = ts;
    r.status = j.value("status", "open");
    r.erased += j.value("erased", std::int64_t{0});
    r.reapplied += j.value("reapplied", std::int64_t{0});
    r.rules = rule_outcomes(j.value("rules", json::object()));
    if (r.status == "done" && r.done_ts.empty()) {
        r.done_ts = ts;
    }
}

} // namespace

void LedgerCache::add(std::string_view line) {
    // Cheap test first: most lines are intents and outcomes (some with many digests).
    if (line.find(k_erasure_event) == std::string_view::npos) {
        return;
    }
    const json j = parse_audit_line(line);
    if (!j.is_object() || j.value("type", "") != k_erasure_event || !j.contains("request")) {
        return;
    }
    const std::string id = j.value("request", "");
    const auto it = m_by_id.find(id);
    if (it == m_by_id.end()) {
        m_by_id.emplace(id, m_requests.size());
        m_requests.emplace_back();
        apply_event(j, m_requests.back(), true);
    } else {
        apply_event(j, m_requests[it->second], false);
    }
}

void LedgerCache::reset() {
    m_requests.clear();
    m_by_id.clear();
    m_sha256.clear();
    m_name.clear();
}

// Every line, oldest first; the last complete one becomes the anchor.
void LedgerCache::read_whole(const AuditLines& lines) {
    reset();
    m_name = lines.name();
    std::string last;
    lines.forward([&](std::string_view line, bool terminated) {
        if (terminated) { // a torn last line is not part of the chain
            add(line);
            if (m_follow) {
                last.assign(line);
            }
        }
        return true;
    });
    m_lines_read = 0;
    if (!last.empty()) {
        anchor(last);
    }
}

void LedgerCache::anchor(const std::string& line) {
    m_sha256 = sha256_hex(line);
}

// The lines after the anchor, newest first, read from the end until the line whose `prev` is the
// anchor's hash (the chain goes on across a rotation); false when the anchor is not found (the
// chain was replaced or rewritten): the caller then reads everything again.
bool LedgerCache::read_added(const AuditLines& lines, std::vector<std::string>& added) const {
    bool found = false;
    bool newest = true;
    lines.backward([&](const std::string& line) {
        if (newest && sha256_hex(line) == m_sha256) {
            found = true; // nothing added
            return false;
        }
        newest = false;
        added.push_back(line);
        const json j = parse_audit_line(line);
        found = j.is_object() && j.contains("prev") && j["prev"].is_string() &&
                j["prev"].get<std::string>() == m_sha256;
        return !found;
    });
    return found;
}

const std::vector<ErasureRequest>& LedgerCache::refresh(const AuditLines& lines) {
    if (!lines.written()) {
        reset(); // no run yet: no request
        return m_requests;
    }
    std::vector<std::string> added;
    if (m_sha256.empty() || lines.name() != m_name || !read_added(lines, added)) {
        read_whole(lines);
        ++m_whole_reads;
        return m_requests;
    }
    try {
        for (auto it = added.rbegin(); it != added.rend(); ++it) {
            add(*it);
        }
    } catch (...) {
        reset(); // half applied: the next refresh reads everything again
        throw;
    }
    if (!added.empty()) {
        anchor(added.front());
    }
    m_lines_read = added.size();
    return m_requests;
}

std::vector<ErasureRequest> read_ledger(const AuditLines& lines) {
    LedgerCache once(false);
    return once.refresh(lines);
}

ErasureMemory read_erasure_memory(const AuditLines& lines) {
    ErasureMemory out;
    if (!lines.written()) {
        return out;
    }
    lines.forward([&](std::string_view line, bool terminated) {
        // Cheap test first: most lines are intents and outcomes.
        if (!terminated || (line.find(k_store_identity_event) == std::string_view::npos &&
                            line.find(k_reapply_event) == std::string_view::npos)) {
            return true;
        }
        const json j = json::parse(line.begin(), line.end(), nullptr, false);
        const std::string type = j.is_object() ? j.value("type", "") : "";
        if (type == k_store_identity_event) {
            out.identities[j.value("datastore", "")] = j.value("identity", "");
        } else if (type == k_reapply_event && j.value("ok", false)) {
            out.last_reapply = time_field(j, "ts");
        }
        return true;
    });
    return out;
}

std::optional<ErasureRequest> open_request_for(const std::vector<ErasureRequest>& ledger,
                                               const std::string& subject) {
    for (auto it = ledger.rbegin(); it != ledger.rend(); ++it) {
        if (it->subject == subject && it->open()) {
            return *it;
        }
    }
    return std::nullopt;
}

} // namespace retentiond
