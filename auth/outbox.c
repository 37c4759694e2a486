/* auth/outbox.c: the email_outbox sender (see outbox.h).
 *
 * Contents: bounds; addresses and headers (what is refused before anything is sent); the
 * RFC 5322 message; SMTP delivery over libcurl and how its outcome is classified; the
 * statements (claim, outcome, release); outbox_drain_once; the sender thread. */
#include "auth/outbox.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "crypto/ct.h"

/* A whole batch delivered at the worst pace (every message running into CURLOPT_TIMEOUT, every
 * outcome statement into statement_timeout) ends well inside the lease, so a live sender's rows
 * are never taken by another instance. */
_Static_assert(OUTBOX_BATCH_MAX * (OUTBOX_SMTP_TIMEOUT_S + 2 * OUTBOX_STATEMENT_TIMEOUT_MS / 1000)
                   < OUTBOX_LEASE_S,
               "the lease outlasts a batch");
_Static_assert(OUTBOX_SMTP_CONNECT_TIMEOUT_S <= OUTBOX_SMTP_TIMEOUT_S, "connect within total");
_Static_assert(OUTBOX_BATCH_DEFAULT >= 1 && OUTBOX_BATCH_DEFAULT <= OUTBOX_BATCH_MAX, "batch");
_Static_assert(OUTBOX_BACKOFF_BASE_MS <= OUTBOX_BACKOFF_CAP_MS, "backoff base below its cap");
_Static_assert(OUTBOX_ATTEMPTS_MAX >= 1, "at least one attempt");

/* A subject as stored: longer ones are refused, not cut (a mail that says less than intended
 * is worse than a 'failed' row an operator sees). Encoded, it stays far below RFC 5322 §2.1.1's
 * 998-octet line limit per encoded-word line. */
#define OUTBOX_SUBJECT_BYTES_MAX 400
/* A body part as stored: verification and reset mails are a few KiB; 256 KiB is a generous
 * template, and bounds the memory of one message (about 4/3 of the bodies plus headers). */
#define OUTBOX_BODY_BYTES_MAX (256u * 1024)
/* Everything of a message but its encoded bodies: the headers, the MIME part headers and the
 * boundaries. The subject is the only long header, at most about 4/3 of its bytes plus 14 per
 * encoded-word. */
#define OUTBOX_HEADERS_BYTES_MAX 4096
/* RFC 2047 §2: an encoded-word is at most 75 characters. "=?UTF-8?B?" and "?=" take 12, which
 * leaves 63 for base64, so 60 (a multiple of 4): 45 bytes of subject per word. */
#define OUTBOX_WORD_BYTES_MAX 45
/* RFC 2045 §6.8: base64 lines of at most 76 characters; 57 bytes make exactly 76. */
#define OUTBOX_B64_LINE_BYTES 57
/* RFC 5321 §4.5.3.1.1 and .2: local part 64 octets, domain 255 (the path bound is tighter). */
#define OUTBOX_LOCAL_MAX 64
#define OUTBOX_LABEL_MAX 63 /* RFC 1035 §2.3.4 */
/* What went wrong with one attempt; last_error may add "attempts exhausted, last: " to it. */
#define OUTBOX_CAUSE_TEXT_MAX (OUTBOX_ERROR_TEXT_MAX - 32)
/* A Postgres error message as logged: one line of a few hundred bytes. */
#define OUTBOX_DB_ERROR_TEXT_MAX 512

_Static_assert(OUTBOX_HEADERS_BYTES_MAX > 1024 + OUTBOX_SUBJECT_BYTES_MAX * 2,
               "the header budget holds the longest encoded subject");

/* ------------------------------------------------------------------ addresses and headers */

