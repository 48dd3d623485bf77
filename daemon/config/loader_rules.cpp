// The loader's rules: the common keys, then the kind's own keys (read by the kind).
#include "loader.hpp"

#include "retentiond/schedule.hpp"
#include "retentiond/subject.hpp"

namespace retentiond::config_detail {

namespace {

bool valid_rule_name(std::string_view name) {
    if (name.empty()) {
        return false;
    }
    const auto ok = [](char c, bool first) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (!first && c == '-');
    };
    for (std::size_t i = 0; i < name.size(); ++i) {
        if (!ok(name[i], i == 0)) {
            return false;
        }
    }
    return true;
}

} // namespace

void Loader::read_rule(const ConfigNode& node) {
    // The rule's name first, so that every diagnostic of the map (duplicate keys too) names it.
    const YAML::Node& n = yaml(node);
    if (n.IsMap()) {
        for (auto it = n.begin(); it != n.end(); ++it) {
            if (it->first.IsScalar() && it->first.Scalar() == "name" && it->second.IsScalar()) {
                m_rule = it->second.Scalar();
                break;
            }
        }
    }
    auto fields = map(node, "rule");
    if (!fields) {
        return;
    }
    const ConfigMap& f = *fields;
    Rule rule;
    rule.pos = pos(node);
    read_rule_name(f, rule);
    const Kind* kind = read_rule_datastore(f, rule);
    require(f, {"name", "datastore", "category", "retain", "clock", "action"});
    check_rule_keys(f, rule, kind);
    read_rule_texts(f, rule);
    read_rule_action(f, node, rule, kind);
    read_rule_schedule(f, rule);
    read_rule_limits(f, rule);
    read_rule_subjects(f, rule, kind);
    if (kind != nullptr) {
        rule.spec = kind->read_rule(*this, f, rule);
    }
    m_config.rules.push_back(std::move(rule));
}

void Loader::read_rule_name(const ConfigMap& f, Rule& rule) {
    if (const auto* v = f.get("name")) {
        if (v->is_scalar()) {
            rule.name = v->scalar();
            m_rule = rule.name;
            if (!valid_rule_name(rule.name)) {
                error(*v, "name: " + in_quotes(rule.name) +
                              " is not a valid rule name ([a-z0-9][a-z0-9-]*)");
            } else if (auto it = m_rule_names.find(rule.name); it != m_rule_names.end()) {
                error(*v, "duplicate rule name (first defined at " + it->second.file + ":" +
                              std::to_string(it->second.line) + ":" +
                              std::to_string(it->second.column) + ")");
            } else {
                m_rule_names.emplace(rule.name, pos(*v));
            }
        } else {
            type_error(*v, "name", "a string");
        }
    }
}

// The kind of the rule's datastore; nullptr when unknown (then only the common keys are checked).
const Kind* Loader::read_rule_datastore(const ConfigMap& f, Rule& rule) {
    const auto* v = f.get("datastore");
    if (v == nullptr) {
        return nullptr;
    }
    const auto s = string(*v, "datastore");
    if (!s) {
        return nullptr;
    }
    rule.datastore = *s;
    if (m_kindless_datastores.count(*s) != 0) {
        return nullptr; // its kind is unknown, and already reported
    }
    if (auto it = m_config.datastores.find(*s); it != m_config.datastores.end()) {
        rule.kind = it->second.kind;
        return rule.kind;
    }
    Keys names;
    for (const auto& [name, ds] : m_config.datastores) {
        names.push_back(name);
    }
    error(*v, "unknown datastore " + in_quotes(v->scalar()) + hint(*s, names));
    return nullptr;
}

// Keys of another kind get a message that says so, rather than "unknown key".
void Loader::check_rule_keys(const ConfigMap& f, const Rule& rule, const Kind* kind) {
    Keys allowed = k_common_rule_keys;
    for (const Kind* k : m_kinds) {
        if (kind == nullptr || kind == k) {
            allowed.insert(allowed.end(), k->rule_keys().begin(), k->rule_keys().end());
        }
    }
    for (const auto& e : f.entries) {
        if (contains(allowed, e.name)) {
            continue;
        }
        const Kind* owner = nullptr;
        for (const Kind* k : m_kinds) {
            if (contains(k->rule_keys(), e.name)) {
                owner = k;
            }
        }
        if (owner != nullptr) {
            error(e.key, "key " + in_quotes(e.name) + " is only valid in " +
                             std::string(owner->name()) + " rules, and datastore " +
                             in_quotes(rule.datastore) + " is " + std::string(kind->name()));
        } else {
            error(e.key, "unknown key " + in_quotes(e.name) + hint(e.name, allowed));
        }
    }
}

void Loader::read_rule_texts(const ConfigMap& f, Rule& rule) {
    if (const auto* v = f.get("category")) {
        rule.category = string(*v, "category").value_or("");
    }
    if (const auto* v = f.get("legal_basis")) {
        rule.legal_basis = string(*v, "legal_basis").value_or("");
    }
    if (const auto* v = f.get("description")) {
        rule.description = string(*v, "description").value_or("");
    }
    if (const auto* v = f.get("retain")) {
        if (auto d = duration(*v, "retain")) {
            rule.retain = *d;
        }
    }
    if (const auto* v = f.get("clock_label")) {
        rule.clock_label = localized(*v, "clock_label").value_or(LocalizedText{});
    }
    if (const auto* v = f.get("clock_null")) {
        rule.clock_null_due = choice(*v, "clock_null", {"due", "skip"}) == "due";
    }
    if (const auto* v = f.get("policy_table")) {
        rule.in_policy_table = boolean(*v, "policy_table").value_or(true);
    }
}

