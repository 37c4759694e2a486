/* core/config.c: TESSERA_* environment variables, parsed strictly. */
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


struct config_uint {
    const char *name;
    size_t offset;
    uint32_t fallback;
    uint32_t min;
    uint32_t max;
    const char *help;
};

#define CONFIG_FIELD(f) offsetof(struct config, f)

/* Defaults are DESIGN §6; proto/http1.h holds the same numbers as its defaults. */
static const struct config_uint config_uints[] = {
    { "TESSERA_HEADER_TIMEOUT_MS", CONFIG_FIELD(header_timeout_ms), 10000, 100, 3600000,
      "time from a request's first byte to the end of its head (DESIGN §6)" },
    { "TESSERA_BODY_TIMEOUT_MS", CONFIG_FIELD(body_timeout_ms), 30000, 100, 3600000,
      "time from the end of a request's head to the end of its body" },
    { "TESSERA_IDLE_TIMEOUT_MS", CONFIG_FIELD(idle_timeout_ms), 60000, 100, 86400000,
      "keep-alive idle time, and time allowed to a client that stops reading" },
    { "TESSERA_SHUTDOWN_TIMEOUT_MS", CONFIG_FIELD(shutdown_timeout_ms), 10000, 0, 600000,
      "on SIGTERM, how long in-flight requests may take to finish" },
    { "TESSERA_MAX_HEAD_BYTES", CONFIG_FIELD(head_bytes_max), 8192, 1024, 65536,
      "request line + header section (431 above)" },
    { "TESSERA_MAX_BODY_BYTES", CONFIG_FIELD(body_bytes_max), 65536, 0, 16777216,
      "request body (413 above)" },
    { "TESSERA_MAX_HEADER_FIELDS", CONFIG_FIELD(header_fields_max), 64, 1,
      CONFIG_HEADER_FIELDS_MAX, "header field lines (431 above)" },
    { "TESSERA_MAX_CONNECTIONS", CONFIG_FIELD(connections_max), 65536, 1, 1048576,
      "connections per shard (a preallocated slab)" },
    /* A Postgres backend runs one statement at a time, pipelined or not: with one connection
     * a shard's writes used at most one core of Postgres (perf/login: 0.61 of a core busy, the
     * server's at 0.43, neither saturated). Two let Postgres use a second core per shard. */
    { "TESSERA_PG_CONNECTIONS", CONFIG_FIELD(pg_connections), 2, 1, CONFIG_PG_CONNECTIONS_MAX,
      "Postgres primary connections per shard (each pipelined); a query takes the least busy" },
    { "TESSERA_PG_QUERY_TIMEOUT_MS", CONFIG_FIELD(pg_query_timeout_ms), 2000, 10, 60000,
      "longest wait for Postgres per query before 503 + Retry-After (issue 4)" },
    { "TESSERA_KEY_ROTATE_AFTER_S", CONFIG_FIELD(key_rotate_after_s), 7776000, 0, 315360000,
      "age at which a tenant's active signing key is rotated; 0: only by hand" },
    { "TESSERA_KEY_ROTATION_CHECK_S", CONFIG_FIELD(key_rotation_check_s), 3600, 1, 86400,
      "how often the scheduled rotation looks for keys due" },
    { "TESSERA_ARGON2_M_KIB", CONFIG_FIELD(argon2_m_kib), 19456, 8, 1048576,
      "Argon2id memory per password hash, KiB (DESIGN §4: 19 MiB)" },
    { "TESSERA_ARGON2_T", CONFIG_FIELD(argon2_t), 2, 1, 16, "Argon2id passes" },
    { "TESSERA_ARGON2_P", CONFIG_FIELD(argon2_p), 1, 1, 16, "Argon2id lanes" },
    { "TESSERA_VERIFY_CACHE", CONFIG_FIELD(verify_cache), 1, 0, 1,
      "1: each shard caches verified access tokens until exp; 0: verify every time" },
    { "TESSERA_RATE_CLIENT_PER_S", CONFIG_FIELD(rate_client_per_s), 2000, 0, 10000000,
      "token, introspection and revocation requests per client_id per second; 0: no limit" },
    { "TESSERA_RATE_ADDRESS_PER_S", CONFIG_FIELD(rate_address_per_s), 2000, 0, 10000000,
      "the same per source address; 0: no limit" },
    { "TESSERA_RATE_BURST_S", CONFIG_FIELD(rate_burst_s), 2, 0, 3600,
      "a burst of this many seconds' worth of requests passes at once" },
    /* SECURITY P05 (auth/auth_int.h AUTH_RATE_ACCOUNT_BURST has the reasoning): a person
     * retyping a password never waits; 10,000 guesses at one account take 5.5 hours. */
    { "TESSERA_RATE_ACCOUNT_PER_MIN", CONFIG_FIELD(rate_account_per_min), 30, 0, 10000000,
      "login tries per submitted username or email per minute, whatever the address; 0: no limit" },
    /* Mail floods (auth/auth_int.h AUTH_RATE_RECIPIENT_BURST): a victim's inbox is not filled
     * from many addresses; a person asking again after a lost mail never waits. */
    { "TESSERA_RATE_RECIPIENT_PER_HOUR", CONFIG_FIELD(rate_recipient_per_hour), 5, 0, 10000000,
      "sign-up, reset and verification mails per submitted address per hour; 0: no limit" },
    /* Audit events without a change of their own (auth/audit_batch.c): the longest wait
     * before their batch is written, and what a crash (not a SIGTERM) may lose of them. */
    { "TESSERA_AUDIT_FLUSH_MS", CONFIG_FIELD(audit_flush_ms), 100, 1, 60000,
      "a token issued or a failed client authentication is written to the audit log within this" },
    /* Keycloak's event expiration and Auth0's log retention: off by default (an audit trail
     * is often kept for compliance), bounded so the upkeep's interval arithmetic stays small. */
    { "TESSERA_AUDIT_RETENTION_DAYS", CONFIG_FIELD(audit_retention_days), 0, 0, 36500,
      "audit log rows older than this many days are deleted by the hourly upkeep; 0: kept" },
};