/* RFC 5322 §3.2.3 atext: what a dot-atom local part may hold besides dots. */
static bool outbox_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool outbox_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* dot-atom: atext runs separated by single dots, none at either end. */
static bool outbox_local_valid(const char *s, size_t len)
{
    if (len == 0 || len > OUTBOX_LOCAL_MAX || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.' ? s[i + 1] == '.' : !outbox_atext((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* RFC 5321 §4.1.2 Domain: LDH labels, none starting or ending with '-', at least two (a bare
 * host name is not a plausible mailbox on the Internet). Address literals are refused. */
static bool outbox_domain_valid(const char *s)
{
    size_t label = 0;
    int labels = 1;
    for (size_t i = 0; s[i] != '\0'; i++) {
        if (s[i] == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            labels++;
            continue;
        }
        if (!outbox_ldh((unsigned char)s[i]) || (label == 0 && s[i] == '-'))
            return false;
        if (++label > OUTBOX_LABEL_MAX)
            return false;
    }
    return label > 0 && s[strlen(s) - 1] != '-' && labels >= 2;
}

bool outbox_address_valid(const char *text)
{
    size_t len = strlen(text);
    const char *at = strchr(text, '@');
    if (len > OUTBOX_ADDRESS_MAX || at == NULL || strchr(at + 1, '@') != NULL)
        return false; /* one mailbox: exactly one '@' (and so no list, no route) */
    return outbox_local_valid(text, (size_t)(at - text)) && outbox_domain_valid(at + 1);
}

/* Why a row is refused before any byte is sent, or NULL: header injection (a CR or LF would end
 * the header and let the rest be read as headers or a body, RFC 5322 §2.2), an address that is
 * not one plausible mailbox, or sizes beyond the bounds. */
static const char *outbox_refusal(const char *to, const char *subject, const char *text,
                                  const char *html)
{
    if (strpbrk(to, "\r\n") != NULL)
        return "refused: CR or LF in the recipient address";
    if (strpbrk(subject, "\r\n") != NULL)
        return "refused: CR or LF in the subject";
    if (!outbox_address_valid(to))
        return "refused: the recipient is not a single valid mailbox";
    if (strlen(subject) > OUTBOX_SUBJECT_BYTES_MAX)
        return "refused: subject too long";
    if (strlen(text) > OUTBOX_BODY_BYTES_MAX)
        return "refused: body too large";
    if (html != NULL && strlen(html) > OUTBOX_BODY_BYTES_MAX)
        return "refused: HTML body too large";
    return NULL;
}

/* ------------------------------------------------------------------ the message */

static const char outbox_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* RFC 4648 §4 base64 of bytes, with padding, no line breaks. */
static void outbox_b64(struct buf *out, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char quad[4] = { outbox_b64_alphabet[(v >> 18) & 63], outbox_b64_alphabet[(v >> 12) & 63],
                         i + 1 < n ? outbox_b64_alphabet[(v >> 6) & 63] : '=',
                         i + 2 < n ? outbox_b64_alphabet[v & 63] : '=' };
        buf_append(out, quad, sizeof(quad));
    }
}

/* A body part's content, base64 in lines of 76 (RFC 2045 §6.8): any UTF-8, any line length,
 * and no line of it can start with '.' (SMTP's end of data) or look like a boundary. Text is
 * put in canonical form first, every line break CRLF (RFC 2046 §4.1.1; RFC 2045 §6.8 asks for
 * it before base64), so a bare LF of the stored body becomes CRLF. */
static void outbox_b64_lines(struct buf *out, const char *text)
{
    unsigned char chunk[OUTBOX_B64_LINE_BYTES];
    size_t used = 0;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '\n' && (p == text || p[-1] != '\r')) {
            chunk[used++] = '\r';
            if (used == sizeof(chunk)) {
                outbox_b64(out, chunk, used);
                buf_append_cstr(out, "\r\n");
                used = 0;
            }
        }
        chunk[used++] = (unsigned char)*p;
        if (used == sizeof(chunk) || p[1] == '\0') {
            outbox_b64(out, chunk, used);
            buf_append_cstr(out, "\r\n");
            used = 0;
        }
    }
}

/* Subject as it is when it is printable ASCII and holds no "=?" (which a reader would take for
 * an encoded-word); else RFC 2047 §4.1 "B" encoded-words of whole UTF-8 characters (§5 (3)),
 * folded onto continuation lines (RFC 5322 §2.2.3). */
