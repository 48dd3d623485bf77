// Kind postgres: reading its datastore sections (dsn) and its rules (table, key, dependents,
// mark, timeouts, parallel, notice), with the same positions and messages as the rest of the file.
#include "postgres_kind.hpp"

#include <string_view>

namespace retentiond {

namespace {

bool has_inline_password(std::string_view dsn) {
    if (dsn.find("password=") != std::string_view::npos) {
        return true;
    }
    const auto scheme = dsn.find("://");
    if (scheme == std::string_view::npos) {
        return false;
    }
    const auto rest = dsn.substr(scheme + 3);
    const auto at = rest.find('@');
    if (at == std::string_view::npos) {
        return false;
    }
    const auto userinfo = rest.substr(0, at);
    const auto colon = userinfo.find(':');
    return colon != std::string_view::npos && colon + 1 < userinfo.size();
}

std::optional<PgHold> read_hold(ConfigReader& in, const ConfigNode& node) {
    const ConfigNode* v = &node;
    if (auto h = in.map(*v, "hold")) {
        in.check_keys(*h, {"column", "equals", "after_now"});
        in.require(*h, {"column"});
        PgHold hold;
        if (const auto* c = h->get("column")) {
            hold.column = in.string(*c, "hold.column").value_or("");
        }
        const auto* equals = h->get("equals");
        const auto* after_now = h->get("after_now");
        if (equals && after_now) {
            in.error(*v, "hold: give either \"equals\" or \"after_now\", not both");
        } else if (equals) {
            hold.equals = in.string(*equals, "hold.equals").value_or("");
        } else if (after_now) {
            if (auto b = in.boolean(*after_now, "hold.after_now"); b && !*b) {
                in.error(*after_now, "hold.after_now: only \"true\" is meaningful");
            }
            hold.kind = PgHold::Kind::after_now;
        } else {
            in.error(*v, "hold: needs \"equals\" or \"after_now: true\"");
        }
        return hold;
    }
    return std::nullopt;
}

std::optional<Dependent> read_dependent(ConfigReader& in, const ConfigNode& node) {
    auto f = in.map(node, "dependents[]");
    if (!f) {
        return std::nullopt;
    }
    in.check_keys(*f, {"table", "column", "action", "anonymize", "dependents"});
    in.require(*f, {"table", "column", "action"});
    Dependent dep;
    dep.pos = in.pos(node);
    if (const auto* v = f->get("table")) {
        dep.table = in.string(*v, "table").value_or("");
    }
    if (const auto* v = f->get("column")) {
        dep.column = in.string(*v, "column").value_or("");
    }
    std::optional<std::string> action;
    if (const auto* v = f->get("action")) {
        action = in.choice(*v, "action", {"delete", "set_null", "anonymize"});
    }
    if (action == "set_null") {
        dep.action = Dependent::Action::set_null;
    } else if (action == "anonymize") {
        dep.action = Dependent::Action::anonymize;
    }
    if (const auto* e = f->find("anonymize")) {
        if (action && *action != "anonymize") {
            in.error(e->key, "anonymize: given but the action is " + *action);
        } else {
            dep.anonymize = in.anonymize(e->value, "anonymize");
        }
    } else if (action == "anonymize") {
        in.error(node, "action: anonymize needs an \"anonymize\" map of field: strategy");
    }
    if (const auto* v = f->get("dependents")) {
        if (!v->is_sequence()) {
            in.type_error(*v, "dependents", "a list");
        } else {
            for (const auto& child : v->items()) {
                if (auto d = read_dependent(in, child)) {
                    dep.dependents.push_back(std::move(*d));
                }
            }
        }
    }
    return dep;
}

std::optional<Notice> read_notice(ConfigReader& in, const ConfigNode& node) {
    auto f = in.map(node, "notice");
    if (!f) {
        return std::nullopt;
    }
    in.check_keys(*f, {"before", "fields", "command", "timeout"});
    in.require(*f, {"before", "command"});
    Notice notice;
    if (const auto* v = f->get("before")) {
        if (auto d = in.duration(*v, "notice.before")) {
            notice.before = *d;
        }
    }
    if (const auto* v = f->get("fields")) {
        notice.fields = in.string_list(*v, "notice.fields", false).value_or(notice.fields);
    }
    if (const auto* v = f->get("command")) {
        if (auto s = in.string(*v, "notice.command")) {
            if (s->empty() || s->front() != '/') {
                in.error(*v, "notice.command: expected an absolute path");
            }
            notice.command = *s;
        }
    }
    in.fixed_duration(*f, "timeout", notice.timeout);
    return notice;
}

void read_partitions(ConfigReader& in, const ConfigMap& f, PostgresRule& pg);

void read_postgres(ConfigReader& in, const ConfigMap& f, const Rule& rule, PostgresRule& pg) {
    in.require(f, {"table", "key"});
    if (const auto* v = f.get("table")) {
        pg.table = in.string(*v, "table").value_or("");
    }
    if (const auto* v = f.get("key")) {
        pg.key = in.string_list(*v, "key", true).value_or(pg.key);
    }
    if (const auto* v = f.get("clock")) {
        pg.clock = in.string_list(*v, "clock", true).value_or(pg.clock);
    }
    if (const auto* v = f.get("hold")) {
        pg.hold = read_hold(in, *v);
    }
    if (const auto* v = f.get("dependents")) {
        if (!v->is_sequence()) {
            in.type_error(*v, "dependents", "a list");
        } else {
            for (const auto& item : v->items()) {
                if (auto d = read_dependent(in, item)) {
                    pg.dependents.push_back(std::move(*d));
                }
            }
        }
    }
    if (const auto* e = f.find("mark")) {
        if (rule.action != Action::anonymize) {
            in.error(e->key, "mark: only meaningful with action: anonymize");
        } else {
            pg.mark = in.string(e->value, "mark");
        }
    }
    in.fixed_duration(f, "lock_timeout", pg.lock_timeout);
    in.fixed_duration(f, "statement_timeout", pg.statement_timeout);
    in.fixed_duration(f, "sleep_between_batches", pg.sleep_between_batches);
    if (const auto* v = f.get("parallel")) {
        if (auto n = in.integer(*v, "parallel")) {
            if (*n < 1 || *n > 8) {
                in.error(*v, "parallel: expected an integer from 1 to 8, got " +
                                 in_quotes(v->scalar()));
            } else if (*n > 1 && rule.action != Action::remove) {
                in.error(*v, "parallel: only with action: delete (an anonymized row may move to "
                             "pages another stream reads)");
            } else if (*n > 1 && !pg.dependents.empty()) {
                in.error(*v, "parallel: not with dependents (two streams could wait on each "
                             "other's row locks)");
            } else {
                pg.parallel = static_cast<int>(*n);
            }
        }
    }
    if (const auto* v = f.get("notice")) {
        pg.notice = read_notice(in, *v);
    }
    read_partitions(in, f, pg);
}

// partitions: drop | detach | rows; partition_digests: keys | none; partition_rows: estimate |
// exact.
void read_partitions(ConfigReader& in, const ConfigMap& f, PostgresRule& pg) {
    if (const auto* v = f.get("partitions")) {
        const auto s = in.choice(*v, "partitions", {"drop", "detach", "rows"});
        if (s) {
            pg.partitions = *s == "drop"     ? PostgresRule::Partitions::drop
                            : *s == "detach" ? PostgresRule::Partitions::detach
                                             : PostgresRule::Partitions::rows;
        }
    }
    if (const auto* v = f.get("partition_digests")) {
        const auto s = in.choice(*v, "partition_digests", {"keys", "none"});
        pg.partition_digests = s == "keys";
    }
    if (const auto* v = f.get("partition_rows")) {
        const auto s = in.choice(*v, "partition_rows", {"estimate", "exact"});
        pg.partition_rows_exact = s == "exact";
    }
}

} // namespace

std::shared_ptr<const DatastoreSpec> read_postgres_datastore(ConfigReader& in,
                                                             const ConfigMap& section) {
    PostgresStore store;
    const auto* value = section.get("dsn");
    if (!value) {
        in.error(section.node, "missing key \"dsn\"");
    } else if (auto s = in.string(*value, "dsn")) {
        store.dsn = Secret(*s);
        store.dsn_has_inline_password = has_inline_password(*s);
        if (store.dsn_has_inline_password) {
            in.warn(*value, "dsn: the connection string carries an inline password; "
                            "prefer a credential file (${file:...}) or PGPASSFILE");
        }
    }
    return spec_ptr(std::move(store));
}

std::shared_ptr<const RuleSpec> read_postgres_rule(ConfigReader& in, const ConfigMap& section,
                                                   const Rule& rule) {
    PostgresRule pg;
    read_postgres(in, section, rule, pg);
    return spec_ptr(std::move(pg));
}

} // namespace retentiond
