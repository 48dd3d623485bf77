#include "redis_passes.hpp"

namespace retentiond::redis_detail {

namespace {

// Judges one key of the counting pass.
void count_key(const Rule& rule, const PurgeSetup& setup, const std::string& key, const Observed& o,
               TtlTally& ttl, Counted& out) {
    const auto v = judge(o, rule, setup.cutoff);
    if (v == Verdict::gone) {
        return;
    }
    ++out.in_scope;
    const bool clamp = ttl.count(o);
    ttl.unparseable += v == Verdict::unparseable ? 1 : 0;
    if (v == Verdict::due) {
        ++out.due;
        const char kind = setup.idle ? 'i' : delete_flag(o);
        out.found.add(kind, key, kind == '=' ? o.raw : std::string());
    } else if (clamp && v != Verdict::held) {
        out.found.add('e', key, {});
    }
}

// Judges one key of the purge's scan and hands it to the sender when due or to clamp.
void purge_key(const Rule& rule, const PurgeSetup& setup, const std::string& key, const Observed& o,
               TtlTally& ttl, BatchSender& sender) {
    const auto v = judge(o, rule, setup.cutoff);
    if (v == Verdict::gone) {
        return;
    }
    const bool clamp = ttl.count(o);
    ttl.unparseable += v == Verdict::unparseable ? 1 : 0;
    if (v == Verdict::due) {
        sender.add_due(key, setup.idle ? 'i' : delete_flag(o), o.raw);
    } else if (clamp && v != Verdict::held) {
        sender.add_clamp(key);
    }
}

} // namespace

Counted count_due(Connection& c, const Rule& rule, const PurgeSetup& setup, TtlTally& ttl) {
    Counted out;
    scan_all(c, rule, setup.plan, setup.now, setup.tz,
             [&](const std::vector<std::string>& keys, const std::vector<Observed>& seen) {
                 for (std::size_t i = 0; i < keys.size(); ++i) {
                     count_key(rule, setup, keys[i], seen[i], ttl, out);
                 }
                 return true;
             });
    return out;
}

void purge_remembered(const Remembered& keys, BatchSender& sender) {
    keys.each([&](char kind, std::string_view key, std::string_view value) {
        if (kind == 'e') {
            sender.add_clamp(key);
        } else {
            sender.add_due(key, kind, value);
        }
        return !sender.stopped();
    });
}

void purge_scanning(Connection& c, const Rule& rule, const PurgeSetup& setup, TtlTally& ttl,
                    BatchSender& sender) {
    scan_all(c, rule, setup.plan, setup.now, setup.tz,
             [&](const std::vector<std::string>& keys, const std::vector<Observed>& seen) {
                 sender.poll();
                 if (sender.stop_now()) {
                     return false;
                 }
                 for (std::size_t i = 0; i < keys.size() && !sender.stopped(); ++i) {
                     purge_key(rule, setup, keys[i], seen[i], ttl, sender);
                 }
                 return !sender.stopped();
             });
}

} // namespace retentiond::redis_detail