static void outbox_subject(struct buf *out, const char *subject)
{
    bool plain = strstr(subject, "=?") == NULL;
    for (const char *p = subject; *p != '\0' && plain; p++)
        plain = (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f;
    buf_append_cstr(out, "Subject: ");
    if (plain || subject[0] == '\0') {
        buf_append_cstr(out, subject);
        buf_append_cstr(out, "\r\n");
        return;
    }
    size_t n = strlen(subject), i = 0;
    while (i < n) {
        size_t end = i + OUTBOX_WORD_BYTES_MAX < n ? i + OUTBOX_WORD_BYTES_MAX : n;
        while (end < n && end > i + 1 && ((unsigned char)subject[end] & 0xc0) == 0x80)
            end--; /* never split a character: back up to the start of the one cut */
        buf_append_cstr(out, i == 0 ? "=?UTF-8?B?" : "\r\n =?UTF-8?B?");
        outbox_b64(out, (const unsigned char *)subject + i, end - i);
        buf_append_cstr(out, "?=");
        i = end;
    }
    buf_append_cstr(out, "\r\n");
}

/* RFC 5322 §3.3 date-time, in UTC, spelled in English whatever the locale. */
static void outbox_date(struct buf *out, time_t now)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    gmtime_r(&now, &tm);
    buf_printf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
               tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
               tm.tm_sec);
}

/* One text part's headers and content. */
static void outbox_part(struct buf *out, const char *type, const char *content)
{
    buf_printf(out, "Content-Type: %s; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\n", type);
    outbox_b64_lines(out, content);
}

/* The whole message. The Message-ID is the row id, the same on every attempt, so a receiver can
 * recognise a resend after a crash. The boundary holds "=_", which base64 content can never
 * hold (RFC 2045 §6.8 alphabet), so it cannot occur inside a part (RFC 2046 §5.1.1). */
static void outbox_message(struct buf *out, const char *id, const char *from, const char *to,
                           const char *subject, const char *text, const char *html)
{
    const char *at = strchr(from, '@');
    assert(at != NULL); /* outbox_address_valid(from): checked by outbox_drain_once */
    buf_printf(out, "From: %s\r\nTo: %s\r\n", from, to);
    outbox_subject(out, subject);
    outbox_date(out, time(NULL));
    buf_printf(out, "Message-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n", id, at + 1);
    if (html == NULL) {
        outbox_part(out, "text/plain", text);
        return;
    }
    buf_printf(out, "Content-Type: multipart/alternative; boundary=\"=_tessera_%s\"\r\n\r\n", id);
    buf_printf(out, "--=_tessera_%s\r\n", id);
    outbox_part(out, "text/plain", text); /* RFC 2046 §5.1.4: the plainest first */
    buf_printf(out, "--=_tessera_%s\r\n", id);
    outbox_part(out, "text/html", html);
    buf_printf(out, "--=_tessera_%s--\r\n", id);
}

/* Bytes outbox_message may need for these bodies. */
static size_t outbox_message_cap(const char *text, const char *html)
{
    /* canonical form: at most twice the bytes (every byte a LF that gains a CR) */
    size_t n = 2 * (strlen(text) + (html != NULL ? strlen(html) : 0));
    /* base64: 4 per 3 bytes, rounded up per body, plus CRLF per 57 bytes */
    return OUTBOX_HEADERS_BYTES_MAX + (n / 3 + 2) * 4 + (n / OUTBOX_B64_LINE_BYTES + 2) * 2 * 2;
}

/* ------------------------------------------------------------------ delivery */

enum outbox_outcome {
    OUTBOX_SENT,
    OUTBOX_TRANSIENT, /* try again later */
    OUTBOX_PERMANENT, /* never again: 'failed' */
    OUTBOX_ABORTED,   /* stopped by should_stop: not an attempt */
};

/* libcurl reads the message from here (CURLOPT_READFUNCTION). */
struct outbox_reader {
    const char *data;
    size_t len;
    size_t off;
};

static size_t outbox_read(char *dst, size_t size, size_t nitems, void *arg)
{
    struct outbox_reader *r = arg;
    size_t n = size * nitems;
    if (n > r->len - r->off)
        n = r->len - r->off;
    memcpy(dst, r->data + r->off, n);
    r->off += n;
    return n;
}

/* CURLOPT_XFERINFOFUNCTION: called about once a second even while the relay is silent, so a
 * stop interrupts a delivery without waiting for CURLOPT_TIMEOUT. Non-zero aborts. */
static int outbox_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    const struct outbox_smtp *smtp = arg;
    return smtp->should_stop != NULL && smtp->should_stop(smtp->arg) ? 1 : 0;
}