void Loader::read_rule_action(const ConfigMap& f, const ConfigNode& node, Rule& rule,
                              const Kind* kind) {
    std::optional<std::string> action;
    if (const auto* v = f.get("action")) {
        action = choice(*v, "action", {"delete", "anonymize"});
        rule.action = action == "anonymize" ? Action::anonymize : Action::remove;
    }
    if (const auto* e = f.find("anonymize")) {
        if (action == "delete") {
            error(e->key, "anonymize: given but the action is delete");
        } else {
            rule.anonymize = anonymize(e->value, "anonymize");
        }
    } else if (action == "anonymize" && (kind == nullptr || kind->supports_anonymize())) {
        error(f.get("action") ? *f.get("action") : node,
              "action: anonymize needs an \"anonymize\" map of field: strategy");
    }
}

void Loader::read_rule_schedule(const ConfigMap& f, Rule& rule) {
    try {
        rule.schedule = parse_schedule("daily 03:00");
    } catch (const ParseError&) {
        // The default is a constant; parse_schedule accepting it is its own tests' business.
    }
    if (const auto* v = f.get("schedule")) {
        if (auto s = string(*v, "schedule")) {
            try {
                rule.schedule = parse_schedule(*s);
            } catch (const ParseError& e) {
                error(*v, "schedule: " + (*s == v->scalar()
                                              ? std::string(e.what())
                                              : "invalid schedule " + in_quotes(v->scalar())));
            }
        }
    }
    if (const auto* v = f.get("batch_size")) {
        if (auto n = integer(*v, "batch_size")) {
            if (*n <= 0 || *n > 10000000) {
                error(*v, "batch_size: expected a positive integer, got " + in_quotes(v->scalar()));
            } else {
                rule.batch_size = static_cast<int>(*n);
            }
        }
    }
}

void Loader::read_rule_limits(const ConfigMap& f, Rule& rule) {
    if (const auto* v = f.get("limits")) {
        if (auto l = map(*v, "limits")) {
            check_keys(*l, {"max_rows", "max_fraction"});
            if (const auto* x = l->get("max_rows")) {
                if (auto n = integer(*x, "limits.max_rows")) {
                    if (*n <= 0) {
                        error(*x, "limits.max_rows: expected a positive integer, got " +
                                      in_quotes(x->scalar()));
                    } else {
                        rule.limits.max_rows = *n;
                    }
                }
            }
            if (const auto* x = l->get("max_fraction")) {
                if (auto n = number(*x, "limits.max_fraction")) {
                    if (!(*n > 0.0 && *n <= 1.0)) {
                        error(*x, "limits.max_fraction: expected a number in (0, 1], got " +
                                      in_quotes(x->scalar()));
                    } else {
                        rule.limits.max_fraction = *n;
                    }
                }
            }
        }
    }
}

// `subject: { KIND: FIELD }` or `{ KIND: { hash_field: FIELD } }`; the kind's reader says which
// form its records take.
void Loader::read_rule_subjects(const ConfigMap& f, Rule& rule, const Kind* kind) {
    const auto* v = f.get("subject");
    if (v == nullptr) {
        return;
    }
    const auto m = map(*v, "subject");
    if (!m) {
        return;
    }
    if (m->entries.empty()) {
        error(*v, "subject: expected at least one identifier kind (e.g. email: COLUMN)");
    }
    for (const auto& e : m->entries) {
        const std::string key = "subject." + e.name;
        if (!valid_subject_kind(e.name)) {
            error(e.key, key + ": an identifier kind is [a-z][a-z0-9_]* (email, user_id, phone)");
            continue;
        }
        SubjectField s;
        s.pos = pos(e.value);
        if (e.value.is_map()) {
            const auto hf = map(e.value, key);
            if (!hf) {
                continue;
            }
            check_keys(*hf, {"hash_field"});
            require(*hf, {"hash_field"});
            const auto* name = hf->get("hash_field");
            if (name == nullptr) {
                continue;
            }
            s.hash_field = true;
            s.field = string(*name, key + ".hash_field").value_or("");
        } else {
            s.field = string(e.value, key).value_or("");
        }
        if (s.field.empty()) {
            error(e.value, key + ": the field is empty");
            continue;
        }
        if (kind != nullptr && s.hash_field != kind->subject_in_hash_field()) {
            error(e.value, key + (s.hash_field ? ": { hash_field: ... } is for redis rules; give "
                                                 "the column, CSV column or JSON path"
                                               : ": " + std::string(kind->name()) +
                                                     " rules name the field as { hash_field: "
                                                     "NAME }"));
            continue;
        }
        rule.subjects.emplace(e.name, std::move(s));
    }
}

} // namespace retentiond::config_detail
