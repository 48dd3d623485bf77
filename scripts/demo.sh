#!/usr/bin/env bash
# The README's first command: installs, builds, then shows retentiond at work on throwaway stores
# it seeds itself — a DORA-shaped PostgreSQL database, C'est qui le pro's search-trace tables, a
# folder of Tally satisfaction exports and a Redis session store. Dry run first, then the real
# purge, then the audit log's verification. Everything is torn down at the end; run it again at will.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

./scripts/install-deps.sh
./scripts/build.sh
bin=$repo/build/retentiond

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

demo=$repo/.demo
rm -rf "$demo"
mkdir -p "$demo/etc/policies.d" "$demo/tally-exports/2023" "$demo/tally-exports/2025" \
  "$demo/tally-exports/2026"
# PostgreSQL refuses to run as root and must reach its data dir: keep it under /tmp, owned by
# the postgres user.
pgdir=$(mktemp -d /tmp/retentiond-demo-pg-XXXXXX)
chmod 0755 "$pgdir"
pgbin=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$pgdir"

cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$demo/redis.pid" ] && kill "$(cat "$demo/redis.pid")" 2>/dev/null || true
  rm -rf "$pgdir"
}
trap cleanup EXIT

say "Starting a throwaway PostgreSQL 15 (socket in $pgdir) and Redis"
as_pg "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-k $pgdir -c listen_addresses='' -c fsync=off" start >/dev/null
psql_do() { psql -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -U postgres "$@"; }
psql_do -d postgres -c "CREATE DATABASE dora" -c "CREATE DATABASE cqlp"
psql_do -d dora -f tests/fixtures/dora_schema.sql
psql_do -d cqlp -f tests/fixtures/cqlp_schema.sql
redis-server --port 0 --unixsocket "$demo/redis.sock" --unixsocketperm 700 --save "" \
  --appendonly no --daemonize yes --pidfile "$demo/redis.pid" --logfile "$demo/redis.log"
for _ in $(seq 50); do [ -S "$demo/redis.sock" ] && break; sleep 0.1; done

say "Seeding: 3000 DORA accounts, their memberships, sessions, orientations; search traces; exports"
psql_do -d dora <<'SQL'
-- DORA's schema has no column defaults (Django fills them): every NOT NULL column is given.
-- Accounts: last use spread over the past 15 months (about one in six unused for 12); a tenth
-- registered recently and never logged in; two staff accounts (held).
INSERT INTO users_user (id, password, email, first_name, last_name, last_login, date_joined,
                        is_active, is_valid, is_staff, is_manager, main_activity, newsletter,
                        cgu_versions_accepted)
OVERRIDING SYSTEM VALUE
SELECT g, '', 'user' || g || '@example.org', 'Prénom' || g, 'Nom' || g,
       CASE WHEN g % 10 = 0 THEN NULL ELSE now() - (g % 450) * interval '1 day' END,
       CASE WHEN g % 10 = 0 THEN now() - (g % 200) * interval '1 day'
            ELSE now() - interval '2 years' END,
       true, true, g IN (7, 400 + 450), false, 'accompagnateur', g % 3 = 0, '{}'
