/* tests/auth/test_outbox.c: auth/outbox.c against a real Postgres (TESSERA_TEST_PG_URL) and a
 * real SMTP server (Debian's python3-aiosmtpd writing a maildir); the parts that need them are
 * skipped (exit 77) when either is missing. What reaches the maildir is read back by Python's
 * email package, a MIME parser other than ours.
 *
 * Proves:
 *  - config: TESSERA_SMTP_URL takes smtp:// and smtps:// only and is never echoed (it may hold a
 *    password); it needs TESSERA_SMTP_FROM and TESSERA_PG_URL; a From that is not a bare address
 *    (display name, CR/LF, list) is refused; unset leaves both empty.
 *  - addresses: outbox_address_valid accepts plain mailboxes and refuses lists, display names,
 *    CR/LF, quoting, bare hosts, bad labels, over-long parts.
 *  - message: a long non-ASCII subject becomes RFC 2047 encoded-words of at most 75 characters,
 *    each of whole UTF-8 characters, folded; "=?" in an ASCII subject is encoded too; the
 *    message buffer holds the worst body (all line feeds) and the longest subject; base64 lines
 *    stay within 76; backoff stays within [delay/2, delay], doubling to its cap.
 *  - delivery: a verification-like mail (UTF-8 subject, text only) and a reset-like mail (text
 *    and HTML) each arrive exactly once with From, To, Subject, Date, Message-ID (the row id),
 *    MIME-Version and the right content types and bodies (line breaks in canonical CRLF form,
 *    lines of dots intact); rows 'sent' with sent_at; a second drain sends nothing.
 *  - relay down: rows go back to 'pending', attempts growing, next_attempt_at in the future,
 *    last_error set without the body's one-time token; once the relay is back, each mail
 *    arrives exactly once. A 451 on RCPT is retried, a 550 on RCPT is 'failed'.
 *  - header injection: CR/LF in the subject or the address, lists, display names and bare hosts
 *    are 'failed' with last_error and never reach the relay.
 *  - two drains on two connections at once deliver 24 mails, each exactly once.
 *  - a row left 'sending' past OUTBOX_LEASE_S is delivered; one inside the lease is left alone;
 *    one past the lease on its last attempt is 'failed' without being sent.
 *  - the sender thread delivers a mail enqueued after start when woken (its poll is a minute:
 *    the wake is what delivers it); it stops while a relay accepts and never answers, well
 *    before CURLOPT_TIMEOUT, and the interrupted mail is back to 'pending', not lost.
 * Elapsed-time bounds below are hang guards only. */
#include "auth/outbox.c"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "store/migrate.h"
#include "tests/store/pgtest.h"

/* Hang guards (seconds): far beyond what each wait needs. */
#define TEST_SINK_START_GUARD_S 30
#define TEST_DELIVERY_GUARD_S 30
/* Stopping while the relay hangs must not wait for CURLOPT_TIMEOUT. */
#define TEST_STOP_GUARD_S (OUTBOX_SMTP_TIMEOUT_S * 2 / 3)
/* Mails of the concurrent-drain case, and their recipients' names. */
#define TEST_CONCURRENT_MAILS 24
/* The maildir as read back: one line of JSON per message. */
#define TEST_DUMP_BYTES_MAX (256 * 1024)
#define TEST_PATH_MAX 512

static struct pgtest_db test_db;
static char test_dir[TEST_PATH_MAX];      /* temporary: maildir, helper scripts */
static char test_python[TEST_PATH_MAX];   /* an interpreter that has aiosmtpd */
static char test_tenant_id[CT_UUID_TEXT_LEN + 1];
static pid_t test_sink_pid;
static int test_sink_port;

static double test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ config */

static int test_config_with(const char *url, const char *from, struct config *cfg, char *text,
                            size_t cap)
{
    if (url != NULL)
        setenv("TESSERA_SMTP_URL", url, 1);
    else
        unsetenv("TESSERA_SMTP_URL");
    if (from != NULL)
        setenv("TESSERA_SMTP_FROM", from, 1);
    else
        unsetenv("TESSERA_SMTP_FROM");
    memset(text, 0, cap);
    FILE *err = fmemopen(text, cap, "w");
    int bad = config_load(cfg, err);
    fclose(err);
    return bad;
}