/* Whether an smtp:// URL carries credentials ("user:pass@" before the host). */
static bool outbox_url_has_userinfo(const char *url)
{
    const char *host = strstr(url, "://");
    host = host != NULL ? host + 3 : url;
    size_t authority = strcspn(host, "/?#");
    const char *at = memchr(host, '@', authority);
    return at != NULL;
}

static pthread_once_t outbox_curl_once = PTHREAD_ONCE_INIT;

static void outbox_curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Sets up one SMTP transaction on curl. smtps:// is TLS from the start; smtp:// upgrades with
 * STARTTLS when the relay offers it, and insists on it when the URL carries credentials, so a
 * password never crosses the network in the clear (RFC 8314 §3 prefers implicit TLS). */
static void outbox_curl_setup(CURL *curl, const struct outbox_smtp *smtp,
                              struct curl_slist *rcpt, struct outbox_reader *reader, char *errbuf)
{
    bool tls_required = strncmp(smtp->url, "smtp://", 7) == 0 && outbox_url_has_userinfo(smtp->url);
    char from[OUTBOX_ADDRESS_MAX + 3];
    snprintf(from, sizeof(from), "<%s>", smtp->from);
    curl_easy_setopt(curl, CURLOPT_URL, smtp->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(curl, CURLOPT_USE_SSL, tls_required ? (long)CURLUSESSL_ALL
                                                         : (long)CURLUSESSL_TRY);
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, outbox_read);
    curl_easy_setopt(curl, CURLOPT_READDATA, reader);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)reader->len);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)OUTBOX_SMTP_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)OUTBOX_SMTP_CONNECT_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* a thread of its own: no SIGALRM */
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, outbox_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, (void *)smtp);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
}

/* What a finished transaction means. Only a 5xx answer to RCPT TO is permanent (RFC 5321
 * §4.2.1: the mailbox does not exist or is refused); a 5xx elsewhere (greeting, AUTH, MAIL FROM,
 * after DATA) is the relay's or our configuration's and would fail every message alike, so it is
 * retried until the attempts run out. last_error gets libcurl's words for the code and the SMTP
 * code: never the server's text or the URL. */
static enum outbox_outcome outbox_classify(CURL *curl, CURLcode rc, const char *errbuf,
                                           char *why, size_t why_cap)
{
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK)
        return OUTBOX_SENT;
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(why, why_cap, "delivery interrupted by shutdown");
        return OUTBOX_ABORTED;
    }
    if (code >= 500 && code <= 599 && strncmp(errbuf, "RCPT failed", 11) == 0) {
        snprintf(why, why_cap, "recipient refused (SMTP %ld)", code);
        return OUTBOX_PERMANENT;
    }
    if (code > 0)
        snprintf(why, why_cap, "%s (SMTP %ld)", curl_easy_strerror(rc), code);
    else
        snprintf(why, why_cap, "%s", curl_easy_strerror(rc));
    return OUTBOX_TRANSIENT;
}