FROM generate_series(1, 3000) g;
DO $$ BEGIN PERFORM setval(pg_get_serial_sequence('users_user', 'id'), 3000); END $$;
INSERT INTO structures_structure (id, name, email, creation_date, creator_id, last_editor_id)
SELECT md5('s' || g)::uuid, 'Structure ' || g, '', now(), g * 10, g * 10 + 1 FROM generate_series(1, 200) g;
INSERT INTO structures_structuremember (id, is_admin, creation_date, structure_id, user_id)
SELECT gen_random_uuid(), false, now(), md5('s' || (1 + g % 200))::uuid, g FROM generate_series(1, 3000) g;
INSERT INTO structures_structureputativemember (id, is_admin, creation_date, invited_by_admin, structure_id, user_id)
SELECT md5('p' || g)::uuid, false, now(), true, md5('s' || (1 + (g + 1) % 200))::uuid, g FROM generate_series(1, 3000, 7) g;
INSERT INTO services_service (id, name, creation_date, structure_id, creator_id, last_editor_id)
SELECT md5('v' || g)::uuid, 'Service ' || g, now(), md5('s' || (1 + g % 200))::uuid, 1 + g % 3000, 1 + (g * 7) % 3000
FROM generate_series(1, 500) g;
INSERT INTO services_servicemodificationhistoryitem (date, fields, status, service_id, user_id)
SELECT now(), '{name}', '', md5('v' || g)::uuid, 1 + (g * 7) % 3000 FROM generate_series(1, 500) g;
INSERT INTO services_bookmark (di_id, creation_date, service_id, user_id)
SELECT '', now(), md5('v' || (1 + g % 500))::uuid, g FROM generate_series(1, 3000, 3) g;
INSERT INTO services_servicefee (value, label) VALUES ('gratuit', 'Gratuit');
INSERT INTO services_savedsearch (creation_date, city_code, city_label, kinds, frequency, last_notification_date, user_id)
SELECT now(), '75056', 'Paris', '{}', 'two-weeks', current_date, g FROM generate_series(1, 3000, 4) g;
INSERT INTO services_savedsearch_fees (savedsearch_id, servicefee_id)
SELECT s.id, f.id FROM services_savedsearch s, services_servicefee f;
INSERT INTO notifications_notification (id, task_type, status, counter, created_at, updated_at, owner_user_id)
SELECT gen_random_uuid(), 'user_account_deletion', 'pending', 1, now(), now(), g FROM generate_series(1, 3000, 2) g;
-- Each trigger writes a history line with str(owner): the e-mail.
INSERT INTO notifications_notificationlog (id, task_type, status, counter, triggered_at, owner, notification_id)
SELECT gen_random_uuid(), n.task_type, n.status, 1, now(), u.email, n.id
FROM notifications_notification n JOIN users_user u ON u.id = n.owner_user_id;
INSERT INTO authtoken_token (key, created, user_id) SELECT md5(g::text), now(), g FROM generate_series(1, 3000, 5) g;
INSERT INTO users_consentrecord (id, anonymous_user_hash, consent_version, consent_choices, created_at, user_id)
SELECT gen_random_uuid(), md5(g::text), '2', '{}', now(), g FROM generate_series(1, 3000, 6) g;
INSERT INTO stats_searchview (path, date, anonymous_user_hash, is_logged, is_staff, is_manager, is_an_admin,
                              user_kind, search_type, keyword, department, region, city_code, num_results,
                              num_di_results, num_di_results_top10, results_slugs_top10, kinds, user_id)
SELECT '/recherche', now() - (g % 500) * interval '1 day', '', true, false, false, false, '', 'thematique', '',
       '75', '11', '75056', 10, 0, 0, '{}', '{}', 1 + g % 3000
FROM generate_series(1, 2000) g;
INSERT INTO stats_pageview (path, date, anonymous_user_hash, is_logged, is_staff, is_manager, is_an_admin,
                            user_kind, title, user_id)
SELECT '/services', now() - (g % 500) * interval '1 day', '', true, false, false, false, '', 'Service', 1 + g % 3000
FROM generate_series(1, 2000) g;
INSERT INTO logs_actionlog (id, created_at, level, msg, legal, payload)
SELECT gen_random_uuid(), now() - (g % 450) * interval '1 day', 20, 'Connexion par lien direct', true,
       jsonb_build_object('userId', g, 'userEmail', 'user' || g || '@example.org')
FROM generate_series(1, 3000) g;
-- Django sessions: 12-hour cookies, most long expired (nobody runs clearsessions).
INSERT INTO django_session (session_key, session_data, expire_date)
SELECT md5('s' || g), 'e30:session-data', now() - (g % 400) * interval '1 hour' + interval '12 hours'
FROM generate_series(1, 2000) g;
INSERT INTO oidc_usersession (user_id, session_id)
SELECT 1 + g % 3000, md5('s' || g) FROM generate_series(1, 2000, 2) g;
INSERT INTO orientations_orientation (query_id, query_expires_at, requirements, situation, situation_other,
    beneficiary_france_travail_number, beneficiary_last_name, beneficiary_first_name,
    beneficiary_contact_preferences, beneficiary_phone, beneficiary_email, beneficiary_other_contact_method,
    beneficiary_attachments, referent_last_name, referent_first_name, referent_phone, referent_email,
    di_service_id, di_service_name, di_service_address_line, di_contact_email, di_contact_name,
    di_contact_phone, di_structure_name, data_protection_commitment, original_service_name,
    orientation_reasons, creation_date, processing_date, status, is_anonymized, prescriber_id)
