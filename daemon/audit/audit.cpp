#include "retentiond/audit.hpp"

#include "audit_io.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/fd.hpp"
#include "retentiond/timeutil.hpp"
#include "retentiond/version.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fcntl.h>
#include <functional>
#include <map>
#include <stdexcept>

namespace retentiond {

using namespace audit_io;

namespace {

using json = nlohmann::json;

// With sorted keys, "type" and "v" are the last two keys of an outcome line (its other keys all
// sort before "type"), so an outcome is recognised without looking at the rest of the line.
constexpr std::string_view k_outcome_suffix = R"("type":"outcome","v":1})";
constexpr std::string_view k_digests_key = R"("digests":[)";

// Invalid UTF-8 (a file name, a Redis key) must not make a line unwritable; it is replaced.
std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The top-level fields verify needs, read with the SAX interface so that an intent line's
// thousands of digests are checked as JSON without building a DOM.
class LineFields : public json::json_sax_t {
public:
    std::optional<std::int64_t> v;
    std::optional<std::uint64_t> seq;
    std::optional<std::int64_t> count;
    std::optional<std::string> ts;
    std::optional<std::string> type;
    std::optional<std::string> prev;
    std::optional<bool> committed;
    bool object = false;
    std::size_t error_pos = 0;

    bool null() override { return scalar(); }
    bool boolean(bool val) override {
        if (at_top() && m_key == "committed") {
            committed = val;
        }
        return scalar();
    }
    bool number_integer(number_integer_t val) override {
        if (at_top()) {
            set_number(val);
        }
        return scalar();
    }
    bool number_unsigned(number_unsigned_t val) override {
        if (at_top()) {
            if (m_key == "seq") {
                seq = val;
            } else if (val <= static_cast<number_unsigned_t>(INT64_MAX)) {
                set_number(static_cast<std::int64_t>(val));
            }
        }
        return scalar();
    }
    bool number_float(number_float_t /*val*/, const string_t& /*text*/) override {
        return scalar();
    }
    bool string(string_t& val) override {
        if (at_top()) {
            if (m_key == "ts") {
                ts = std::move(val);
            } else if (m_key == "type") {
                type = std::move(val);
            } else if (m_key == "prev") {
                prev = std::move(val);
            }
        }
        return scalar();
    }
    bool binary(binary_t& /*val*/) override { return scalar(); }
    bool start_object(std::size_t /*elements*/) override {
        if (m_depth == 0) {
            object = true;
        }
        ++m_depth;
        return true;
    }
    bool key(string_t& val) override {
        if (m_depth == 1) {
            m_key = std::move(val);
        }
        return true;
    }
    bool end_object() override {
        --m_depth;
        return true;
    }
    bool start_array(std::size_t /*elements*/) override {
        ++m_depth;
        return true;
    }
    bool end_array() override {
        --m_depth;
        return true;
    }
    bool parse_error(std::size_t position, const std::string& /*last_token*/,
                     const nlohmann::detail::exception& /*ex*/) override {
        error_pos = position; // the token itself may be record data: never reported
        return false;
    }

private:
    bool at_top() const { return m_depth == 1; }
    bool scalar() { return true; }
    void set_number(std::int64_t val) {
        if (m_key == "v") {
            v = val;
        } else if (m_key == "count") {
            count = val;
        } else if (m_key == "seq" && val >= 0) {
            seq = static_cast<std::uint64_t>(val);
        }
    }
    int m_depth = 0;
    std::string m_key;
};

bool is_lower_hex(std::string_view s) {
    for (const char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

// The [start, end) of the elements of a "digests" array in its fixed layout ("<64 hex>" joined by
// commas), or nullopt when the line has no such array or lays it out any other way.
std::optional<std::pair<std::size_t, std::size_t>> digest_elements(std::string_view line) {
    const auto at = line.find(k_digests_key);
    if (at == std::string_view::npos) {
        return std::nullopt;
    }
    const std::size_t start = at + k_digests_key.size();
    std::size_t p = start;
    for (;;) {
        if (p + 67 > line.size() || line[p] != '"' || line[p + 65] != '"' ||
            !is_lower_hex(line.substr(p + 1, 64))) {
            return std::nullopt;
        }
        p += 66;
        if (line[p] == ']') {
            return std::pair{start, p};
        }
        if (line[p] != ',') {
            return std::nullopt;
        }
        ++p;
    }
}

// Parses a line's top-level fields. An intent's digests, once checked to be well-formed hex
// strings, are left out of the JSON parse: replacing one well-formed array by [] changes neither
// the line's validity nor its other fields, and the parse is then a few hundred bytes instead of
// hundreds of kilobytes.
bool parse_fields(std::string_view line, LineFields& fields) {
    std::string elided;
    std::size_t removed_at = std::string_view::npos;
    std::size_t removed = 0;
    if (const auto range = digest_elements(line)) {
        elided.reserve(line.size() - (range->second - range->first));
        elided.append(line.substr(0, range->first));
        elided.append(line.substr(range->second));
        removed_at = range->first;
        removed = range->second - range->first;
        line = elided;
    }
    const bool ok =
        json::sax_parse(line.data(), line.data() + line.size(), &fields) && fields.object;
    if (!ok && fields.error_pos > removed_at) {
        fields.error_pos += removed; // a position in the line as written
    }
    return ok;
}

} // namespace

json parse_audit_line(std::string_view line) {
    const auto range = digest_elements(line);
    if (!range || range->first == range->second) {
        return json::parse(line.begin(), line.end(), nullptr, false);
    }
    std::string elided;
    elided.reserve(line.size() - (range->second - range->first));
    elided.append(line.substr(0, range->first));
    elided.append(line.substr(range->second));
    return json::parse(elided, nullptr, false);
}

namespace {

std::string to_hex(std::string_view bytes) {
    static constexpr char k_digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        const auto u = static_cast<unsigned char>(c);
        out += k_digits[u >> 4];
        out += k_digits[u & 0xf];
    }
    return out;
}

std::string from_hex(std::string_view hex) {
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        throw std::runtime_error("bad hex digit in pending batch file");
    };
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out += static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1]));
    }
    return out;
}

