/* auth/outbox.h: delivery of the email_outbox table over SMTP (issue 6).
 *
 * Verification and password-reset mails are not sent by the request that makes them: the
 * request commits a row to email_outbox (state 'pending') and calls outbox_wake. A sender thread
 * of its own drains the table with libcurl's SMTP client towards TESSERA_SMTP_URL, so a relay
 * that is down or slow never holds a request, and no mail is lost: a row leaves 'pending' only
 * as 'sent' or, after OUTBOX_ATTEMPTS_MAX attempts or a permanent refusal, 'failed'.
 *
 * Rows are claimed with FOR UPDATE SKIP LOCKED, so several instances drain one table without
 * sending a message twice. A row left in 'sending' by a crash is taken again once it is older
 * than OUTBOX_LEASE_S: delivery is at least once, never silently dropped (a crash between the
 * relay's "250" and the commit of 'sent' sends it again; the Message-ID stays the same so a
 * receiving system can tell). Every state change is committed before the next message.
 *
 * Everything here blocks (libpq, libcurl): never on a shard loop (DESIGN §1). Functions return
 * 0 (or a count) or -TE_xxx (core/err.h). The log names a row by id and says what became of it;
 * it never holds a body (it carries one-time links), an SMTP or Postgres URL (they may carry a
 * password) or a server's reply text. */
#ifndef TESSERA_AUTH_OUTBOX_H
#define TESSERA_AUTH_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

/* A claimed row is someone's for this long: a row in 'sending' whose updated_at is older is
 * taken to belong to a sender that died, and is claimed again. Five minutes: far beyond one
 * batch's worst case (the assertion in outbox.c), short enough that a crash delays a
 * verification mail by minutes, not hours. */
#define OUTBOX_LEASE_S 300
/* Retry after a transient failure: OUTBOX_BACKOFF_BASE_MS doubled per attempt, capped at
 * OUTBOX_BACKOFF_CAP_MS, the second half of each delay drawn at random so instances that failed
 * together do not retry together. 5 s .. 15 min: a relay restart is retried within seconds, a
 * long outage costs the relay a few connections an hour. */
#define OUTBOX_BACKOFF_BASE_MS 5000u
#define OUTBOX_BACKOFF_CAP_MS (15u * 60 * 1000)
/* Attempts before a row is 'failed': with the delays above, about 3 h 45 min of trying, longer
 * than a one-time link stays useful. */
#define OUTBOX_ATTEMPTS_MAX 20
/* One SMTP transaction, all included (connect, TLS, greeting, transfer): a relay that accepts
 * and never answers costs this long at most (CURLOPT_TIMEOUT). */
#define OUTBOX_SMTP_TIMEOUT_S 30
/* Connecting to the relay (CURLOPT_CONNECTTIMEOUT), within the above. */
#define OUTBOX_SMTP_CONNECT_TIMEOUT_S 10
/* Rows claimed at once: the lease must outlast a whole batch delivered at the worst pace. */
#define OUTBOX_BATCH_MAX 4
/* struct outbox_config's defaults for its zero values. A poll every 5 s picks up what another
 * instance enqueued (a local enqueue calls outbox_wake) for one indexed query per poll. */
#define OUTBOX_POLL_INTERVAL_DEFAULT_MS 5000u
#define OUTBOX_BATCH_DEFAULT 4
/* A last_error as stored: our own words, never the server's reply. */
#define OUTBOX_ERROR_TEXT_MAX 160
/* An address, RFC 5321 §4.5.3.1.3: a path is 256 octets with its angle brackets. */
#define OUTBOX_ADDRESS_MAX 254

/* Where and as whom to deliver. */
struct outbox_smtp {
    const char *url;  /* smtp://host[:port][/helo-domain] or smtps://…, userinfo for AUTH;
                       * never logged. smtp:// with userinfo requires STARTTLS. */
    const char *from; /* envelope sender and From: a bare address (outbox_address_valid) */
    /* Polled during a delivery and between messages; true stops the drain early (rows not yet
     * attempted go back to 'pending'). May be NULL. */
    bool (*should_stop)(void *arg);
    void *arg;
};

/* What one drain did. */
struct outbox_drain_stats {
    int claimed; /* rows taken */
    int sent;    /* -> 'sent' */
    int retried; /* transient failure -> 'pending' with a later next_attempt_at */
    int failed;  /* -> 'failed' (refused, invalid, or attempts exhausted) */
    int released; /* not attempted (stopping) -> 'pending' as they were */
};

/* Claims up to batch (1..OUTBOX_BATCH_MAX) due rows (pending and due, or sending past the
 * lease), delivers each and commits its outcome before the next. Blocking. stats may be NULL.
 * Returns the number of rows claimed (0: nothing due) or -TE_IO (database: logged; rows already
 * claimed are covered by the lease) or -TE_INVAL (batch, smtp). */
int outbox_drain_once(PGconn *conn, const struct outbox_smtp *smtp, int batch,
                      struct outbox_drain_stats *stats);

/* Whether text is an address outbox will deliver to or from: a single mailbox local@domain
 * (RFC 5321 §4.1.2 Mailbox: dot-atom local part, LDH domain of at least two labels), no
 * display name, comment, quoting, space or control character, at most OUTBOX_ADDRESS_MAX. */
bool outbox_address_valid(const char *text);

/* ------------------------------------------------------------------ the sender thread */

struct outbox_config {
    const char *pg_url;        /* copied; never logged */
    const char *smtp_url;      /* copied; never logged; must be set */
    const char *from;          /* copied; a valid address */
    uint32_t poll_interval_ms; /* 0: OUTBOX_POLL_INTERVAL_DEFAULT_MS */
    int batch;                 /* 0: OUTBOX_BATCH_DEFAULT; at most OUTBOX_BATCH_MAX */
};

struct outbox_sender;

/* Starts the sender thread: it drains (outbox_drain_once) whenever woken and at least every
 * poll interval, and at once again after a full batch. Postgres or the relay being down is
 * logged and retried. Returns 0 and *out, -TE_INVAL (config) or -TE_NOMEM / -TE_IO (thread). */
int outbox_sender_start(const struct outbox_config *cfg, struct outbox_sender **out);

/* A mail was committed to the outbox: drain now rather than at the next poll. Never blocks on
 * I/O (a mutex held for a few instructions), callable from any thread. 0, or -TE_CLOSED when
 * the sender is stopping. */
int outbox_wake(struct outbox_sender *s);

/* Stops the sender: aborts a delivery in flight (within about a second: libcurl's progress
 * callback), cancels a statement in flight, joins and frees. Returns within
 * OUTBOX_PG_CONNECT_TIMEOUT_S (a connection attempt in progress) plus a few statements at
 * worst. An aborted delivery goes back to 'pending'. NULL is allowed. */
void outbox_sender_stop(struct outbox_sender *s);

/* Postgres connection attempts of the sender (connect_timeout), and its statements. */
#define OUTBOX_PG_CONNECT_TIMEOUT_S 5
#define OUTBOX_STATEMENT_TIMEOUT_MS 10000

#endif