static void test_config(void)
{
    struct config cfg;
    char text[1024];
    const char *pg = getenv("TESSERA_PG_URL");
    char pg_saved[CONFIG_URL_BYTES_MAX] = "";
    if (pg != NULL)
        snprintf(pg_saved, sizeof(pg_saved), "%s", pg);
    unsetenv("TESSERA_PG_URL");
    CHECK(test_config_with("smtp://127.0.0.1:2525", "no-reply@example.com", &cfg, text,
                           sizeof(text)) == 1);
    CHECK(strstr(text, "TESSERA_PG_URL") != NULL);
    setenv("TESSERA_PG_URL", "postgresql://tessera@127.0.0.1/tessera", 1);
    CHECK(test_config_with(NULL, NULL, &cfg, text, sizeof(text)) == 0);
    CHECK(cfg.smtp_url[0] == '\0' && cfg.smtp_from[0] == '\0');
    CHECK(test_config_with("smtp://127.0.0.1:2525", "no-reply@example.com", &cfg, text,
                           sizeof(text)) == 0);
    CHECK(strcmp(cfg.smtp_url, "smtp://127.0.0.1:2525") == 0);
    CHECK(strcmp(cfg.smtp_from, "no-reply@example.com") == 0);
    CHECK(test_config_with("smtps://u:pw@mail.example.com", "a@example.com", &cfg, text,
                           sizeof(text)) == 0);
    CHECK(test_config_with("http://u:s3cret@relay", "a@example.com", &cfg, text,
                           sizeof(text)) == 1);
    CHECK(strstr(text, "TESSERA_SMTP_URL") != NULL && strstr(text, "s3cret") == NULL);
    CHECK(test_config_with("smtp://u:s3cret@relay", NULL, &cfg, text, sizeof(text)) == 1);
    CHECK(strstr(text, "TESSERA_SMTP_FROM") != NULL && strstr(text, "s3cret") == NULL);
    static const char *const bad_from[] = {
        "Tessera <a@example.com>", "a@example.com\r\nBcc: b@example.com", "a@example.com, b@c.d",
        "no-at-sign", "@example.com", "a@localhost", "a@b@example.com", "a b@example.com",
    };
    for (size_t i = 0; i < sizeof(bad_from) / sizeof(bad_from[0]); i++) {
        CHECK(test_config_with("smtp://127.0.0.1:2525", bad_from[i], &cfg, text,
                               sizeof(text)) == 1);
        CHECK(strstr(text, "TESSERA_SMTP_FROM") != NULL);
    }
    unsetenv("TESSERA_SMTP_URL");
    unsetenv("TESSERA_SMTP_FROM");
    if (pg != NULL)
        setenv("TESSERA_PG_URL", pg_saved, 1);
    else
        unsetenv("TESSERA_PG_URL");
}

/* ------------------------------------------------------------------ pure parts */