json parse_json(std::string_view text) {
    return json::parse(text.data(), text.data() + text.size());
}

// Whether an intent line holds `digest`. The digests array is written as fixed-width strings
// ("<64 hex>",) right after its key, so it is stepped through 67 bytes at a time; a line laid out
// any other way falls back to a plain search. The caller confirms a hit by parsing.
bool line_has_digest(std::string_view line, std::string_view digest, std::string_view quoted) {
    const auto at = line.find(k_digests_key);
    if (at == std::string_view::npos) {
        return false;
    }
    std::size_t p = at + k_digests_key.size();
    while (p < line.size()) {
        if (line[p] == ']') {
            return false;
        }
        if (p + 66 > line.size() || line[p] != '"' || line[p + 65] != '"') {
            break;
        }
        if (line.compare(p + 1, 64, digest) == 0) {
            return true;
        }
        p += 66;
        if (p < line.size() && line[p] == ',') {
            ++p;
        }
    }
    return line.find(quoted, at) != std::string_view::npos;
}

} // namespace

std::string record_digest(const Secret& audit_key, std::string_view rule, std::string_view key) {
    std::string rule_line;
    rule_line.reserve(rule.size() + 1);
    rule_line.append(rule);
    rule_line += '\n';
    std::string hex;
    append_hmac_sha256_hex(audit_key.reveal(), rule_line, key, hex);
    return hex;
}

std::string new_run_id() {
    std::string stamp = format_utc_seconds(now_utc());
    std::erase(stamp, '-');
    std::erase(stamp, ':');
    return stamp + "-" + random_hex(4);
}

// --- AuditLog ------------------------------------------------------------------------------

namespace {

std::unique_ptr<AuditStore> file_store_checked(const std::string& path, const Secret& key,
                                               std::string& dropped) {
    if (key.empty()) {
        throw std::runtime_error("audit log " + path +
                                 ": no audit_key, record digests would be unverifiable");
    }
    return open_file_audit_store(path, dropped);
}

std::string dropped_of(const std::string& path, const Secret& key,
                       std::unique_ptr<AuditStore>& store) {
    std::string dropped;
    store = file_store_checked(path, key, dropped);
    return dropped;
}

} // namespace

AuditLog::AuditLog(std::string path, Secret audit_key, std::string run_id)
    : m_name(std::move(path)), m_key(std::move(audit_key)), m_run_id(std::move(run_id)) {
    const std::string dropped = dropped_of(m_name, m_key, m_store);
    if (!dropped.empty()) {
        append(json{{"type", "torn_tail_repaired"},
                    {"bytes_dropped", dropped.size()},
                    {"dropped_sha256", sha256_hex(dropped)}});
    }
}

AuditLog::AuditLog(std::unique_ptr<AuditStore> store, Secret audit_key, std::string run_id,
                   const std::string& dropped)
    : m_store(std::move(store)), m_name(m_store->name()), m_key(std::move(audit_key)),
      m_run_id(std::move(run_id)) {
    if (m_key.empty()) {
        throw std::runtime_error("audit log " + m_name +
                                 ": no audit_key, record digests would be unverifiable");
    }
    if (!dropped.empty()) {
        append(json{{"type", "torn_tail_repaired"},
                    {"bytes_dropped", dropped.size()},
                    {"dropped_sha256", sha256_hex(dropped)}});
    }
}

AuditLog::~AuditLog() {
    try {
        sync();
    } catch (const std::exception&) {
        // The pending keys stay: the next start settles those batches against the datastore.
    }
}

std::string AuditLog::last_hash() const {
    const std::lock_guard lock(m_mutex);
    return m_store->head().sha256;
}

std::uint64_t AuditLog::last_seq() const {
    const std::lock_guard lock(m_mutex);
    return m_store->head().seq;
}

AuditStore::Render AuditLog::render_on_head(json& line, std::string_view digests) const {
    line["v"] = 1;
    line["run"] = m_run_id;
    // The store renders the line on its head: a PostgreSQL store's head is read under its chain
    // lock, so writers on several hosts chain one after the other.
    return [&line, digests](const AuditHead& head) {
        line["seq"] = head.seq + 1;
        line["prev"] = head.sha256;
        line["ts"] = format_utc(now_utc()); // after the store's lock: ts follows seq
        std::string text = dump(line);
        if (!digests.empty()) {
            // Thousands of fixed-width hex strings need no escaping: rendered directly, in
            // exactly the layout dump() would give and prove() steps through.
            const auto at = text.find(std::string(k_digests_key) + "]");
            if (at == std::string::npos) {
                throw std::logic_error("audit line without an empty digests array");
            }
            std::string with;
            with.reserve(text.size() + digests.size() + 1); // + the store's newline
            with.append(text, 0, at + k_digests_key.size()).append(digests);
            with.append(text, at + k_digests_key.size());
            return with;
        }
        return text;
    };
}