SELECT gen_random_uuid(), now(), '{}', '{}', '', '', 'Nom' || g, 'Bénéficiaire' || g, '{}', '0600000000',
       'beneficiaire' || g || '@example.org', '', ARRAY['orientations/' || g || '/cv.pdf'], 'Référent',
       'Prénom', '0600000001', 'user' || (1 + g % 3000) || '@example.org', 'di-' || g, '', '', '', '', '',
       '', true, '', 'Motif', now() - (g % 600) * interval '1 day', NULL, 'OUVERTE', false, 1 + g % 3000
FROM generate_series(1, 1500) g;
SQL
psql_do -d cqlp <<'SQL'
-- As the API writes them: the metrics middleware (consumer: the socket's address, often
-- ::ffff:a.b.c.d) and the logger (the whole bunyan record of each request).
INSERT INTO metric (id, time, "createdAt", consumer, url)
SELECT md5('m' || g)::uuid, now() - (g % 2000) * interval '1 minute', now() - (g % 2000) * interval '1 minute',
       '::ffff:203.0.113.' || (g % 250),
       '/api/formations?latitude=48.85' || g % 10 || '&longitude=2.35' || g % 10 || '&distance=10'
FROM generate_series(1, 4000) g;
INSERT INTO log (id, data, "createdAt")
SELECT md5('l' || g)::uuid,
       jsonb_build_object('name', 'accompagnateur', 'msg', 'Http Request OK', 'type', 'http',
         'request', jsonb_build_object('method', 'GET',
           'headers', jsonb_build_object('x-forwarded-for', '203.0.113.' || g % 250,
                                         'referer', 'https://www.example.org/formations?address=Lyon'),
           'url', jsonb_build_object('relative', '/api/formations?latitude=48.85&longitude=2.35',
                                     'path', '/api/formations',
                                     'parameters', jsonb_build_object('latitude', '48.85', 'longitude', '2.35')),
           'body', '{}'::jsonb),
         'response', jsonb_build_object('status', 200)),
       now() - (g % 2000) * interval '1 minute'
FROM generate_series(1, 3000) g;
SQL

# Tally exports: one file per month of submissions over three years, some with quoted free text.
gen_export() { # $1 = file, $2 = first day (YYYY-MM-DD), $3 = count
  {
    printf '"Submission ID","Respondent ID","Submitted at","Nom","Prénom","Email","Téléphone","Situation professionnelle"\n'
    for i in $(seq 1 "$3"); do
      ts=$(date -u -d "$2 + $((i % 28)) days + $((i * 37 % 86400)) seconds" '+%Y-%m-%d %H:%M:%S')
      printf 'sub-%s-%04d,resp-%04d,%s,Nom%d,Prénom%d,personne%d@example.org,060000%04d,"Conseiller, ""CIO"" de Lyon\nligne 2"\n' \
        "${2//-/}" "$i" "$i" "$ts" "$i" "$i" "$i" "$i"
    done
  } >"$1"
}
gen_export "$demo/tally-exports/2023/Satisfaction_Submissions_2023-06-30.csv" 2023-06-01 120
gen_export "$demo/tally-exports/2023/Satisfaction_Submissions_2024-12-31.csv" 2024-11-20 150
gen_export "$demo/tally-exports/2025/Satisfaction_Submissions_2025-06-30.csv" 2025-06-01 150
gen_export "$demo/tally-exports/2026/Satisfaction_Submissions_2026-10-31.csv" 2026-10-01 80

# Redis: 2000 sessions with a last_seen field; a tenth written without a TTL (the usual leak).
now=$(date +%s)
for i in $(seq 1 2000); do
  printf 'HSET session:%d last_seen %d user_id %d\n' "$i" $((now - (i % 48) * 3600)) "$i"
  [ $((i % 10)) -eq 0 ] || printf 'EXPIRE session:%d 172800\n' "$i"
done | redis-cli -s "$demo/redis.sock" >/dev/null