static int config_parse_u32(const char *text, uint32_t min, uint32_t max, uint32_t *out)
{
    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int config_bad(FILE *err, const char *name, const char *value, const char *why)
{
    fprintf(err, "tessera: %s=\"%s\" is invalid: %s\n", name, value, why);
    return 1;
}

/* "a.b.c.d:port" or "[v6]:port". */
static int config_parse_listen(struct config *cfg, const char *text)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof(host) || colon == text)
        return -1;
    uint32_t port;
    if (config_parse_u32(colon + 1, 0, 65535, &port) != 0)
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    memset(&cfg->listen_addr, 0, sizeof(cfg->listen_addr));
    size_t hl = strlen(host);
    if (host[0] == '[' && host[hl - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&cfg->listen_addr;
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -1;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        cfg->listen_addr_len = sizeof(*a6);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&cfg->listen_addr;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -1;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    cfg->listen_addr_len = sizeof(*a4);
    return 0;
}

static int config_copy_path(FILE *err, const char *name, char *dst, size_t cap)
{
    const char *v = getenv(name);
    dst[0] = '\0';
    if (v == NULL || v[0] == '\0')
        return 0;
    if (strlen(v) >= cap)
        return config_bad(err, name, "…", "too long");
    if (access(v, R_OK) != 0)
        return config_bad(err, name, v, "not a readable file");
    strcpy(dst, v);
    return 0;
}

static int config_load_basics(struct config *cfg, FILE *err)
{
    int bad = 0;
    const char *v = getenv("TESSERA_LISTEN");
    v = v ? v : "127.0.0.1:8080";
    if (strlen(v) >= sizeof(cfg->listen_text) || config_parse_listen(cfg, v) != 0)
        bad += config_bad(err, "TESSERA_LISTEN", v, "expected address:port, e.g. 127.0.0.1:8080");
    else
        strcpy(cfg->listen_text, v);

    v = getenv("TESSERA_PUBLIC_URL");
    v = v ? v : "http://localhost:8080";
    if (strlen(v) >= sizeof(cfg->public_url) ||
        (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) ||
        v[strlen(v) - 1] == '/')
        bad += config_bad(err, "TESSERA_PUBLIC_URL", v, "expected http(s)://host[:port][/path], no trailing /");
    else
        strcpy(cfg->public_url, v);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->shards = cpus > 0 ? (unsigned)cpus : 1;
    if (cfg->shards > CONFIG_SHARDS_MAX)
        cfg->shards = CONFIG_SHARDS_MAX;
    if ((v = getenv("TESSERA_SHARDS")) != NULL &&
        config_parse_u32(v, 1, CONFIG_SHARDS_MAX, &cfg->shards) != 0)
        bad += config_bad(err, "TESSERA_SHARDS", v, "expected 1 to 256");

    cfg->workers = cfg->shards < 2 ? 2 : cfg->shards;
    if ((v = getenv("TESSERA_WORKERS")) != NULL &&
        config_parse_u32(v, 1, CONFIG_WORKERS_MAX, &cfg->workers) != 0)
        bad += config_bad(err, "TESSERA_WORKERS", v, "expected 1 to 256");

    cfg->log_level = LOG_INFO;
    if ((v = getenv("TESSERA_LOG_LEVEL")) != NULL && log_level_parse(v, &cfg->log_level) != 0)
        bad += config_bad(err, "TESSERA_LOG_LEVEL", v, "expected debug, info, warn or error");

    cfg->access_log = true;
    if ((v = getenv("TESSERA_ACCESS_LOG")) != NULL) {
        if (strcmp(v, "on") == 0 || strcmp(v, "off") == 0)
            cfg->access_log = strcmp(v, "on") == 0;
        else
            bad += config_bad(err, "TESSERA_ACCESS_LOG", v, "expected on or off");
    }
    return bad;
}

/* A connection URL: only its scheme is checked here (the client reports the rest when it
 * connects), and it is never echoed, since it may carry a password. */
static int config_copy_url(FILE *err, const char *name, const char *const schemes[], char *dst,
                           size_t cap)
{
    const char *v = getenv(name);
    dst[0] = '\0';
    if (v == NULL || v[0] == '\0')
        return 0;
    bool known = false;
    for (size_t i = 0; schemes[i] != NULL && !known; i++)
        known = strncmp(v, schemes[i], strlen(schemes[i])) == 0;
    if (!known || strlen(v) >= cap)
        return config_bad(err, name, "(not shown: it may hold a password)",
                          strlen(v) >= cap ? "too long" : "unknown scheme");
    strcpy(dst, v);
    return 0;
}

static int config_load_storage(struct config *cfg, FILE *err)
{
    static const char *const pg_schemes[] = { "postgres://", "postgresql://", NULL };
    static const char *const redis_schemes[] = { "redis://", NULL };
    int bad = config_copy_url(err, "TESSERA_PG_URL", pg_schemes, cfg->pg_url, sizeof(cfg->pg_url));
    bad += config_copy_url(err, "TESSERA_REDIS_URL", redis_schemes, cfg->redis_url,
                           sizeof(cfg->redis_url));
    bad += config_copy_url(err, "TESSERA_PG_REPLICA_URL", pg_schemes, cfg->pg_replica_url,
                           sizeof(cfg->pg_replica_url));
    if (cfg->pg_replica_url[0] && !cfg->pg_url[0]) {
        fprintf(err, "tessera: TESSERA_PG_REPLICA_URL needs TESSERA_PG_URL (writes go to the primary)\n");
        bad++;
    }
    const char *v = getenv("TESSERA_AUTO_MIGRATE");
    cfg->auto_migrate = false;
    if (v != NULL && strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
        bad += config_bad(err, "TESSERA_AUTO_MIGRATE", v, "expected 0 or 1");
    else if (v != NULL)
        cfg->auto_migrate = strcmp(v, "1") == 0;
    return bad;
}

/* A bare address local@domain: one '@' with something on both sides, a dot in the domain, no
 * space, control character, angle bracket, comma or quote (a display name or a list would be
 * header syntax, and CR/LF header injection). auth/outbox.c checks the full grammar again. */
static bool config_mail_address_plausible(const char *v)
{
    const char *at = strchr(v, '@');
    if (at == NULL || at == v || strchr(at + 1, '@') != NULL || strchr(at + 1, '.') == NULL ||
        at[1] == '.' || v[strlen(v) - 1] == '.')
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || strchr("<>,;:\"()[]\\", c) != NULL)
            return false;
    }
    return true;
}