void AuditLog::append(json line, std::string_view digests, bool sync) {
    bool settled = false;
    m_store->append(render_on_head(line, digests), sync, settled);
    if (settled) {
        settle_lazy_outcomes();
    }
}

void AuditLog::append_outcome(json line, const std::string& batch_id) {
    if (m_store->keys_with_lines()) {
        m_store->append_settling(render_on_head(line, {}), batch_id);
        return;
    }
    // Not fsynced by itself: the next intent, event or run_end line (or sync()) makes it durable,
    // and until then the pending keys stay, so a crash in between is settled by recovery like any
    // batch without an outcome. This saves one fsync per batch.
    append(std::move(line), {}, false);
    m_lazy_outcomes.push_back(batch_id);
}

void AuditLog::settle_lazy_outcomes() {
    // Their outcome lines are durable now: the raw keys kept for crash recovery can go.
    for (const auto& id : m_lazy_outcomes) {
        m_store->remove_pending(id);
    }
    m_lazy_outcomes.clear();
}

void AuditLog::sync() {
    const std::lock_guard lock(m_mutex);
    if (m_lazy_outcomes.empty()) {
        return;
    }
    m_store->sync();
    settle_lazy_outcomes();
}

namespace {

json partition_json(const PartitionBatch& p) {
    json j{{"parent", p.parent},
           {"to", p.to},
           {"to_us", p.to_us},
           {"rows", p.rows},
           {"key_index", p.key_index},
           {"key_columns", p.key_columns},
           {"disposition", p.disposition}};
    if (p.rows_estimated) {
        j["rows_estimated"] = true;
    }
    if (p.from_us) {
        j["from"] = p.from;
        j["from_us"] = *p.from_us;
    }
    return j;
}

// The intent's digests, rendered as the body of a JSON array of hex strings.
std::string batch_digests(const Secret& audit_key, const BatchIntent& batch) {
    std::string digests;
    digests.reserve(batch.keys.size() * 67);
    for (const auto& key : batch.keys) {
        if (!digests.empty()) {
            digests += ',';
        }
        digests += '"';
        digests += record_digest(audit_key, batch.rule, key);
        digests += '"';
    }
    return digests;
}

// Appends `keys` as a JSON array body. Strict: a key that is not UTF-8 must survive byte for
// byte, so json::type_error is thrown for it. By hand: a batch holds thousands of keys, mostly
// plain ASCII, and a json array of them costs an allocation per key to build and to free.
void append_keys_strict(std::string& text, const std::vector<std::string>& keys) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const auto& key = keys[i];
        if (i > 0) {
            text += ',';
        }
        if (std::all_of(key.begin(), key.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
            text += '"'; // printable ASCII: only '"' and '\\' are escaped, as dump() does
            for (const char c : key) {
                if (c == '"' || c == '\\') {
                    text += '\\';
                }
                text += c;
            }
            text += '"';
        } else {
            text += json(key).dump();
        }
    }
}

// The pending-keys file's content: the batch and its raw keys (as hex when not UTF-8). A whole
// partition's batch keeps none: recovery asks whether the partition is still attached.
std::string pending_text(const std::string& id, const BatchIntent& batch,
                         const std::string& cutoff) {
    static const std::vector<std::string> k_none;
    const auto& keys = batch.partition ? k_none : batch.keys;
    json pending{{"batch", id},
                 {"rule", batch.rule},
                 {"datastore", batch.datastore},
                 {"target", batch.target},
                 {"action", batch.action},
                 {"cutoff", cutoff},
                 {"cutoff_us", batch.cutoff.time_since_epoch().count()}};
    try {
        std::string text = pending.dump();
        text.pop_back(); // '}'
        text += ",\"keys\":[";
        append_keys_strict(text, keys);
        text += "]}";
        return text;
    } catch (const json::type_error&) {
        // Not UTF-8: what recovery hands back to the engine is kept as hex, exactly.
        json hex = json::array();
        for (const auto& key : keys) {
            hex.push_back(to_hex(key));
        }
        pending["keys_hex"] = std::move(hex);
        pending["target_hex"] = to_hex(batch.target);
        return dump(pending);
    }
}

// The keys of a batch: given, or digested by the engine (each digest "<64 hex>" and a comma).
std::size_t keys_in(const BatchIntent& batch) {
    if (!batch.digests) {
        return batch.keys.size();
    }
    return batch.digests->empty() ? 0 : (batch.digests->size() + 1) / 67;
}

json intent_line(const std::string& id, const BatchIntent& batch, const std::string& cutoff) {
    json line{{"type", "intent"},       {"batch", id},
              {"rule", batch.rule},     {"datastore", batch.datastore},
              {"target", batch.target}, {"action", batch.action},
              {"cutoff", cutoff},       {"count", keys_in(batch)}};
    if (batch.partition) {
        line["count"] = batch.partition->rows;
        line["partition"] = partition_json(*batch.partition);
    }
    if (!batch.request.empty()) {
        line["request"] = batch.request;
    }
    line["digests"] = json::array();
    return line;
}

} // namespace