# Config: the shipped policies, pointed at the throwaway stores.
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$demo/etc/audit-key"
cat >"$demo/etc/retentiond.yaml" <<YAML
version: 1
daemon:
  audit_log: $demo/audit.jsonl
  audit_key: \${file:$demo/etc/audit-key}
  timezone: Europe/Paris
  metrics: "off"
include: [policies.d/*.yaml]
YAML
cp policies/dora.yaml "$demo/etc/policies.d/dora.yaml"
sed "s#root: /srv/cqlp/tally-exports#root: $demo/tally-exports#" policies/cest-qui-le-pro.yaml \
  >"$demo/etc/policies.d/cest-qui-le-pro.yaml"
cat >"$demo/etc/policies.d/sessions.yaml" <<'YAML'
version: 1
datastores:
  sessions:
    kind: redis
    url: ${REDIS_URL}
rules:
  - name: web-sessions
    datastore: sessions
    category: "Sessions de navigation"
    keys: "session:*"
    clock: { hash_field: last_seen }
    retain: 12 hours
    action: delete
    max_ttl: 12 hours
    limits: { max_fraction: 1 }
YAML
mkdir -p "$demo/notify"
cat >"$demo/notify/notify.sh" <<NOTIFY
#!/bin/sh
# Demo notifier: a real site sends mail here; this one just keeps the JSON lines it receives.
cat >>"$demo/notify/sent.jsonl"
NOTIFY
chmod +x "$demo/notify/notify.sh"
sed -i "s#command: /usr/lib/retentiond/notify#command: $demo/notify/notify.sh#" "$demo/etc/policies.d/dora.yaml"

export SCALINGO_POSTGRESQL_URL="host=$pgdir dbname=dora user=postgres"
export DATABASE_URL="host=$pgdir dbname=cqlp user=postgres"
export REDIS_URL="$demo/redis.sock"
rd() { "$bin" --config "$demo/etc/retentiond.yaml" "$@"; }

say "retentiond check: the config, and every rule against its live datastore"
rd check

say "retentiond policy-table: the privacy policy's retention table, generated from the rules"
rd policy-table

say "retentiond purge --dry-run: what is due, held, without clock (nothing is changed)"
rd purge --dry-run

if rd report --format html --output "$demo/report.html" 2>/dev/null; then
  say "DPO report written to $demo/report.html"
fi

say "retentiond purge --now"
set +e
rd purge --now
status=$?
set -e
echo "exit code: $status"

say "After the purge"
psql_do -d dora -At -c "SELECT 'users_user: ' || count(*) || ' accounts left' FROM users_user" \
  -c "SELECT 'django_session: ' || count(*) || ' sessions left' FROM django_session" \
  -c "SELECT 'orientations anonymized: ' || count(*) FROM orientations_orientation WHERE is_anonymized"
psql_do -d cqlp -At -c "SELECT 'metric rows with a query string: ' || count(*) FROM metric WHERE url LIKE '%?%'" \
  -c "SELECT 'log rows with request headers or query: ' || count(*) FROM log WHERE data->'request' ? 'headers' OR data->'request'->'url' ? 'parameters'"
echo "redis sessions left: $(redis-cli -s "$demo/redis.sock" dbsize)"
[ -f "$demo/notify/sent.jsonl" ] && echo "notices handed to the notifier: $(wc -l <"$demo/notify/sent.jsonl")"

say "30 days later (simulated by ageing the notices): the noticed accounts that did not come back go"
psql_do -d dora -c "UPDATE retentiond.notice SET retentiond_noticed_at = retentiond_noticed_at - interval '30 days'"
set +e
rd purge --now --rule dora-accounts
status2=$?
set -e
[ "$status" -eq 0 ] && status=$status2
psql_do -d dora -At -c "SELECT 'users_user: ' || count(*) || ' accounts left' FROM users_user"

say "retentiond audit verify"
rd audit verify
say "retentiond audit prove: was account 401 (unused for 401 days) deleted? and account 2 (used 2 days ago)?"
rd audit prove --rule dora-accounts --key 401
rd audit prove --rule dora-accounts --key 2
echo
echo "Audit log: $demo/audit.jsonl (digests only: no key, no e-mail)"
exit "$status"
