#include "redis_batch_sender.hpp"

#include "redis_scripts.hpp"
#include "retentiond/engine_common.hpp"

#include <algorithm>
#include <chrono>

namespace retentiond::redis_detail {

BatchSender::BatchSender(Connection& c, const Rule& rule, RunContext& ctx, const PurgeSetup& setup,
                         RunResult& res)
    : m_c(c), m_rule(rule), m_ctx(ctx), m_res(res), m_idle(setup.idle), m_cutoff(setup.cutoff),
      m_hold_field(spec_of<RedisRule>(rule).hold ? spec_of<RedisRule>(rule).hold->hash_field : ""),
      m_hold_value(spec_of<RedisRule>(rule).hold ? spec_of<RedisRule>(rule).hold->equals : ""),
      m_min_idle_text(std::to_string(setup.min_idle)),
      m_cutoff_s_text(std::to_string(
          std::chrono::floor<std::chrono::seconds>(setup.cutoff.time_since_epoch()).count())),
      m_max_ttl_text(setup.max_ttl ? std::to_string(*setup.max_ttl) : ""),
      m_batch_size(static_cast<std::size_t>(std::max(1, rule.batch_size))),
      m_delete_script(c, k_delete_script), m_expire_script(c, k_expire_script),
      m_journal(ctx.journal) {}

bool BatchSender::stop_now() {
    if (!m_stopped && stop_requested(m_ctx)) {
        m_stopped = true;
    }
    return m_stopped;
}

void BatchSender::send(InFlight& f, bool by_sha) {
    const auto numkeys = std::to_string(f.batch.keys.size());
    m_args.clear();
    if (by_sha && !f.script->sha().empty()) {
        m_args.assign({"EVALSHA", f.script->sha(), numkeys});
    } else {
        m_args.assign({"EVAL", f.script->body(), numkeys});
    }
    m_args.insert(m_args.end(), f.batch.keys.begin(), f.batch.keys.end());
    m_args.insert(m_args.end(), f.head.begin(), f.head.end());
    if (!f.batch.flags.empty()) {
        m_args.push_back(f.batch.flags);
        m_args.insert(m_args.end(), f.batch.expect.begin(), f.batch.expect.end());
    }
    f.seq = m_c.append(m_args);
    m_c.flush();
    f.sent = true;
}

// Sends the batch in flight once its intent is durable: now if `wait`, else only if the journal
// is already done with it (checked between pages).
void BatchSender::launch(bool wait) {
    if (!m_in_flight || m_in_flight->sent) {
        return;
    }
    auto& f = *m_in_flight;
    if (!wait && f.intent.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        return;
    }
    f.id = f.intent.get(); // rethrows a failed intent: the batch is never sent
    send(f, true);
}

// Reads the in-flight batch's per-key letters, journals its outcome.
void BatchSender::settle() {
    if (!m_in_flight) {
        return;
    }
    launch(true);
    InFlight f = std::move(*m_in_flight);
    m_in_flight.reset();
    auto r = m_c.reply(f.seq);
    if (r->type == REDIS_REPLY_ERROR && text_of(r.get()).starts_with("NOSCRIPT")) {
        // The script cache was flushed since SCRIPT LOAD: nothing ran; send the body.
        send(f, false);
        r = m_c.reply(f.seq);
    }
    // No outcome on an error: the intent stays unresolved for crash recovery.
    if (r->type != REDIS_REPLY_STRING || r->len != f.batch.keys.size()) {
        throw ReplyError("EVAL (" + f.action + " batch): " +
                         (r->type == REDIS_REPLY_ERROR ? std::string(text_of(r.get()))
                                                       : std::string("unexpected reply")));
    }
    record(f, text_of(r.get()));
}

// Journals a settled batch's outcome and adds its letters to the counters.
void BatchSender::record(const InFlight& f, std::string_view letters) {
    const auto done =
        std::count_if(letters.begin(), letters.end(), [](char l) { return l == 'D' || l == 'E'; });
    if (m_ctx.journal != nullptr) {
        // Keys the script re-checked and kept are named so `audit prove` never claims them.
        std::vector<std::string> kept;
        for (std::size_t i = 0; i < letters.size(); ++i) {
            if (letters[i] != 'D' && letters[i] != 'E') {
                kept.push_back(f.batch.keys[i]);
            }
        }
        m_journal.outcome_except(f.id, done, std::move(kept));
    }
    ++m_res.batches;
    if (f.action != "delete") {
        m_expired += std::count(letters.begin(), letters.end(), 'E');
        return;
    }
    const auto d = std::count(letters.begin(), letters.end(), 'D');
    const auto h = std::count(letters.begin(), letters.end(), 'H');
    const auto s = std::count(letters.begin(), letters.end(), 'S');
    m_res.processed += d;
    m_held += h;
    m_skipped += s;
    if (h + s > 0) {
        m_journal.event("redis_not_deleted",
                        {{"rule", m_rule.name}, {"held", h}, {"changed_since_read", s}});
    }
    if (m_ctx.on_progress) {
        m_ctx.on_progress(m_res.processed, std::max(m_res.due, m_res.processed));
    }
}

// Queues the batch's intent; the batch is sent once the intent is durable (launch), while the
// scan goes on.
void BatchSender::apply(Batch& b, const std::string& action, Script& script,
                        std::vector<std::string> head) {
    settle();
    if (stop_now()) {
        return;
    }
    InFlight f;
    f.batch = std::move(b);
    b.clear();
    f.action = action;
    f.script = &script;
    f.head = std::move(head);
    BatchIntent intent;
    if (m_ctx.journal != nullptr) {
        intent.rule = m_rule.name;
        intent.datastore = m_rule.datastore;
        intent.target = spec_of<RedisRule>(m_rule).keys;
        intent.action = action;
        intent.cutoff = m_cutoff;
        intent.keys = f.batch.keys;
    }
    f.intent = m_journal.intent(std::move(intent));
    m_in_flight = std::move(f);
    launch(false);
}

void BatchSender::flush_delete() {
    if (m_to_delete.keys.empty() || m_stopped) {
        return;
    }
    apply(m_to_delete, "delete", m_delete_script,
          {m_idle ? "idle" : "field",
           m_idle ? m_min_idle_text : spec_of<RedisRule>(m_rule).clock.hash_field, m_hold_field,
           m_hold_value, m_cutoff_s_text});
}

void BatchSender::flush_expire() {
    if (m_to_expire.keys.empty() || m_stopped) {
        return;
    }
    apply(m_to_expire, "expire", m_expire_script, {m_max_ttl_text, m_hold_field, m_hold_value});
}

void BatchSender::add_due(std::string_view key, char flag, std::string_view expect) {
    std::string k(key);
    if (m_to_delete.add(k)) {
        ++m_found_due;
        m_to_delete.keys.push_back(std::move(k));
        if (!m_idle) {
            m_to_delete.flags += flag;
            if (flag == '=') {
                m_to_delete.expect.emplace_back(expect);
            }
        }
    }
    if (m_to_delete.keys.size() >= m_batch_size) {
        flush_delete();
    }
}

void BatchSender::add_clamp(std::string_view key) {
    std::string k(key);
    if (m_to_expire.add(k)) {
        m_to_expire.keys.push_back(std::move(k));
        if (m_to_expire.keys.size() >= m_batch_size) {
            flush_expire();
        }
    }
}

void BatchSender::finish() {
    flush_delete();
    flush_expire();
    settle(); // also after a stop: the batch in flight is finished, its outcome is due
    m_journal.drain();
}

} // namespace retentiond::redis_detail