std::string AuditLog::intent(const BatchIntent& batch) {
    std::string id;
    {
        const std::lock_guard lock(m_mutex);
        id = m_run_id + "-" + std::to_string(++m_batches);
    }
    const std::string computed = batch.digests ? std::string() : batch_digests(m_key, batch);
    const std::string_view digests = batch.digests ? *batch.digests : computed;
    const std::string cutoff = format_utc(batch.cutoff);
    json line = intent_line(id, batch, cutoff);

    // The raw keys go beside the chain, never into it: crash recovery needs them to ask the
    // datastore whether the batch committed. Durable before the intent line (or with it, in one
    // transaction of a PostgreSQL store). If the line then fails, they stay: the next start
    // resolves the batch against the datastore.
    const std::string keys = pending_text(id, batch, cutoff);
    if (m_store->keys_with_lines()) {
        const std::lock_guard lock(m_mutex);
        m_store->append_with_keys(render_on_head(line, digests), id, keys);
        m_in_flight[id] = {batch.rule, batch.datastore};
        return id;
    }
    m_store->put_pending(id, keys);
    const std::lock_guard lock(m_mutex);
    append(std::move(line), digests);
    m_in_flight[id] = {batch.rule, batch.datastore};
    return id;
}

namespace {

// A batch's two lines, ready to be written on its transaction (AuditLog::lines_for).
class AuditTxLines final : public BatchJournal::TxLines {
public:
    using Write = std::function<void(DatastoreTx&)>;
    AuditTxLines(std::string id, Write write) : m_id(std::move(id)), m_write(std::move(write)) {}
    std::string write(DatastoreTx& tx) override {
        m_write(tx);
        return m_id;
    }

private:
    std::string m_id;
    Write m_write;
};

} // namespace

bool AuditLog::in_transaction(const std::string& datastore) const {
    return m_store->shares_database(datastore);
}

// The same intent and outcome lines as intent() and outcome() write, chained one after the other
// on the batch's transaction. No keys in flight: the lines and the change commit together.
std::unique_ptr<BatchJournal::TxLines> AuditLog::lines_for(const BatchIntent& batch,
                                                           std::int64_t count) {
    std::string id;
    {
        const std::lock_guard lock(m_mutex);
        id = m_run_id + "-" + std::to_string(++m_batches);
    }
    json intent = intent_line(id, batch, format_utc(batch.cutoff));
    json outcome{{"type", "outcome"}, {"batch", id}, {"committed", true}, {"count", count}};
    return std::make_unique<AuditTxLines>(
        id, [this, intent = std::move(intent), outcome = std::move(outcome),
             digests = batch.digests ? *batch.digests
                                     : batch_digests(m_key, batch)](DatastoreTx& tx) mutable {
            m_store->append_on(tx, {render_on_head(intent, digests), render_on_head(outcome, {})});
        });
}

BatchJournal::Digester AuditLog::digester(const std::string& rule) const {
    return [this, rule_line = rule + "\n"](std::string_view key, std::string& digests) {
        if (!digests.empty()) {
            digests += ',';
        }
        digests += '"';
        append_hmac_sha256_hex(m_key.reveal(), rule_line, key, digests);
        digests += '"';
    };
}

void AuditLog::outcome(const std::string& batch_id, bool committed, std::int64_t count) {
    const std::lock_guard lock(m_mutex);
    append_outcome(
        json{{"type", "outcome"}, {"batch", batch_id}, {"committed", committed}, {"count", count}},
        batch_id);
    m_in_flight.erase(batch_id);
}

void AuditLog::outcome_except(const std::string& batch_id, std::int64_t count,
                              const std::vector<std::string>& unapplied_keys) {
    if (unapplied_keys.empty()) {
        outcome(batch_id, true, count);
        return;
    }
    const std::lock_guard lock(m_mutex);
    const auto rule = m_in_flight.find(batch_id);
    if (rule == m_in_flight.end()) {
        throw std::invalid_argument("audit: outcome for unknown batch " + batch_id);
    }
    json unapplied = json::array();
    for (const auto& key : unapplied_keys) {
        unapplied.push_back(record_digest(m_key, rule->second.rule, key));
    }
    append_outcome(json{{"type", "outcome"},
                        {"batch", batch_id},
                        {"committed", true},
                        {"count", count},
                        {"kept", std::move(unapplied)}},
                   batch_id);
    m_in_flight.erase(rule);
}

void AuditLog::event(const std::string& type, const json& fields) {
    if (type == "intent" || type == "outcome" || type == "run_start" || type == "run_end") {
        throw std::invalid_argument("audit event type \"" + type + "\" is reserved");
    }
    json line = fields.is_object() ? fields : json::object();
    if (!fields.is_object() && !fields.is_null()) {
        line["detail"] = fields;
    }
    line["type"] = type;
    const std::lock_guard lock(m_mutex);
    append(std::move(line));
}

void AuditLog::run_start(const Config& config, const std::string& mode) {
    json rules = json::array();
    for (const auto& rule : config.rules) {
        rules.push_back(rule.name);
    }
    const std::lock_guard lock(m_mutex);
    append(json{{"type", "run_start"},
                {"config_sha256", config.sha256},
                {"config_files", config.files},
                {"version", k_version},
                {"mode", mode},
                {"rules", std::move(rules)}});
}

void AuditLog::run_end(const std::string& status, const json& summary) {
    const std::lock_guard lock(m_mutex);
    append(json{{"type", "run_end"}, {"status", status}, {"summary", summary}});
}