static void test_addresses(void)
{
    static const char *const good[] = {
        "alice@example.com", "a.b+tag@sub.example.co.uk", "x_y-z!#$%&'*/=?^`{|}~@a-b.example",
        "1@2.io",
    };
    static const char *const bad[] = {
        "", "alice", "@example.com", "alice@", "alice@localhost", "a@b@example.com",
        "Alice <alice@example.com>", "alice@example.com\r\nBcc: x@example.com", "a\n@example.com",
        "a b@example.com", "\"a\"@example.com", "a..b@example.com", ".a@example.com",
        "a.@example.com", "a@-example.com", "a@example-.com", "a@example..com", "a@example.com.",
        "a@[127.0.0.1]", "a,b@example.com", "a@exa_mple.com", "é@example.com", "a@exämple.com",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(outbox_address_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!outbox_address_valid(bad[i]));
    char local[OUTBOX_LOCAL_MAX + 2], addr[OUTBOX_ADDRESS_MAX + 8];
    memset(local, 'a', sizeof(local) - 1);
    local[sizeof(local) - 1] = '\0';
    snprintf(addr, sizeof(addr), "%s@example.com", local); /* local part of 65 */
    CHECK(!outbox_address_valid(addr));
    local[OUTBOX_LOCAL_MAX] = '\0';
    snprintf(addr, sizeof(addr), "%s@example.com", local);
    CHECK(outbox_address_valid(addr));
}

/* A long subject of two-byte characters: encoded-words of <= 75 characters on folded lines, none
 * splitting a character (each word's base64 decodes to valid UTF-8 on its own: checked by the
 * delivery case's round trip through Python; here the shape). */
static void test_subject_words(void)
{
    char subject[OUTBOX_SUBJECT_BYTES_MAX + 1] = "";
    for (int i = 0; i < 60; i++)
        strcat(subject, "é");
    char mem[OUTBOX_HEADERS_BYTES_MAX];
    struct buf out;
    buf_init(&out, mem, sizeof(mem));
    outbox_subject(&out, subject);
    buf_append(&out, "", 1);
    CHECK(!out.overflow);
    CHECK(strncmp(mem, "Subject: =?UTF-8?B?", 19) == 0);
    int words = 0;
    for (char *w = strstr(mem, "=?UTF-8?B?"); w != NULL; w = strstr(w + 1, "=?UTF-8?B?")) {
        char *end = strstr(w, "?=");
        CHECK(end != NULL && end - w + 2 <= 75);
        /* whole characters: an even byte count, i.e. base64 of 3k bytes or a padded tail */
        words++;
    }
    CHECK(words >= 3);
    CHECK(strstr(mem, "\r\n =?UTF-8?B?") != NULL); /* folded onto continuation lines */
    buf_init(&out, mem, sizeof(mem));
    outbox_subject(&out, "Reset your password");
    buf_append(&out, "", 1);
    CHECK(strcmp(mem, "Subject: Reset your password\r\n") == 0);
    buf_init(&out, mem, sizeof(mem));
    outbox_subject(&out, "looks =?like?= a word");
    buf_append(&out, "", 1);
    CHECK(strncmp(mem, "Subject: =?UTF-8?B?", 19) == 0);
}

/* outbox_message_cap holds the worst body (all line feeds, each gaining a CR) and the longest
 * subject; base64 lines stay within 76 characters (RFC 2045 §6.8). */
static void test_message_bounds(void)
{
    static char text[8192], html[4096], subject[OUTBOX_SUBJECT_BYTES_MAX + 1];
    memset(text, '\n', sizeof(text) - 1);
    memset(html, 'h', sizeof(html) - 1);
    memset(subject, 0, sizeof(subject));
    for (size_t i = 0; i + 3 <= OUTBOX_SUBJECT_BYTES_MAX; i += 3)
        memcpy(subject + i, "\xe2\x80\x94", 3); /* an em dash, three bytes */
    char to[OUTBOX_ADDRESS_MAX + 1];
    memset(to, 'a', sizeof(to) - 1);
    to[sizeof(to) - 1] = '\0';
    to[OUTBOX_LOCAL_MAX] = '@';
    for (size_t i = OUTBOX_LOCAL_MAX + 1 + 60; i < sizeof(to) - 2; i += 61)
        to[i] = '.';
    CHECK(outbox_address_valid(to)); /* the longest address there is */
    size_t cap = outbox_message_cap(text, html);
    char *mem = malloc(cap);
    CHECK(mem != NULL);
    if (mem == NULL)
        return;
    struct buf out;
    buf_init(&out, mem, cap);
    outbox_message(&out, "0191d7e0-0000-7000-8000-000000000001", to, to, subject, text, html);
    CHECK(!out.overflow);
    size_t line = 0, longest_body_line = 0;
    const char *body = strstr(mem, "base64\r\n\r\n");
    for (size_t i = body != NULL ? (size_t)(body - mem) : out.len; i < out.len; i++) {
        line = mem[i] == '\n' ? 0 : line + 1;
        if (line > longest_body_line)
            longest_body_line = line;
    }
    CHECK(body != NULL && longest_body_line <= 77); /* 76 and the CR */
    free(mem);
}

static void test_backoff(void)
{
    uint32_t prev_max = 0;
    for (int attempts = 1; attempts <= OUTBOX_ATTEMPTS_MAX; attempts++) {
        uint32_t want = OUTBOX_BACKOFF_CAP_MS;
        if (attempts < 20 && (OUTBOX_BACKOFF_BASE_MS << (attempts - 1)) < OUTBOX_BACKOFF_CAP_MS)
            want = OUTBOX_BACKOFF_BASE_MS << (attempts - 1);
        for (int i = 0; i < 50; i++) {
            uint32_t d = outbox_backoff_ms(attempts);
            CHECK(d >= want / 2 && d <= want);
        }
        CHECK(want >= prev_max);
        prev_max = want;
    }
    CHECK(prev_max == OUTBOX_BACKOFF_CAP_MS);
}

/* ------------------------------------------------------------------ the SMTP sink */

/* The sink's handler: aiosmtpd's Mailbox, refusing RCPT "refuse…" with 550 (permanent) and
 * "later…" with 451 (transient). The dumper prints one JSON line per stored message. */
static const char test_sink_py[] =
    "from aiosmtpd.handlers import Mailbox\n"
    "class Sink(Mailbox):\n"
    "    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):\n"
    "        if address.startswith('refuse'):\n"
    "            return '550 5.1.1 no such mailbox'\n"
    "        if address.startswith('later'):\n"
    "            return '451 4.3.0 try again later'\n"
    "        envelope.rcpt_tos.append(address)\n"
    "        return '250 OK'\n";

static const char test_dump_py[] =
    "import json, mailbox, sys\n"
    "from email.header import decode_header, make_header\n"
    "from email.utils import parsedate_to_datetime\n"
    "out = []\n"
    "for key, m in mailbox.Maildir(sys.argv[1], factory=None).items():\n"
    "    d = {k: m[h] for k, h in (('from', 'From'), ('to', 'To'), ('rcpt', 'X-RcptTo'),\n"
    "         ('mailfrom', 'X-MailFrom'), ('message_id', 'Message-ID'),\n"
    "         ('mime', 'MIME-Version'))}\n"
    "    d['subject'] = str(make_header(decode_header(m['Subject'])))\n"
    "    d['subject_ascii'] = m['Subject'].isascii()\n"
    "    d['date_ok'] = parsedate_to_datetime(m['Date']) is not None\n"
    "    d['type'] = m.get_content_type()\n"
    "    d['defects'] = sum(len(p.defects) for p in m.walk())\n"
    "    for p in m.walk():\n"
    "        t = p.get_content_type()\n"
    "        if t in ('text/plain', 'text/html'):\n"
    "            d[t[5:]] = p.get_payload(decode=True).decode(p.get_content_charset())\n"
    "    out.append(json.dumps(d, ensure_ascii=False, sort_keys=True))\n"
    "for line in sorted(out):\n"
    "    print(line)\n";

static int test_write_file(const char *name, const char *text)
{
    char path[TEST_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", test_dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* A TCP port nobody listens on now (the kernel's pick). */
static int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool test_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Starts the sink on test_sink_port (chosen once, so a restarted sink is the same relay). */
static int test_sink_start(void)
{
    char listen[64], maildir[TEST_PATH_MAX + 16];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", test_sink_port);
    snprintf(maildir, sizeof(maildir), "%s/maildir", test_dir);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("PYTHONPATH", test_dir, 1);
        execl(test_python, test_python, "-m", "aiosmtpd", "-n", "-l", listen, "-c",
              "outbox_sink.Sink", maildir, (char *)NULL);
        _exit(127);
    }
    test_sink_pid = pid;
    double start = test_now_s();
    while (!test_port_open(test_sink_port)) {
        if (test_now_s() - start > TEST_SINK_START_GUARD_S || waitpid(pid, NULL, WNOHANG) != 0) {
            fprintf(stderr, "test_outbox: the SMTP sink did not start\n");
            return -1;
        }
        usleep(50000);
    }
    return 0;
}

static void test_sink_stop(void)
{
    if (test_sink_pid <= 0)
        return;
    kill(test_sink_pid, SIGTERM);
    waitpid(test_sink_pid, NULL, 0);
    test_sink_pid = 0;
}

/* The maildir as the dumper prints it, into out. */
static const char *test_dump(char *out, size_t cap)
{
    char cmd[4 * TEST_PATH_MAX];
    snprintf(cmd, sizeof(cmd), "%s %s/outbox_dump.py %s/maildir", test_python, test_dir,
             test_dir);
    FILE *p = popen(cmd, "r");
    size_t n = p != NULL ? fread(out, 1, cap - 1, p) : 0;
    out[n] = '\0';
    if (p != NULL)
        CHECK(pclose(p) == 0);
    return out;
}

/* How many times needle occurs in hay. */
static int test_count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The dump line of the message to `to` (exactly one is required), copied into line. */
static bool test_line_for(const char *dump, const char *to, char *line, size_t cap)
{
    char key[OUTBOX_ADDRESS_MAX + 16];
    snprintf(key, sizeof(key), "\"rcpt\": \"%s\"", to);
    const char *p = strstr(dump, key);
    if (p == NULL || test_count_of(dump, key) != 1)
        return false;
    while (p > dump && p[-1] != '\n')
        p--;
    size_t len = strcspn(p, "\n");
    snprintf(line, cap, "%.*s", (int)len, p);
    return true;
}

/* ------------------------------------------------------------------ database helpers */

static PGconn *test_conn;

/* Enqueues a mail; its id into id (may be NULL). */
static void test_enqueue(const char *to, const char *subject, const char *text, const char *html,
                         char id[CT_UUID_TEXT_LEN + 1])
{
    const char *params[5] = { test_tenant_id, to, subject, text, html };
    PGresult *res = PQexecParams(test_conn, "INSERT INTO email_outbox (tenant_id, to_address, "
                                 "subject, body_text, body_html) VALUES ($1, $2, $3, $4, $5) "
                                 "RETURNING id", 5, NULL, params, NULL, NULL, 0);
    CHECK(PQresultStatus(res) == PGRES_TUPLES_OK);
    if (id != NULL) {
        id[0] = '\0';
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            snprintf(id, CT_UUID_TEXT_LEN + 1, "%s", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
}

/* One value of a row: SELECT <expr> FROM email_outbox WHERE id = id. */
static const char *test_row(const char *id, const char *expr, char *out, size_t cap)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT (%s)::text FROM email_outbox WHERE id = '%s'", expr, id);
    return pgtest_value(test_conn, sql, out, cap);
}

static bool test_row_is(const char *id, const char *expr, const char *want)
{
    char v[256];
    return strcmp(test_row(id, expr, v, sizeof(v)), want) == 0;
}

static char test_smtp_url[64];
static struct outbox_smtp test_smtp_relay = { .url = test_smtp_url,
                                              .from = "no-reply@tessera.example" };

/* The sink as relay (test_smtp_url is written once, in main, before any thread). */
static const struct outbox_smtp *test_smtp(void)
{
    return &test_smtp_relay;
}

/* Drains until nothing is claimed; the totals. */
static struct outbox_drain_stats test_drain_all(PGconn *conn, int batch)
{
    struct outbox_drain_stats total = { 0 }, one;
    int rc;
    while ((rc = outbox_drain_once(conn, test_smtp(), batch, &one)) > 0) {
        total.claimed += one.claimed;
        total.sent += one.sent;
        total.retried += one.retried;
        total.failed += one.failed;
        total.released += one.released;
    }
    CHECK(rc == 0);
    return total;
}

/* ------------------------------------------------------------------ delivery */

#define TEST_VERIFY_SUBJECT "Vérifiez votre adresse électronique pour activer votre compte " \
                            "Tessera — ça ne prend qu’un instant"
#define TEST_VERIFY_TEXT "Bonjour Zoé,\n\nhttps://auth.example/t/acme/verify?token=vt-1f2e3d\n" \
                         "\n.\n..a line starting with dots\n"
#define TEST_RESET_TEXT "Reset your password:\r\nhttps://auth.example/t/acme/reset?token=rt-9a8b\n"
#define TEST_RESET_HTML "<p>Reset your password: <a href=\"https://auth.example/t/acme/reset?" \
                        "token=rt-9a8b\">reset</a></p>\n"

static void test_delivery(void)
{
    char verify_id[CT_UUID_TEXT_LEN + 1], reset_id[CT_UUID_TEXT_LEN + 1];
    test_enqueue("zoe@example.com", TEST_VERIFY_SUBJECT, TEST_VERIFY_TEXT, NULL, verify_id);
    test_enqueue("bob@example.org", "Reset your password", TEST_RESET_TEXT, TEST_RESET_HTML,
                 reset_id);
    struct outbox_drain_stats stats;
    CHECK(outbox_drain_once(test_conn, test_smtp(), 4, &stats) == 2);
    CHECK(stats.sent == 2 && stats.retried == 0 && stats.failed == 0);
    CHECK(outbox_drain_once(test_conn, test_smtp(), 4, &stats) == 0); /* nothing twice */
    CHECK(test_row_is(verify_id, "state", "sent") && test_row_is(reset_id, "state", "sent"));
    CHECK(test_row_is(verify_id, "sent_at IS NOT NULL AND attempts = 1 AND last_error IS NULL",
                      "true"));
    /* the one-time links do not stay at rest once delivered */
    CHECK(test_row_is(reset_id, "body_text = '' AND body_html IS NULL", "true"));
    CHECK(test_row_is(verify_id, "body_text = '' AND body_html IS NULL", "true"));
    static char dump[TEST_DUMP_BYTES_MAX];
    char line[16384], want[1024];
    test_dump(dump, sizeof(dump));
    CHECK(test_count_of(dump, "\n") == 2);
    CHECK(test_line_for(dump, "zoe@example.com", line, sizeof(line)));
    CHECK(strstr(line, "\"from\": \"no-reply@tessera.example\"") != NULL);
    CHECK(strstr(line, "\"mailfrom\": \"no-reply@tessera.example\"") != NULL);
    CHECK(strstr(line, "\"to\": \"zoe@example.com\"") != NULL);
    CHECK(strstr(line, "\"subject\": \"" TEST_VERIFY_SUBJECT "\"") != NULL);
    CHECK(strstr(line, "\"subject_ascii\": true") != NULL); /* encoded-words on the wire */
    CHECK(strstr(line, "\"date_ok\": true") != NULL && strstr(line, "\"mime\": \"1.0\"") != NULL);
    snprintf(want, sizeof(want), "\"message_id\": \"<%s@tessera.example>\"", verify_id);
    CHECK(strstr(line, want) != NULL);
    CHECK(strstr(line, "\"type\": \"text/plain\"") != NULL && strstr(line, "\"html\"") == NULL);
    /* canonical line breaks (RFC 2046 §4.1.1): each stored LF arrives as CRLF */
    CHECK(strstr(line, "\"plain\": \"Bonjour Zoé,\\r\\n\\r\\nhttps://auth.example/t/acme/verify?"
                       "token=vt-1f2e3d\\r\\n\\r\\n.\\r\\n..a line starting with dots\\r\\n\"")
          != NULL);
    CHECK(strstr(line, "\"defects\": 0") != NULL);
    CHECK(test_line_for(dump, "bob@example.org", line, sizeof(line)));
    CHECK(strstr(line, "\"subject\": \"Reset your password\"") != NULL);
    CHECK(strstr(line, "\"type\": \"multipart/alternative\"") != NULL);
    CHECK(strstr(line, "\"plain\": \"Reset your password:\\r\\nhttps://auth.example/t/acme/"
                       "reset?token=rt-9a8b\\r\\n\"") != NULL); /* a CRLF stays one CRLF */
    CHECK(strstr(line, "\"html\": \"<p>Reset your password: <a href=\\\"https://auth.example/t/"
                       "acme/reset?token=rt-9a8b\\\">reset</a></p>\\r\\n\"") != NULL);
    snprintf(want, sizeof(want), "\"message_id\": \"<%s@tessera.example>\"", reset_id);
    CHECK(strstr(line, want) != NULL && strstr(line, "\"defects\": 0") != NULL);
}

/* Relay down, then back: nothing lost, nothing twice. Then 451 and 550 on RCPT. */
static void test_relay_down(void)
{
    char ids[3][CT_UUID_TEXT_LEN + 1], to[64];
    test_sink_stop();
    for (int i = 0; i < 3; i++) {
        snprintf(to, sizeof(to), "down-%d@example.com", i);
        test_enqueue(to, "Verify", "token=secret-down-token", NULL, ids[i]);
    }
    for (int round = 1; round <= 2; round++) {
        struct outbox_drain_stats s = test_drain_all(test_conn, 2);
        CHECK(s.claimed == 3 && s.retried == 3 && s.sent == 0);
        for (int i = 0; i < 3; i++) {
            char attempts[8];
            snprintf(attempts, sizeof(attempts), "%d", round);
            CHECK(test_row_is(ids[i], "state", "pending"));
            CHECK(test_row_is(ids[i], "attempts", attempts));
            CHECK(test_row_is(ids[i], "next_attempt_at > now()", "true"));
            CHECK(test_row_is(ids[i], "last_error <> '' AND strpos(last_error, 'secret') = 0",
                              "true"));
        }
        /* not due yet: a drain now takes nothing */
        CHECK(outbox_drain_once(test_conn, test_smtp(), 4, NULL) == 0);
        CHECK(pgtest_ok(test_conn, "UPDATE email_outbox SET next_attempt_at = now() WHERE "
                        "state = 'pending'"));
    }
    CHECK(test_sink_start() == 0);
    struct outbox_drain_stats s = test_drain_all(test_conn, 2);
    CHECK(s.sent == 3 && s.retried == 0);
    static char dump[TEST_DUMP_BYTES_MAX];
    test_dump(dump, sizeof(dump));
    char line[4096];
    for (int i = 0; i < 3; i++) {
        snprintf(to, sizeof(to), "down-%d@example.com", i);
        CHECK(test_line_for(dump, to, line, sizeof(line))); /* exactly once */
        CHECK(test_row_is(ids[i], "state || attempts", "sent3"));
    }
    char later[CT_UUID_TEXT_LEN + 1], refused[CT_UUID_TEXT_LEN + 1];
    test_enqueue("later@example.com", "Verify", "x", NULL, later);
    test_enqueue("refuse@example.com", "Verify", "x", NULL, refused);
    s = test_drain_all(test_conn, 4);
    CHECK(s.retried == 1 && s.failed == 1);
    CHECK(test_row_is(later, "state", "pending") && test_row_is(refused, "state", "failed"));
    CHECK(test_row_is(later, "strpos(last_error, 'SMTP 451') > 0", "true"));
    CHECK(test_row_is(refused, "last_error", "recipient refused (SMTP 550)"));
    CHECK(pgtest_ok(test_conn, "DELETE FROM email_outbox WHERE state <> 'sent'"));
}

static void test_injection(void)
{
    static const struct {
        const char *to, *subject;
    } bad[] = {
        { "victim@example.com", "Hello\r\nBcc: evil@example.net" },
        { "victim@example.com", "Hello\nBcc: evil@example.net" },
        { "victim@example.com\r\nBcc: evil@example.net", "Hello" },
        { "victim@example.com,evil@example.net", "Hello" },
        { "Victim <victim@example.com>", "Hello" },
        { "victim@example.com>\r\nRCPT TO:<evil@example.net", "Hello" },
        { "victim@localhost", "Hello" },
    };
    size_t n = sizeof(bad) / sizeof(bad[0]);
    char ids[8][CT_UUID_TEXT_LEN + 1];
    for (size_t i = 0; i < n; i++)
        test_enqueue(bad[i].to, bad[i].subject, "injected", NULL, ids[i]);
    static char before[TEST_DUMP_BYTES_MAX], after[TEST_DUMP_BYTES_MAX];
    test_dump(before, sizeof(before));
    struct outbox_drain_stats s = test_drain_all(test_conn, 3);
    CHECK(s.failed == (int)n && s.sent == 0 && s.retried == 0);
    for (size_t i = 0; i < n; i++) {
        CHECK(test_row_is(ids[i], "state", "failed"));
        CHECK(test_row_is(ids[i], "starts_with(last_error, 'refused: ')", "true"));
        CHECK(test_row_is(ids[i], "body_text", ""));
    }
    test_dump(after, sizeof(after));
    CHECK(strcmp(before, after) == 0 && strstr(after, "evil") == NULL);
}

/* ------------------------------------------------------------------ two drains at once */

struct test_drainer {
    pthread_t thread;
    struct outbox_drain_stats total;
};

static void *test_drainer_main(void *arg)
{
    struct test_drainer *d = arg;
    PGconn *conn = pgtest_connect(&test_db);
    if (conn != NULL)
        d->total = test_drain_all(conn, 3);
    PQfinish(conn);
    return NULL;
}

static void test_concurrent(void)
{
    char to[64];
    for (int i = 0; i < TEST_CONCURRENT_MAILS; i++) {
        snprintf(to, sizeof(to), "many-%02d@example.com", i);
        test_enqueue(to, "Verify", "token", NULL, NULL);
    }
    struct test_drainer d[2];
    memset(d, 0, sizeof(d));
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&d[i].thread, NULL, test_drainer_main, &d[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(d[i].thread, NULL);
    CHECK(d[0].total.sent + d[1].total.sent == TEST_CONCURRENT_MAILS);
    CHECK(d[0].total.claimed + d[1].total.claimed == TEST_CONCURRENT_MAILS);
    static char dump[TEST_DUMP_BYTES_MAX];
    test_dump(dump, sizeof(dump));
    CHECK(test_count_of(dump, "\"rcpt\": \"many-") == TEST_CONCURRENT_MAILS);
    char line[4096];
    for (int i = 0; i < TEST_CONCURRENT_MAILS; i++) {
        snprintf(to, sizeof(to), "many-%02d@example.com", i);
        CHECK(test_line_for(dump, to, line, sizeof(line)));
    }
    CHECK(test_count_of(pgtest_value(test_conn, "SELECT string_agg(state || attempts, ',') FROM "
                        "email_outbox WHERE to_address LIKE 'many-%'", dump, sizeof(dump)),
                        "sent1") == TEST_CONCURRENT_MAILS);
}

/* ------------------------------------------------------------------ the lease */

static void test_lease(void)
{
    char stale[CT_UUID_TEXT_LEN + 1], fresh[CT_UUID_TEXT_LEN + 1], last[CT_UUID_TEXT_LEN + 1];
    test_enqueue("stale@example.com", "Verify", "x", NULL, stale);
    test_enqueue("fresh@example.com", "Verify", "x", NULL, fresh);
    test_enqueue("last@example.com", "Verify", "x", NULL, last);
    char sql[512];
    /* the trigger would set updated_at to now(): off while rows are aged */
    CHECK(pgtest_ok(test_conn, "ALTER TABLE email_outbox DISABLE TRIGGER email_outbox_updated_at"));
    snprintf(sql, sizeof(sql), "UPDATE email_outbox SET state = 'sending', attempts = 1, "
             "updated_at = now() - make_interval(secs => %d) WHERE id IN ('%s')",
             OUTBOX_LEASE_S + 60, stale);
    CHECK(pgtest_ok(test_conn, sql));
    snprintf(sql, sizeof(sql), "UPDATE email_outbox SET state = 'sending', attempts = 1, "
             "updated_at = now() - make_interval(secs => %d) WHERE id IN ('%s')",
             OUTBOX_LEASE_S - 60, fresh);
    CHECK(pgtest_ok(test_conn, sql));
    snprintf(sql, sizeof(sql), "UPDATE email_outbox SET state = 'sending', attempts = %d, "
             "updated_at = now() - make_interval(secs => %d) WHERE id IN ('%s')",
             OUTBOX_ATTEMPTS_MAX, OUTBOX_LEASE_S + 60, last);
    CHECK(pgtest_ok(test_conn, sql));
    CHECK(pgtest_ok(test_conn, "ALTER TABLE email_outbox ENABLE TRIGGER email_outbox_updated_at"));
    struct outbox_drain_stats s = test_drain_all(test_conn, 4);
    CHECK(s.claimed == 2 && s.sent == 1 && s.failed == 1);
    CHECK(test_row_is(stale, "state || attempts", "sent2"));
    CHECK(test_row_is(fresh, "state || attempts", "sending1"));
    CHECK(test_row_is(last, "state", "failed"));
    CHECK(test_row_is(last, "starts_with(last_error, 'attempts exhausted')", "true"));
    static char dump[TEST_DUMP_BYTES_MAX];
    char line[4096];
    test_dump(dump, sizeof(dump));
    CHECK(test_line_for(dump, "stale@example.com", line, sizeof(line)));
    CHECK(strstr(dump, "fresh@example.com") == NULL && strstr(dump, "last@example.com") == NULL);
    CHECK(pgtest_ok(test_conn, "DELETE FROM email_outbox WHERE state <> 'sent'"));
}

/* ------------------------------------------------------------------ the sender thread */

/* Waits until the row's state is want, or the guard passes. */
static bool test_wait_state(const char *id, const char *want)
{
    double start = test_now_s();
    while (!test_row_is(id, "state", want)) {
        if (test_now_s() - start > TEST_DELIVERY_GUARD_S)
            return false;
        usleep(50000);
    }
    return true;
}

static void test_sender_stop_guarded(struct outbox_sender *s, const char *what)
{
    double start = test_now_s();
    outbox_sender_stop(s);
    double took = test_now_s() - start;
    CHECK(took < TEST_STOP_GUARD_S);
    printf("test_outbox: stop %s took %.2f s\n", what, took);
}

static void test_sender(void)
{
    struct outbox_config cfg = {
        .pg_url = test_db.url, .smtp_url = test_smtp_url, .from = "no-reply@tessera.example",
        .poll_interval_ms = 60000, /* longer than the guard: only the wake can deliver in time */
    };
    struct outbox_sender *s = NULL;
    CHECK(outbox_sender_start(&cfg, &s) == 0);
    usleep(500000); /* let its first pass find an empty outbox and go to sleep */
    char id[CT_UUID_TEXT_LEN + 1];
    test_enqueue("woken@example.com", "Verify", "woken", NULL, id);
    CHECK(outbox_wake(s) == 0);
    CHECK(test_wait_state(id, "sent"));
    test_sender_stop_guarded(s, "(idle)");
    static char dump[TEST_DUMP_BYTES_MAX];
    char line[4096];
    test_dump(dump, sizeof(dump));
    CHECK(test_line_for(dump, "woken@example.com", line, sizeof(line)));

    /* a relay that accepts connections and never says a word */
    int hang = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    CHECK(bind(hang, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(hang, 8) == 0);
    CHECK(getsockname(hang, (struct sockaddr *)&a, &len) == 0);
    char hang_url[64];
    snprintf(hang_url, sizeof(hang_url), "smtp://127.0.0.1:%d", ntohs(a.sin_port));
    cfg.smtp_url = hang_url;
    CHECK(outbox_sender_start(&cfg, &s) == 0);
    test_enqueue("hung@example.com", "Verify", "hung", NULL, id);
    CHECK(outbox_wake(s) == 0);
    CHECK(test_wait_state(id, "sending"));
    usleep(1500000); /* well inside the transaction: connected, waiting for the greeting */
    test_sender_stop_guarded(s, "(relay hanging)");
    close(hang);
    CHECK(test_row_is(id, "state || attempts", "pending0")); /* released, not lost */
    test_dump(dump, sizeof(dump));
    CHECK(strstr(dump, "hung@example.com") == NULL);
    /* delivered by the next sender to the real relay */
    cfg.smtp_url = test_smtp_url;
    CHECK(outbox_sender_start(&cfg, &s) == 0);
    CHECK(test_wait_state(id, "sent"));
    test_sender_stop_guarded(s, "(after redelivery)");

    struct outbox_config bad = cfg;
    bad.smtp_url = "http://127.0.0.1:1";
    CHECK(outbox_sender_start(&bad, &s) == -TE_INVAL);
    bad = cfg;
    bad.from = "Tessera <no-reply@tessera.example>";
    CHECK(outbox_sender_start(&bad, &s) == -TE_INVAL);
    bad = cfg;
    bad.batch = OUTBOX_BATCH_MAX + 1;
    CHECK(outbox_sender_start(&bad, &s) == -TE_INVAL);
    outbox_sender_stop(NULL);
}

/* ------------------------------------------------------------------ main */

/* An interpreter with aiosmtpd: Debian's (python3-aiosmtpd), whatever python3 PATH finds. */
static bool test_find_python(void)
{
    static const char *const candidates[] = { "/usr/bin/python3", "python3" };
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        char cmd[TEST_PATH_MAX];
        snprintf(cmd, sizeof(cmd), "%s -c 'import aiosmtpd' >/dev/null 2>&1", candidates[i]);
        if (system(cmd) == 0) {
            snprintf(test_python, sizeof(test_python), "%s", candidates[i]);
            return true;
        }
    }
    return false;
}

static int test_setup(void)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/tessera-outbox-XXXXXX");
    if (mkdtemp(test_dir) == NULL || test_write_file("outbox_sink.py", test_sink_py) != 0 ||
        test_write_file("outbox_dump.py", test_dump_py) != 0)
        return -1;
    test_sink_port = test_free_port();
    snprintf(test_smtp_url, sizeof(test_smtp_url), "smtp://127.0.0.1:%d", test_sink_port);
    if (test_sink_port <= 0 || test_sink_start() != 0 || pgtest_create(&test_db, "outbox") != 0)
        return -1;
    test_conn = pgtest_connect(&test_db);
    int applied = 0;
    if (test_conn == NULL || migrate_apply(test_conn, stderr, &applied) != 0)
        return -1;
    pgtest_value(test_conn, "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme') "
                 "RETURNING id", test_tenant_id, sizeof(test_tenant_id));
    return strlen(test_tenant_id) == CT_UUID_TEXT_LEN ? 0 : -1;
}

static void test_teardown(void)
{
    test_sink_stop();
    PQfinish(test_conn);
    if (test_db.name[0] != '\0')
        pgtest_drop(&test_db);
    if (test_dir[0] != '\0') {
        char cmd[TEST_PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
        CHECK(system(cmd) == 0);
    }
}

int main(void)
{
    log_init(LOG_WARN, false);
    test_config();
    test_addresses();
    test_subject_words();
    test_message_bounds();
    test_backoff();
    if (pgtest_server_url() == NULL || !test_find_python()) {
        printf("test_outbox: TESSERA_TEST_PG_URL unset or no aiosmtpd, skipping the rest\n");
        return check_failures == 0 ? 77 : 1;
    }
    int rc = test_setup();
    CHECK(rc == 0);
    if (rc == 0) {
        test_delivery();
        test_relay_down();
        test_injection();
        test_concurrent();
        test_lease();
        test_sender();
    }
    test_teardown();
    return check_report("test_outbox");
}
