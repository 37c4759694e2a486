/* core/config.h: the server's configuration, read from TESSERA_* environment
 * variables (and *_FILE for secrets in later issues), validated once at start. Each
 * bad value is named in one message on stderr; the caller exits 2. */
#ifndef TESSERA_CORE_CONFIG_H
#define TESSERA_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>

#include "core/cidr.h"
#include "core/log.h"

#define CONFIG_SHARDS_MAX 256  /* one per core; the mailbox matrix is shards² rings */
#define CONFIG_PG_CONNECTIONS_MAX 8 /* primary connections per shard */
#define CONFIG_WORKERS_MAX 256
#define CONFIG_PATH_BYTES_MAX 1024
#define CONFIG_URL_BYTES_MAX 512
#define CONFIG_HEADER_FIELDS_MAX 64 /* = HTTP1_HEADER_FIELDS_MAX, the parser's array size */
/* A sender address: RFC 5321 §4.5.3.1.3, a path is 256 octets with its angle brackets. */
#define CONFIG_MAIL_ADDRESS_BYTES_MAX 254
#define CONFIG_TRUSTED_PROXIES_MAX 32 /* ranges in TESSERA_TRUSTED_PROXIES */

struct config {
    struct sockaddr_storage listen_addr;
    socklen_t listen_addr_len;
    char listen_text[64];
    char public_url[CONFIG_URL_BYTES_MAX];
    unsigned shards;
    unsigned workers;
    enum log_level log_level;
    bool access_log;
    char tls_cert_file[CONFIG_PATH_BYTES_MAX]; /* empty: plain HTTP */
    char tls_key_file[CONFIG_PATH_BYTES_MAX];
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t shutdown_timeout_ms;
    uint32_t head_bytes_max;
    uint32_t body_bytes_max;
    uint32_t header_fields_max;
    uint32_t connections_max; /* per shard */
    char pg_url[CONFIG_URL_BYTES_MAX];    /* empty: no database (only the HTTP stack runs) */
    char redis_url[CONFIG_URL_BYTES_MAX]; /* empty: single-instance mode, no Redis */
    char pg_replica_url[CONFIG_URL_BYTES_MAX]; /* empty: every read goes to the primary */
    bool auto_migrate;                    /* migrate at start instead of refusing an old schema */
    uint32_t pg_connections;              /* primary connections per shard */
    uint32_t pg_query_timeout_ms;         /* a request's budget for one store wait (503 after) */
    uint32_t key_rotate_after_s;          /* scheduled signing-key rotation; 0: never */
    uint32_t key_rotation_check_s;        /* how often the rotator looks */
    uint32_t argon2_m_kib;                /* password hashing cost (DESIGN §4) */
    uint32_t argon2_t;
    uint32_t argon2_p;
    uint32_t verify_cache;                /* 1: cache verified tokens per shard; 0: off (benchmarks) */
    uint32_t rate_client_per_s;           /* OAuth requests per client per second; 0: no limit */
    uint32_t rate_address_per_s;          /* OAuth requests per source address per second; 0: none */
    uint32_t rate_burst_s;                /* bursts of this many seconds' worth are let through */
    uint32_t rate_account_per_min;        /* login tries per submitted name per minute; 0: none */
    uint32_t rate_recipient_per_hour;     /* mails asked for per submitted address per hour; 0: none */
    uint32_t audit_flush_ms;              /* a batched audit event waits at most this long */
    uint32_t audit_retention_days;        /* older audit rows are purged; 0: kept */
    char smtp_url[CONFIG_URL_BYTES_MAX];  /* smtp:// or smtps:// relay; empty: no mail is sent */
    char smtp_from[CONFIG_MAIL_ADDRESS_BYTES_MAX + 1]; /* sender address; set with smtp_url */
    /* Proxies whose X-Forwarded-For names the client (rate limits per address, audit rows,
     * sessions' address); none by default: the TCP peer is the client. */
    struct cidr trusted_proxies[CONFIG_TRUSTED_PROXIES_MAX];
    unsigned trusted_proxies_count;
};

/* Fills cfg from getenv. Returns 0, or the number of bad values (each reported on err). */
int config_load(struct config *cfg, FILE *err);

/* Writes the variables, their meaning and defaults (for --help). */
void config_print_help(FILE *out);

#endif