namespace {

// One batch's pending keys (written whole: a temp file renamed, or a committed row). `where`
// names it in messages; its content holds keys, so it is never quoted.
AuditLog::Pending parse_pending(const std::string& text, const std::string& where) {
    AuditLog::Pending out;
    try {
        const json j = parse_json(text);
        out.batch_id = j.at("batch").get<std::string>();
        BatchIntent& b = out.batch;
        b.rule = j.at("rule").get<std::string>();
        b.datastore = j.at("datastore").get<std::string>();
        b.target = j.contains("target_hex") ? from_hex(j.at("target_hex").get<std::string>())
                                            : j.at("target").get<std::string>();
        b.action = j.at("action").get<std::string>();
        b.cutoff = TimePoint(std::chrono::microseconds(j.at("cutoff_us").get<std::int64_t>()));
        if (j.contains("keys_hex")) {
            for (const auto& h : j.at("keys_hex")) {
                b.keys.push_back(from_hex(h.get<std::string>()));
            }
        } else {
            b.keys = j.at("keys").get<std::vector<std::string>>();
        }
    } catch (const json::exception&) {
        // Written whole, so this is damage, not a crash: a human must look.
        throw std::runtime_error("unreadable pending batch file " + where);
    }
    return out;
}

// A batch's pending keys left by another process, and what the chain says about the batch.
struct PendingCandidate {
    AuditLog::Pending pending;
    std::string needle; // "batch":"<id>" as it appears in a line
    bool intent = false;
    bool outcome = false;
};

// The pending batches in the store not written by this process (batch ids starting
// `own_prefix`).
std::vector<PendingCandidate> pending_candidates(AuditStore& store, const std::string& own_prefix) {
    std::vector<PendingCandidate> candidates;
    for (const auto& entry : store.list_pending(own_prefix)) {
        PendingCandidate c;
        c.pending = parse_pending(entry.text, entry.where);
        if (c.pending.batch_id.rfind(own_prefix, 0) == 0) {
            continue;
        }
        c.needle = R"("batch":)" + json(c.pending.batch_id).dump();
        candidates.push_back(std::move(c));
    }
    return candidates;
}

// Marks which candidates have an intent line and an outcome line in the chain.
void find_intents_and_outcomes(const AuditLines& lines, std::vector<PendingCandidate>& candidates) {
    // Newest lines first: a crash leftover's intent is normally near the end of the chain (of a
    // file log, its rotated files too, in case it was rotated between the crash and this start).
    auto unresolved = candidates.size();
    lines.backward([&](const std::string& line) {
        for (auto& c : candidates) {
            if (c.intent || line.find(c.needle) == std::string::npos) {
                continue;
            }
            LineFields fields;
            if (!parse_fields(line, fields) || !fields.type) {
                continue;
            }
            if (*fields.type == "outcome") {
                c.outcome = true;
            } else if (*fields.type == "intent") {
                c.intent = true;
                --unresolved;
            }
        }
        return unresolved > 0;
    });
}

// The candidates with an intent and no outcome; the others' keys are removed.
std::vector<AuditLog::Pending> unresolved_batches(AuditStore& store,
                                                  std::vector<PendingCandidate>& candidates) {
    std::vector<AuditLog::Pending> out;
    for (auto& c : candidates) {
        if (c.intent && !c.outcome) {
            out.push_back(std::move(c.pending));
        } else {
            // No intent: the crash came before it, nothing was applied. An outcome: the crash came
            // after it, before the keys' removal. Either way there is nothing to resolve.
            store.remove_pending(c.pending.batch_id);
        }
    }
    return out;
}

} // namespace

std::vector<AuditLog::Pending> AuditLog::pending() const {
    // Two threads recovering at once would race on removing the same leftovers.
    const std::lock_guard recovering(m_pending_mutex);
    // This process's own batches (in flight, or abandoned by an engine error) are not crash
    // leftovers. Every one of them carries this log's run id; another process never does.
    const std::string own_prefix = m_run_id + "-";
    auto candidates = pending_candidates(*m_store, own_prefix);
    if (candidates.empty()) {
        return {};
    }
    find_intents_and_outcomes(*m_store->lines(), candidates);
    return unresolved_batches(*m_store, candidates);
}

std::vector<AuditLog::Pending> AuditLog::abandoned(const std::string& datastore) {
    std::vector<std::string> ids;
    {
        const std::lock_guard lock(m_mutex);
        for (const auto& [id, batch] : m_in_flight) {
            if (batch.datastore == datastore) {
                ids.push_back(id);
            }
        }
    }
    std::vector<Pending> out;
    for (const auto& id : ids) {
        if (const auto text = m_store->read_pending(id)) {
            out.push_back(parse_pending(*text, m_name + " (pending batch " + id + ")"));
        }
    }
    return out;
}

void AuditLog::resolve(const Pending& p, bool committed, const std::string& how) {
    const auto count = committed ? static_cast<std::int64_t>(p.batch.keys.size()) : 0;
    const std::lock_guard lock(m_mutex);
    append(json{{"type", "outcome"},
                {"batch", p.batch_id},
                {"committed", committed},
                {"count", count},
                {"recovered", how}});
    m_in_flight.erase(p.batch_id);
    m_store->remove_pending(p.batch_id);
}

// --- verify --------------------------------------------------------------------------------