/* Sends message to one recipient. why gets the reason when it was not sent. */
static enum outbox_outcome outbox_deliver(const struct outbox_smtp *smtp, const char *to,
                                          const char *message, size_t len, char *why,
                                          size_t why_cap)
{
    pthread_once(&outbox_curl_once, outbox_curl_init);
    char rcpt_text[OUTBOX_ADDRESS_MAX + 3];
    snprintf(rcpt_text, sizeof(rcpt_text), "<%s>", to);
    CURL *curl = curl_easy_init();
    struct curl_slist *rcpt = curl != NULL ? curl_slist_append(NULL, rcpt_text) : NULL;
    if (rcpt == NULL) {
        curl_easy_cleanup(curl);
        snprintf(why, why_cap, "out of memory");
        return OUTBOX_TRANSIENT;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    struct outbox_reader reader = { .data = message, .len = len };
    outbox_curl_setup(curl, smtp, rcpt, &reader, errbuf);
    CURLcode rc = curl_easy_perform(curl);
    enum outbox_outcome outcome = outbox_classify(curl, rc, errbuf, why, why_cap);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(curl);
    return outcome;
}

/* ------------------------------------------------------------------ statements */

static void outbox_log_db(PGconn *conn)
{
    char text[OUTBOX_DB_ERROR_TEXT_MAX];
    snprintf(text, sizeof(text), "%s", PQerrorMessage(conn));
    text[strcspn(text, "\n")] = '\0';
    log_msg(LOG_ERROR, "outbox: database error", "error", text, NULL);
}

/* Runs a statement with text parameters; the result when it succeeded, else NULL (logged). */
static PGresult *outbox_exec(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    outbox_log_db(conn);
    PQclear(res);
    return NULL;
}

/* Takes up to batch due rows: pending and due, or sending past the lease (their sender died).
 * SKIP LOCKED: rows another sender is claiming now are left to it; once it commits they are
 * 'sending' with a fresh updated_at, which this WHERE no longer matches (Postgres re-checks it
 * on the newest row version before locking). Autocommit: the claim is durable on return. */
static PGresult *outbox_claim(PGconn *conn, int batch)
{
    char limit[16], lease[16];
    snprintf(limit, sizeof(limit), "%d", batch);
    snprintf(lease, sizeof(lease), "%d", OUTBOX_LEASE_S);
    const char *params[2] = { limit, lease };
    return outbox_exec(conn,
                       "WITH due AS (SELECT id FROM email_outbox WHERE (state = 'pending' AND "
                       "next_attempt_at <= now()) OR (state = 'sending' AND updated_at < now() - "
                       "make_interval(secs => $2::int)) ORDER BY next_attempt_at LIMIT $1::int "
                       "FOR UPDATE SKIP LOCKED) "
                       "UPDATE email_outbox e SET state = 'sending', attempts = e.attempts + 1, "
                       "updated_at = now() FROM due WHERE e.id = due.id RETURNING e.id::text, "
                       "e.to_address, e.subject, e.body_text, e.body_html, e.attempts::text",
                       2, params);
}

/* Every outcome statement matches the row only while it is still this claim's (state
 * 'sending', attempts as claimed): if the lease ran out and another sender took it, its state
 * is not overwritten. 0, or -TE_IO (logged; the lease brings the row back). */
static int outbox_update(PGconn *conn, const char *sql, const char *id, const char *attempts,
                         const char *p3, const char *p4)
{
    const char *params[4] = { id, attempts, p3, p4 };
    int n = p4 != NULL ? 4 : p3 != NULL ? 3 : 2;
    PGresult *res = outbox_exec(conn, sql, n, params);
    if (res == NULL)
        return -TE_IO;
    if (PQcmdTuples(res)[0] != '1')
        log_msg(LOG_WARN, "outbox: the row was no longer ours (lease expired), outcome dropped",
                "id", id, NULL);
    PQclear(res);
    return 0;
}

/* A body holds a one-time link, that is a live token in clear (DESIGN §4 keeps only their
 * SHA-256): once a row is final, 'sent' or 'failed', its bodies are wiped, so the outbox does
 * not keep working tokens at rest. The row itself (who, what subject, when, why it failed)
 * stays for the operator. */
static int outbox_mark_sent(PGconn *conn, const char *id, const char *attempts)
{
    return outbox_update(conn, "UPDATE email_outbox SET state = 'sent', sent_at = now(), "
                         "last_error = NULL, body_text = '', body_html = NULL, updated_at = now() "
                         "WHERE id = $1 AND state = 'sending' AND attempts = $2::int", id,
                         attempts, NULL, NULL);
}

static int outbox_mark_failed(PGconn *conn, const char *id, const char *attempts, const char *why)
{
    return outbox_update(conn, "UPDATE email_outbox SET state = 'failed', last_error = $3, "
                         "body_text = '', body_html = NULL, updated_at = now() WHERE id = $1 AND "
                         "state = 'sending' AND attempts = $2::int", id, attempts, why, NULL);
}

/* Back to 'pending' after delay_ms. */
static int outbox_mark_retry(PGconn *conn, const char *id, const char *attempts, const char *why,
                             uint32_t delay_ms)
{
    char delay[16];
    snprintf(delay, sizeof(delay), "%" PRIu32, delay_ms);
    return outbox_update(conn, "UPDATE email_outbox SET state = 'pending', last_error = $3, "
                         "next_attempt_at = now() + $4::bigint * interval '1 millisecond', "
                         "updated_at = now() WHERE id = $1 AND state = 'sending' AND attempts = "
                         "$2::int", id, attempts, why, delay);
}

/* Not attempted after all (stopping): as it was before the claim, due at once. */
static int outbox_release(PGconn *conn, const char *id, const char *attempts)
{
    return outbox_update(conn, "UPDATE email_outbox SET state = 'pending', attempts = attempts - "
                         "1, updated_at = now() WHERE id = $1 AND state = 'sending' AND attempts "
                         "= $2::int", id, attempts, NULL, NULL);
}

/* ------------------------------------------------------------------ draining */

/* The delay before attempt attempts + 1: base * 2^(attempts - 1) capped, of which the first half
 * is fixed and the second drawn at random ("equal jitter"). */
static uint32_t outbox_backoff_ms(int attempts)
{
    uint32_t delay = OUTBOX_BACKOFF_CAP_MS;
    if (attempts >= 1 && attempts < 32 &&
        (OUTBOX_BACKOFF_CAP_MS >> (attempts - 1)) >= OUTBOX_BACKOFF_BASE_MS)
        delay = OUTBOX_BACKOFF_BASE_MS << (attempts - 1);
    uint32_t r = 0;
    if (ct_random_bytes(&r, sizeof(r)) != 0)
        r = (uint32_t)time(NULL); /* jitter only: any spread will do */
    return delay / 2 + r % (delay / 2 + 1);
}

/* One claimed row, as the claim returned it. */
struct outbox_row {
    const char *id, *to, *subject, *text, *html, *attempts;
};

static bool outbox_stopping(const struct outbox_smtp *smtp)
{
    return smtp->should_stop != NULL && smtp->should_stop(smtp->arg);
}

/* Builds and sends one row. why gets the reason when it was not sent. */
static enum outbox_outcome outbox_send_row(const struct outbox_smtp *smtp,
                                           const struct outbox_row *row, char *why, size_t cap)
{
    const char *refusal = outbox_refusal(row->to, row->subject, row->text, row->html);
    if (refusal != NULL) {
        snprintf(why, cap, "%s", refusal);
        return OUTBOX_PERMANENT;
    }
    size_t mem_cap = outbox_message_cap(row->text, row->html);
    char *mem = malloc(mem_cap);
    if (mem == NULL) {
        snprintf(why, cap, "out of memory");
        return OUTBOX_TRANSIENT;
    }
    struct buf msg;
    buf_init(&msg, mem, mem_cap);
    outbox_message(&msg, row->id, smtp->from, row->to, row->subject, row->text, row->html);
    assert(!msg.overflow); /* outbox_message_cap bounds every byte written */
    enum outbox_outcome outcome = outbox_deliver(smtp, row->to, msg.data, msg.len, why, cap);
    explicit_bzero(mem, msg.len); /* it holds a one-time link */
    free(mem);
    return outcome;
}

/* Delivers one claimed row and commits what became of it; counts it in stats. */
static int outbox_drain_row(PGconn *conn, const struct outbox_smtp *smtp,
                            const struct outbox_row *row, struct outbox_drain_stats *stats)
{
    char why[OUTBOX_ERROR_TEXT_MAX] = "", cause[OUTBOX_CAUSE_TEXT_MAX] = "";
    int attempts = atoi(row->attempts);
    enum outbox_outcome outcome = OUTBOX_PERMANENT;
    if (attempts <= OUTBOX_ATTEMPTS_MAX) /* more: taken back after a crash on its last attempt */
        outcome = outbox_send_row(smtp, row, cause, sizeof(cause));
    if (attempts > OUTBOX_ATTEMPTS_MAX ||
        (outcome == OUTBOX_TRANSIENT && attempts == OUTBOX_ATTEMPTS_MAX)) {
        snprintf(why, sizeof(why), "attempts exhausted, last: %s", cause);
        outcome = OUTBOX_PERMANENT;
    } else {
        snprintf(why, sizeof(why), "%s", cause);
    }
    switch (outcome) {
    case OUTBOX_SENT:
        stats->sent++;
        log_msg(LOG_INFO, "outbox: sent", "id", row->id, NULL);
        return outbox_mark_sent(conn, row->id, row->attempts);
    case OUTBOX_TRANSIENT:
        stats->retried++;
        log_msg(LOG_WARN, "outbox: not delivered, will retry", "id", row->id, "attempts",
                row->attempts, "error", why, NULL);
        return outbox_mark_retry(conn, row->id, row->attempts, why, outbox_backoff_ms(attempts));
    case OUTBOX_PERMANENT:
        stats->failed++;
        log_msg(LOG_ERROR, "outbox: failed for good", "id", row->id, "error", why, NULL);
        return outbox_mark_failed(conn, row->id, row->attempts, why);
    case OUTBOX_ABORTED:
        break;
    }
    stats->released++;
    return outbox_release(conn, row->id, row->attempts);
}

int outbox_drain_once(PGconn *conn, const struct outbox_smtp *smtp, int batch,
                      struct outbox_drain_stats *stats)
{
    assert(conn != NULL);
    assert(smtp != NULL);
    struct outbox_drain_stats local;
    stats = stats != NULL ? stats : &local;
    memset(stats, 0, sizeof(*stats));
    if (batch < 1 || batch > OUTBOX_BATCH_MAX || smtp->url == NULL || smtp->from == NULL ||
        !outbox_address_valid(smtp->from))
        return -TE_INVAL;
    PGresult *res = outbox_claim(conn, batch);
    if (res == NULL)
        return -TE_IO;
    int rows = PQntuples(res), rc = 0;
    assert(rows <= batch);
    stats->claimed = rows;
    for (int i = 0; i < rows && rc == 0; i++) {
        struct outbox_row row = {
            .id = PQgetvalue(res, i, 0), .to = PQgetvalue(res, i, 1),
            .subject = PQgetvalue(res, i, 2), .text = PQgetvalue(res, i, 3),
            .html = PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4),
            .attempts = PQgetvalue(res, i, 5),
        };
        if (outbox_stopping(smtp)) {
            stats->released++;
            rc = outbox_release(conn, row.id, row.attempts);
        } else {
            rc = outbox_drain_row(conn, smtp, &row, stats);
        }
    }
    PQclear(res);
    return rc < 0 ? rc : rows;
}