/* TESSERA_SMTP_URL (issue 6: verification and reset mails; unset: none are sent) and what it
 * needs: TESSERA_SMTP_FROM, and TESSERA_PG_URL (the email_outbox table). After the storage. */
static int config_load_smtp(struct config *cfg, FILE *err)
{
    static const char *const smtp_schemes[] = { "smtp://", "smtps://", NULL };
    int bad = config_copy_url(err, "TESSERA_SMTP_URL", smtp_schemes, cfg->smtp_url,
                              sizeof(cfg->smtp_url));
    const char *v = getenv("TESSERA_SMTP_FROM");
    cfg->smtp_from[0] = '\0';
    if (v != NULL && v[0] != '\0') {
        bool long_value = strlen(v) >= sizeof(cfg->smtp_from);
        if (long_value || !config_mail_address_plausible(v))
            bad += config_bad(err, "TESSERA_SMTP_FROM", long_value ? "…" : v,
                              "expected a bare address, e.g. no-reply@example.com");
        else
            strcpy(cfg->smtp_from, v);
    }
    if (cfg->smtp_url[0] != '\0' && cfg->smtp_from[0] == '\0' && (v == NULL || v[0] == '\0')) {
        fprintf(err, "tessera: TESSERA_SMTP_URL needs TESSERA_SMTP_FROM (the sender address)\n");
        bad++;
    }
    if (cfg->smtp_url[0] != '\0' && cfg->pg_url[0] == '\0') {
        fprintf(err, "tessera: TESSERA_SMTP_URL needs TESSERA_PG_URL (mails wait in its outbox)\n");
        bad++;
    }
    return bad;
}