namespace {

// The first line where the chain breaks, and why.
struct ChainBreak {
    std::uint64_t line;
    std::string reason;
};

// Line `mismatch_at`'s prev did not match line mismatch_at - 1. If the next line's prev does not
// match line mismatch_at either, line mismatch_at itself was altered; otherwise the line before
// it was. `next` is that next line, `prev_hash` the SHA-256 of line mismatch_at.
ChainBreak altered_line(std::uint64_t mismatch_at, std::string_view next, bool terminated,
                        const std::string& prev_hash) {
    const std::string at = std::to_string(mismatch_at);
    const std::string before = std::to_string(mismatch_at - 1);
    LineFields f;
    if (terminated && parse_fields(next, f) && f.prev && *f.prev != prev_hash) {
        return {mismatch_at, "line " + at + " was altered: its prev does not match line " + before +
                                 " and its SHA-256 is not the prev of line " +
                                 std::to_string(mismatch_at + 1)};
    }
    return {mismatch_at - 1,
            "line " + before + " was altered: its SHA-256 is not the prev recorded in line " + at};
}

// What is wrong with line n on its own (framing, JSON, required fields, version, seq), if
// anything; `f` holds its fields when nothing is.
// expected_seq = 0 for a first line, whose seq is judged with its prev (first_link).
std::optional<ChainBreak> malformed_line(std::string_view line, bool terminated, std::uint64_t n,
                                         std::uint64_t expected_seq, LineFields& f) {
    const std::string ln = std::to_string(n);
    if (!terminated) {
        return ChainBreak{n, "line " + ln +
                                 " is incomplete (no trailing newline): a torn or truncated write"};
    }
    if (!parse_fields(line, f)) {
        return ChainBreak{n, f.object || f.error_pos != 0
                                 ? "line " + ln + " is not valid JSON (at byte " +
                                       std::to_string(f.error_pos) + ")"
                                 : "line " + ln + " is not a JSON object"};
    }
    for (const auto& [name, present] :
         {std::pair{"v", f.v.has_value()}, std::pair{"seq", f.seq.has_value()},
          std::pair{"ts", f.ts.has_value()}, std::pair{"type", f.type.has_value()},
          std::pair{"prev", f.prev.has_value()}}) {
        if (!present) {
            return ChainBreak{n, "line " + ln + " has no valid \"" + name + "\""};
        }
    }
    if (*f.v != 1) {
        return ChainBreak{n,
                          "line " + ln + " has unsupported format version " + std::to_string(*f.v)};
    }
    if (expected_seq != 0 && *f.seq != expected_seq) {
        return ChainBreak{n, "line " + ln + " has seq " + std::to_string(*f.seq) + ", expected " +
                                 std::to_string(expected_seq) +
                                 ": a line was removed, inserted or moved"};
    }
    return std::nullopt;
}

// The first line: the start of a chain (prev zero, seq 1), or chained to the last line of the
// rotated file before it (checked when that file is present; seq 1), or to a line that is not
// present (a rotated file gone, an export's slice, a log imported into a store): a note, the
// chain then starts at the line's own seq.
std::optional<ChainBreak> first_link(const AuditLines& lines, const LineFields& f,
                                     VerifyResult& result) {
    const auto seq_must_be_one = [&]() -> std::optional<ChainBreak> {
        if (*f.seq != 1) {
            return ChainBreak{1, "line 1 has seq " + std::to_string(*f.seq) +
                                     ", expected 1: a line was removed, inserted or moved"};
        }
        return std::nullopt;
    };
    if (*f.prev == k_zero_hash) {
        return seq_must_be_one();
    }
    const auto link = lines.predecessor();
    if (link && link->line) {
        if (sha256_hex(*link->line) != *f.prev) {
            return ChainBreak{1, "line 1's prev is neither the start of a chain nor the SHA-256 "
                                 "of the last line of " +
                                     link->name};
        }
        result.note = "line 1 chains to the last line of " + link->name;
        return seq_must_be_one();
    }
    result.note = link ? "line 1 chains to a rotated file (" + link->name +
                             ") that is not present; that link was not checked"
                       : "line 1 chains to a line that is not in " + lines.name() +
                             " (a log imported from a rotated file); that link was not checked";
    if (*f.seq != 1) {
        result.note += "; it has seq " + std::to_string(*f.seq) + ": the " +
                       std::to_string(*f.seq - 1) +
                       " lines before it (those of an export's time range) are not present";
    }
    return std::nullopt;
}

void count_line(const LineFields& f, VerifyResult& result) {
    if (*f.type == "run_start") {
        ++result.runs;
    } else if (*f.type == "outcome" && f.committed.value_or(false) && f.count) {
        result.records += static_cast<std::uint64_t>(std::max<std::int64_t>(*f.count, 0));
    }
}

// A head taken outside the store (`audit head: seq=N sha256=H`) that line `n` (seq `seq`) must
// match, if one names it.
std::optional<ChainBreak> check_head(const std::map<std::uint64_t, std::string>& heads,
                                     std::uint64_t seq, std::uint64_t n, const std::string& hash) {
    const auto it = heads.find(seq);
    if (it == heads.end() || it->second == hash) {
        return std::nullopt;
    }
    return ChainBreak{n, "line " + std::to_string(n) + " (seq " + std::to_string(seq) +
                             ") hashes to " + hash + ", not to the head " + it->second +
                             " recorded for it: the chain was rewritten"};
}

// Heads no line had: beyond the last line (lines cut off at the end) or before the first.
std::optional<ChainBreak> heads_not_found(const std::map<std::uint64_t, std::string>& heads,
                                          std::uint64_t first_seq, std::uint64_t last_seq,
                                          std::uint64_t lines) {
    for (const auto& [seq, hash] : heads) {
        if (lines == 0 || seq > last_seq) {
            return ChainBreak{lines, "the chain ends at seq " + std::to_string(last_seq) +
                                         " but a head was recorded at seq " + std::to_string(seq) +
                                         ": lines were cut off at the end"};
        }
        if (seq < first_seq) {
            return ChainBreak{1, "the head recorded at seq " + std::to_string(seq) +
                                     " is before the first line (seq " + std::to_string(first_seq) +
                                     "): it cannot be checked here"};
        }
    }
    return std::nullopt;
}

} // namespace