/* ------------------------------------------------------------------ the sender thread */

struct outbox_sender {
    char *pg_url, *smtp_url, *from;
    uint32_t poll_interval_ms;
    int batch;
    struct outbox_smtp smtp;
    pthread_t thread;
    pthread_mutex_t mu;  /* guards woken, cancel, and stopping's writes */
    pthread_cond_t cond; /* CLOCK_MONOTONIC: outbox_wake, outbox_sender_stop */
    atomic_bool stopping; /* read without the mutex by libcurl's progress callback */
    bool woken;
    PGcancel *cancel;    /* of conn, so stop can interrupt a statement */
    PGconn *conn;        /* the sender thread's only */
};

static bool outbox_sender_should_stop(void *arg)
{
    struct outbox_sender *s = arg;
    return atomic_load(&s->stopping);
}

static void outbox_sender_disconnect(struct outbox_sender *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->cancel != NULL)
        PQfreeCancel(s->cancel);
    s->cancel = NULL;
    pthread_mutex_unlock(&s->mu);
    PQfinish(s->conn);
    s->conn = NULL;
}

/* A working connection, made anew when there is none or it broke. 0 or -TE_IO (logged; the
 * next pass tries again). The URL goes to libpq only, never to the log. */
static int outbox_sender_connect(struct outbox_sender *s)
{
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    if (s->conn != NULL)
        outbox_sender_disconnect(s);
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", OUTBOX_PG_CONNECT_TIMEOUT_S);
    /* connect_timeout after dbname: it overrides one the URL may carry, so stop stays bounded */
    const char *const keywords[] = { "dbname", "connect_timeout", NULL };
    const char *const values[] = { s->pg_url, timeout, NULL };
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    char sql[64];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %d", OUTBOX_STATEMENT_TIMEOUT_MS);
    PGresult *res = PQstatus(conn) == CONNECTION_OK ? outbox_exec(conn, sql, 0, NULL) : NULL;
    if (res == NULL) {
        if (PQstatus(conn) != CONNECTION_OK)
            log_msg(LOG_WARN, "outbox: cannot reach Postgres, retrying at the next poll", NULL);
        PQfinish(conn);
        return -TE_IO;
    }
    PQclear(res);
    s->conn = conn;
    pthread_mutex_lock(&s->mu);
    s->cancel = PQgetCancel(conn);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* One pass: connect if needed and drain one batch. Whether a full batch was claimed (more may
 * be due: drain again at once). */
static bool outbox_sender_pass(struct outbox_sender *s)
{
    struct outbox_drain_stats stats;
    int rc = outbox_sender_connect(s);
    if (rc == 0)
        rc = outbox_drain_once(s->conn, &s->smtp, s->batch, &stats);
    if (s->conn != NULL && PQstatus(s->conn) != CONNECTION_OK)
        outbox_sender_disconnect(s); /* the next pass reconnects */
    return rc == s->batch;
}

/* Sleeps the poll interval, or until woken or stopped. */
static void outbox_sender_wait(struct outbox_sender *s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += s->poll_interval_ms / 1000;
    deadline.tv_nsec += (long)(s->poll_interval_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stopping) && !s->woken) {
        if (pthread_cond_timedwait(&s->cond, &s->mu, &deadline) == ETIMEDOUT)
            break;
    }
    s->woken = false; /* a wake during the coming pass makes the next wait return at once */
    pthread_mutex_unlock(&s->mu);
}