/* TESSERA_TRUSTED_PROXIES: addresses or ranges separated by commas (and spaces). */
static int config_load_trusted_proxies(struct config *cfg, FILE *err)
{
    const char *v = getenv("TESSERA_TRUSTED_PROXIES");
    if (v == NULL)
        return 0;
    for (const char *p = v; *p != '\0';) {
        p += strspn(p, " ,");
        size_t len = strcspn(p, " ,");
        if (len == 0)
            break;
        if (cfg->trusted_proxies_count == CONFIG_TRUSTED_PROXIES_MAX)
            return config_bad(err, "TESSERA_TRUSTED_PROXIES", v, "at most 32 addresses or ranges");
        if (cidr_parse(p, len, &cfg->trusted_proxies[cfg->trusted_proxies_count]) != 0)
            return config_bad(err, "TESSERA_TRUSTED_PROXIES", v,
                              "expected IP addresses or CIDR ranges (10.0.0.0/8, 2001:db8::/32) "
                              "separated by commas, no bits set past a prefix");
        cfg->trusted_proxies_count++;
        p += len;
    }
    return 0;
}

int config_load(struct config *cfg, FILE *err)
{
    memset(cfg, 0, sizeof(*cfg));
    int bad = config_load_basics(cfg, err);
    for (size_t i = 0; i < sizeof(config_uints) / sizeof(config_uints[0]); i++) {
        const struct config_uint *u = &config_uints[i];
        uint32_t *field = (uint32_t *)((char *)cfg + u->offset);
        *field = u->fallback;
        const char *v = getenv(u->name);
        if (v != NULL && config_parse_u32(v, u->min, u->max, field) != 0) {
            char why[96];
            snprintf(why, sizeof(why), "expected an integer from %u to %u", u->min, u->max);
            bad += config_bad(err, u->name, v, why);
        }
    }
    bad += config_load_storage(cfg, err);
    bad += config_load_smtp(cfg, err);
    bad += config_load_trusted_proxies(cfg, err);
    bad += config_copy_path(err, "TESSERA_TLS_CERT_FILE", cfg->tls_cert_file, sizeof(cfg->tls_cert_file));
    bad += config_copy_path(err, "TESSERA_TLS_KEY_FILE", cfg->tls_key_file, sizeof(cfg->tls_key_file));
    if ((cfg->tls_cert_file[0] == '\0') != (cfg->tls_key_file[0] == '\0')) {
        fprintf(err, "tessera: TESSERA_TLS_CERT_FILE and TESSERA_TLS_KEY_FILE must be set together\n");
        bad++;
    }
    return bad;
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "Environment:\n"
            "  TESSERA_LISTEN          address:port of the HTTP listener (127.0.0.1:8080)\n"
            "  TESSERA_PUBLIC_URL      base of every issuer URL (http://localhost:8080)\n"
            "  TESSERA_SHARDS          shard threads, one per core (online CPUs)\n"
            "  TESSERA_WORKERS         worker threads for blocking work (max(2, shards))\n"
            "  TESSERA_LOG_LEVEL       debug, info, warn, error (info)\n"
            "  TESSERA_ACCESS_LOG      on or off (on)\n"
            "  TESSERA_TLS_CERT_FILE   PEM certificate chain: serve TLS (unset: plain HTTP)\n"
            "  TESSERA_TLS_KEY_FILE    PEM private key for it\n"
            "  TESSERA_PG_URL          Postgres URL (unset: no database)\n"
            "  TESSERA_PG_REPLICA_URL  read replica URL for read-only queries (unset: primary)\n"
            "  TESSERA_MASTER_KEY_FILE 64 hex digits, mode 0600: seals private signing keys\n"
            "  TESSERA_REDIS_URL       Redis URL (unset: single-instance mode)\n"
            "  TESSERA_AUTO_MIGRATE    1: migrate at start instead of refusing an old schema (0)\n"
            "  TESSERA_SMTP_URL        smtp://host:port or smtps://… relay for verification and\n"
            "                          reset mails (unset: no mail is sent)\n"
            "  TESSERA_SMTP_FROM       sender address of those mails, e.g. no-reply@example.com\n"
            "  TESSERA_TRUSTED_PROXIES proxies (addresses, CIDR ranges; comma-separated) whose\n"
            "                          X-Forwarded-For names the client (unset: none)\n");
    for (size_t i = 0; i < sizeof(config_uints) / sizeof(config_uints[0]); i++)
        fprintf(out, "  %-27s %s (%u)\n", config_uints[i].name, config_uints[i].help,
                config_uints[i].fallback);
}