VerifyResult verify_audit_log(const std::string& path) {
    // An I/O problem is not evidence of tampering: a file that cannot be opened throws.
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        throw_errno("cannot open audit log", path, errno);
    }
    return verify_audit_lines(*file_audit_lines(path, false));
}

VerifyResult verify_audit_lines(const AuditLines& lines, const std::vector<AuditHeadCheck>& heads) {
    std::map<std::uint64_t, std::string> head_of;
    for (const auto& h : heads) {
        head_of[h.seq] = h.sha256;
    }
    VerifyResult result;
    std::optional<ChainBreak> broken;
    std::uint64_t n = 0;
    std::uint64_t first_seq = 0;
    std::string prev_hash;
    std::uint64_t mismatch_at = 0; // a line whose prev did not match: decided by the next line
    lines.forward([&](std::string_view line, bool terminated) {
        ++n;
        if (mismatch_at != 0) {
            broken = altered_line(mismatch_at, line, terminated, prev_hash);
            return false;
        }
        LineFields f;
        broken = malformed_line(line, terminated, n, n == 1 ? 0 : first_seq + n - 1, f);
        if (!broken && n == 1) {
            broken = first_link(lines, f, result);
            first_seq = *f.seq;
        } else if (!broken && *f.prev != prev_hash) {
            mismatch_at = n;
        }
        if (broken) {
            return false;
        }
        prev_hash = sha256_hex(line);
        broken = check_head(head_of, *f.seq, n, prev_hash);
        count_line(f, result);
        return !broken;
    });
    if (!broken && mismatch_at != 0) {
        broken = ChainBreak{mismatch_at - 1, "line " + std::to_string(mismatch_at - 1) +
                                                 " does not hash to the prev recorded in line " +
                                                 std::to_string(mismatch_at) +
                                                 " (one of the two was altered)"};
    }
    if (!broken) {
        broken = heads_not_found(head_of, first_seq, n == 0 ? 0 : first_seq + n - 1, n);
    }
    if (broken) {
        result.ok = false;
        result.bad_line = broken->line;
        result.reason = std::move(broken->reason);
        return result;
    }
    result.lines = n;
    return result;
}

// --- export --------------------------------------------------------------------------------

namespace {

// Whether a line's ts is past `until` (a slice ends there) or at or after `since` (it starts
// there).
struct SliceBounds {
    std::optional<TimePoint> since;
    std::optional<TimePoint> until;
    std::optional<TimePoint> ts_of(std::string_view line) const {
        LineFields f;
        if (!parse_fields(line, f) || !f.ts) {
            return std::nullopt;
        }
        return parse_timestamp(*f.ts, "", find_zone("UTC"));
    }
};

std::uint64_t write_slice(const AuditLines& lines, int fd, const std::string& tmp,
                          const SliceBounds& bounds) {
    std::uint64_t written = 0;
    bool started = !bounds.since;
    std::string text;
    lines.forward([&](std::string_view line, bool terminated) {
        if (!terminated) {
            return false; // a torn last line is not part of the chain
        }
        if (bounds.since || bounds.until) {
            const auto ts = bounds.ts_of(line);
            if (ts && bounds.until && *ts > *bounds.until) {
                return false; // a contiguous slice: nothing after the first line past until
            }
            started = started || (ts && *ts >= *bounds.since);
        }
        if (started) {
            text.assign(line);
            text += '\n';
            write_all(fd, text, tmp);
            ++written;
        }
        return true;
    });
    return written;
}

} // namespace

std::uint64_t export_audit_lines(const AuditLines& lines, const std::string& output,
                                 std::optional<TimePoint> since, std::optional<TimePoint> until) {
    const std::string tmp = output + ".tmp";
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
    if (fd.get() < 0) {
        throw_errno("cannot create", tmp, errno);
    }
    try {
        const auto written = write_slice(lines, fd.get(), tmp, SliceBounds{since, until});
        fsync_or_throw(fd.get(), tmp);
        if (::rename(tmp.c_str(), output.c_str()) != 0) {
            throw_errno("cannot rename", tmp, errno);
        }
        fsync_dir(parent_dir(output));
        return written;
    } catch (...) {
        ::unlink(tmp.c_str()); // never a partial export under any name
        throw;
    }
}

// --- prove ---------------------------------------------------------------------------------