static void *outbox_sender_main(void *arg)
{
    struct outbox_sender *s = arg;
    log_thread_init(-1, false);
    while (!atomic_load(&s->stopping)) {
        if (!outbox_sender_pass(s))
            outbox_sender_wait(s);
    }
    if (s->conn != NULL)
        outbox_sender_disconnect(s);
    return NULL;
}

static void outbox_sender_free(struct outbox_sender *s)
{
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s->pg_url);
    free(s->smtp_url);
    free(s->from);
    free(s);
}

/* The thread is made with every signal blocked: signals are the main thread's business. */
static int outbox_sender_spawn(struct outbox_sender *s)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, outbox_sender_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0 ? 0 : -TE_IO;
}

static bool outbox_config_valid(const struct outbox_config *cfg)
{
    return cfg->pg_url != NULL && cfg->smtp_url != NULL && cfg->from != NULL &&
           (strncmp(cfg->smtp_url, "smtp://", 7) == 0 ||
            strncmp(cfg->smtp_url, "smtps://", 8) == 0) &&
           outbox_address_valid(cfg->from) && cfg->batch >= 0 && cfg->batch <= OUTBOX_BATCH_MAX;
}

int outbox_sender_start(const struct outbox_config *cfg, struct outbox_sender **out)
{
    assert(cfg != NULL && out != NULL);
    if (!outbox_config_valid(cfg))
        return -TE_INVAL;
    pthread_once(&outbox_curl_once, outbox_curl_init); /* before any thread uses libcurl */
    struct outbox_sender *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -TE_NOMEM;
    s->pg_url = strdup(cfg->pg_url);
    s->smtp_url = strdup(cfg->smtp_url);
    s->from = strdup(cfg->from);
    if (s->pg_url == NULL || s->smtp_url == NULL || s->from == NULL) {
        free(s->pg_url), free(s->smtp_url), free(s->from), free(s);
        return -TE_NOMEM;
    }
    s->poll_interval_ms = cfg->poll_interval_ms ? cfg->poll_interval_ms
                                                : OUTBOX_POLL_INTERVAL_DEFAULT_MS;
    s->batch = cfg->batch ? cfg->batch : OUTBOX_BATCH_DEFAULT;
    s->smtp = (struct outbox_smtp){ .url = s->smtp_url, .from = s->from,
                                    .should_stop = outbox_sender_should_stop, .arg = s };
    atomic_init(&s->stopping, false);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&s->mu, NULL);
    int rc = outbox_sender_spawn(s);
    if (rc != 0) {
        outbox_sender_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int outbox_wake(struct outbox_sender *s)
{
    assert(s != NULL);
    pthread_mutex_lock(&s->mu);
    bool stopping = atomic_load(&s->stopping);
    s->woken = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return stopping ? -TE_CLOSED : 0;
}

void outbox_sender_stop(struct outbox_sender *s)
{
    if (s == NULL)
        return;
    char why[256];
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, true);
    if (s->cancel != NULL)
        PQcancel(s->cancel, why, sizeof(why)); /* best effort: a statement in flight ends now */
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    outbox_sender_free(s);
}