namespace {

constexpr std::string_view k_partition_key = "\"partition\":{";

// The instant a key's partition column holds ("2024-01-15 10:00:00+00", as PostgreSQL prints it).
std::optional<std::int64_t> key_micros(std::string_view key, int index, int columns) {
    std::string text(key);
    if (columns > 1) {
        const json j = json::parse(key, nullptr, false);
        if (!j.is_array() || static_cast<int>(j.size()) != columns || !j[index].is_string()) {
            return std::nullopt;
        }
        text = j[index].get<std::string>();
    }
    // PostgreSQL prints a whole-hour offset as "+00": RFC 3339 wants "+00:00".
    if (text.size() > 3 && (text[text.size() - 3] == '+' || text[text.size() - 3] == '-') &&
        std::isdigit(static_cast<unsigned char>(text.back())) != 0) {
        text += ":00";
    }
    const auto t = parse_timestamp(text, "", find_zone("UTC"));
    if (!t) {
        return std::nullopt;
    }
    return std::chrono::duration_cast<std::chrono::microseconds>(t->time_since_epoch()).count();
}

// What an intent line says of its batch, for a proof.
ProofEntry proof_of(const json& j) {
    ProofEntry e;
    e.time = j.value("ts", "");
    e.run_id = j.value("run", "");
    e.action = j.value("action", "");
    e.cutoff = j.value("cutoff", "");
    e.target = j.value("target", "");
    e.batch = j.value("batch", "");
    return e;
}

// An intent of `rule` that emptied a whole partition whose bounds hold the key's partition
// column: it proves the record went, without a digest per key.
std::optional<ProofEntry> partition_proof(std::string_view line, std::string_view rule,
                                          std::string_view key) {
    const json j = parse_audit_line(line);
    if (!j.is_object() || j.value("type", "") != "intent" || j.value("rule", "") != rule ||
        !j.contains("partition") || !j["partition"].is_object()) {
        return std::nullopt;
    }
    const auto& p = j["partition"];
    const int index = p.value("key_index", -1);
    const auto t = index < 0 ? std::nullopt : key_micros(key, index, p.value("key_columns", 1));
    if (!t || *t >= p.value("to_us", std::int64_t{0}) ||
        (p.contains("from_us") && *t < p.value("from_us", std::int64_t{0}))) {
        return std::nullopt;
    }
    return proof_of(j);
}

// An outcome line: the waiting intent of its batch becomes a proof when it committed and did not
// keep the record.
void settle_proof(std::string_view line, const std::string& digest,
                  std::map<std::string, ProofEntry>& waiting, std::vector<ProofEntry>& out) {
    const json j = json::parse(line.data(), line.data() + line.size(), nullptr, false);
    if (!j.is_object() || !j.contains("batch") || !j["batch"].is_string()) {
        return;
    }
    const auto it = waiting.find(j["batch"].get<std::string>());
    if (it == waiting.end()) {
        return;
    }
    const bool left_alone =
        j.contains("kept") && j["kept"].is_array() &&
        std::find(j["kept"].begin(), j["kept"].end(), json(digest)) != j["kept"].end();
    if (j.value("committed", false) && !left_alone) {
        it->second.committed_at = j.value("ts", "");
        it->second.recovered = j.value("recovered", "");
        out.push_back(std::move(it->second));
    }
    waiting.erase(it); // a rolled-back batch proves nothing
}

// An intent of `rule` whose digests hold `digest`.
std::optional<ProofEntry> digest_intent(std::string_view line, std::string_view rule,
                                        const std::string& digest) {
    const json j = json::parse(line.data(), line.data() + line.size(), nullptr, false);
    if (!j.is_object() || j.value("type", "") != "intent" || j.value("rule", "") != rule ||
        !j.contains("digests") || !j["digests"].is_array()) {
        return std::nullopt;
    }
    const auto& digests = j["digests"];
    if (std::find(digests.begin(), digests.end(), json(digest)) == digests.end()) {
        return std::nullopt;
    }
    return proof_of(j);
}

} // namespace

std::vector<ProofEntry> prove(const std::string& path, const Secret& audit_key,
                              std::string_view rule, std::string_view key) {
    return prove(*file_audit_lines(path, true), audit_key, rule, key);
}

std::vector<ProofEntry> prove(const AuditLines& lines, const Secret& audit_key,
                              std::string_view rule, std::string_view key) {
    const std::string digest = record_digest(audit_key, rule, key);
    const std::string quoted = "\"" + digest + "\"";
    std::vector<ProofEntry> out;
    std::map<std::string, ProofEntry> waiting; // batch -> intent naming the record, no outcome yet
    lines.forward([&](std::string_view line, bool terminated) {
        if (!terminated) {
            return false;
        }
        if (line.ends_with(k_outcome_suffix)) {
            if (!waiting.empty()) {
                settle_proof(line, digest, waiting, out);
            }
            return true;
        }
        if (line.find(k_partition_key) != std::string_view::npos) {
            if (auto e = partition_proof(line, rule, key)) {
                waiting[e->batch] = std::move(*e);
                return true;
            }
        }
        if (line_has_digest(line, digest, quoted)) {
            if (auto e = digest_intent(line, rule, digest)) {
                waiting[e->batch] = std::move(*e);
            }
        }
        return true;
    });
    return out;
}

// --- last successes --------------------------------------------------------------------------

std::map<std::string, TimePoint> last_successes(const std::string& path,
                                                const std::set<std::string>& rules) {
    return last_successes(*file_audit_lines(path, true), rules);
}

std::map<std::string, TimePoint> last_successes(const AuditLines& lines,
                                                const std::set<std::string>& rules) {
    std::map<std::string, TimePoint> found;
    if (rules.empty()) {
        return found;
    }
    const date::time_zone* utc = find_zone("UTC");
    // Newest first (a file log: the current file, then the rotated ones that are not
    // compressed); stops once every rule is found.
    lines.backward([&](const std::string& line) {
        // Keys are sorted and compact: a cheap filter before parsing the few lines that matter
        // (intents with thousands of digests are never parsed).
        if (line.find(R"("type":"rule_end")") == std::string::npos ||
            line.find(R"("ok":true)") == std::string::npos) {
            return true;
        }
        const json j = json::parse(line, nullptr, false);
        if (!j.is_object() || j.value("type", "") != "rule_end" || !j.value("ok", false)) {
            return true;
        }
        const auto rule = j.value("rule", "");
        if (rules.count(rule) == 0 || found.count(rule) != 0) {
            return true;
        }
        if (const auto at = parse_timestamp(j.value("ts", ""), "", utc)) {
            found.emplace(rule, *at);
        }
        return found.size() < rules.size();
    });
    return found;
}

} // namespace retentiond
