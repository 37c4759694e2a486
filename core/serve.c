/* core/serve.c: `tessera serve`, the composition root. It reads the config, builds
 * the mailbox, the worker pool and the HTTP server, registers the routes, starts one
 * pinned shard thread per core and waits for SIGTERM/SIGINT: then shards stop
 * accepting, finish what is in flight up to TESSERA_SHUTDOWN_TIMEOUT_MS, and the
 * process exits 0 (F16). As the composition root it is the one place in core/ that
 * sees proto/ (and, in later issues, auth/). */
#include "core/serve.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "auth/auth.h"
#include "proto/http_server.h"
#include "store/migrate.h"
#include "store/store.h"

#define SERVE_METRICS_BYTES 60000 /* under HTTP_RESPONSE_BYTES_MAX */
/* How often each shard publishes its readiness for /health/ready answered on another
 * shard: a probe sees the whole instance at most this stale. */
#define SERVE_READY_PUBLISH_MS 100

/* One shard's readiness as the others read it: written by its own thread only. */
struct serve_shard_ready {
    struct loop_timer timer;
    struct loop *loop;
    atomic_int readiness; /* enum serve_readiness */
};

struct serve {
    struct config cfg;
    struct loop_shared shared;
    struct loop *loops[CONFIG_SHARDS_MAX];
    pthread_t threads[CONFIG_SHARDS_MAX];
    struct http_server *http;
    struct store *store;
    struct auth *auth;
    struct serve_shard_ready ready[CONFIG_SHARDS_MAX];
};

static atomic_int serve_shard_failures;
static atomic_uint serve_shards_started; /* on_start has run: "listening" waits for all */
#define SERVE_START_WAIT_MS 10000 /* shards start in microseconds; a stuck one is a bug */

/* ---- Endpoints ---------------------------------------------------------------------------- */

static void serve_health_live(struct http_ctx *ctx)
{
    http_respond(ctx, 200, "application/json", SLICE_LIT("{\"status\":\"ok\"}"));
}

static void serve_health_check(struct buf *body, const char *name, enum store_state state, bool *first)
{
    if (state == STORE_ABSENT)
        return;
    buf_printf(body, "%s\"%s\":\"%s\"", *first ? "" : ",", name, state == STORE_UP ? "up" : "down");
    *first = false;
}

/* A shard's readiness, ordered: the instance's is its least ready shard's. */
enum serve_readiness {
    SERVE_UNAVAILABLE, /* Postgres away or revocations not caught up: 503 */
    SERVE_DEGRADED,    /* Redis away: revocations arrive by the Postgres poll (SECURITY F06) */
    SERVE_READY,
};

static const char *const serve_readiness_names[] = { "unavailable", "degraded", "ready" };

static enum serve_readiness serve_shard_readiness(struct serve *serve, struct loop *loop, struct store_health *h)
{
    store_shard_health(store_shard(serve->store, loop_index(loop)), h);
    bool warm = serve->auth == NULL || auth_shard_ready(serve->auth, loop);
    if (h->primary == STORE_DOWN || !warm)
        return SERVE_UNAVAILABLE;
    return h->redis == STORE_DOWN || h->subscriber == STORE_DOWN ? SERVE_DEGRADED : SERVE_READY;
}

static void serve_ready_publish(struct loop_timer *timer)
{
    struct serve_shard_ready *sr = (struct serve_shard_ready *)timer; /* timer is the first member */
    struct serve *serve = loop_shared(sr->loop)->app;
    struct store_health h;
    atomic_store_explicit(&sr->readiness, serve_shard_readiness(serve, sr->loop, &h), memory_order_relaxed);
    loop_timer_start(sr->loop, &sr->timer, SERVE_READY_PUBLISH_MS);
}

/* The least ready shard's state (this one's as it is now), and how many are fully ready. */
static enum serve_readiness serve_instance_readiness(struct serve *serve, unsigned self, enum serve_readiness mine,
                                                     unsigned *shards_ready)
{
    enum serve_readiness least = SERVE_READY;
    *shards_ready = 0;
    for (unsigned i = 0; i < serve->cfg.shards; i++) {
        enum serve_readiness r =
            i == self ? mine : (enum serve_readiness)atomic_load_explicit(&serve->ready[i].readiness,
                                                                          memory_order_relaxed);
        *shards_ready += r == SERVE_READY;
        least = r < least ? r : least;
    }
    return least;
}

/* 200 when every shard can serve, 503 otherwise, so a load balancer sends traffic
 * elsewhere (and while shutting down, so it drains): connections land on any shard, so
 * one shard that cannot answer makes the instance unready. Redis away is "degraded" but
 * 200: every instance shares it, and taking them all out would turn a slower revocation
 * fan-out into an outage. The checks are this shard's. A replica that is down is
 * reported but not fatal: reads fall back to the primary. */
static void serve_health_ready(struct http_ctx *ctx)
{
    struct serve *serve = ctx->app;
    struct store_health h;
    unsigned shards_ready = 0;
    enum serve_readiness mine = serve_shard_readiness(serve, ctx->loop, &h);
    enum serve_readiness least = serve_instance_readiness(serve, loop_index(ctx->loop), mine, &shards_ready);
    bool serving = least != SERVE_UNAVAILABLE && !loop_stopping();
    struct buf body = http_scratch_buf(ctx);
    buf_printf(&body, "{\"status\":\"%s\",\"shards\":%u,\"shards_ready\":%u,\"checks\":{",
               loop_stopping() ? "stopping" : serve_readiness_names[least], serve->cfg.shards, shards_ready);
    bool first = true;
    serve_health_check(&body, "postgres", h.primary, &first);
    serve_health_check(&body, "postgres_replica", h.replica, &first);
    serve_health_check(&body, "redis", h.redis, &first);
    serve_health_check(&body, "redis_subscriber", h.subscriber, &first);
    if (serve->auth != NULL)
        serve_health_check(&body, "revocations", auth_shard_ready(serve->auth, ctx->loop) ? STORE_UP : STORE_DOWN,
                           &first);
    buf_append_cstr(&body, "}}");
    http_scratch_commit(ctx, &body);
    if (!serving)
        http_header_add(ctx, "Retry-After", SLICE_LIT("1"));
    http_respond(ctx, serving ? 200 : 503, "application/json", buf_slice(&body));
}

static uint64_t serve_load(const uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

static void serve_render_loop_counters(struct serve *serve, struct buf *out)
{
    static const struct {
        const char *name;
        const char *type;
        const char *help;
        size_t offset;
    } families[] = {
        { "tessera_connections_open", "gauge", "Open client connections.", offsetof(struct loop_counters, open) },
        { "tessera_connections_accepted_total", "counter", "Connections accepted.",
          offsetof(struct loop_counters, accepted) },
        { "tessera_connections_rejected_total", "counter", "Connections closed at once: the shard's slab was full.",
          offsetof(struct loop_counters, rejected_full) },
        { "tessera_connection_timeouts_total", "counter", "Connections whose header, body or idle deadline passed.",
          offsetof(struct loop_counters, timeouts) },
        { "tessera_received_bytes_total", "counter", "Bytes received.", offsetof(struct loop_counters, recv_bytes) },
        { "tessera_sent_bytes_total", "counter", "Bytes sent.", offsetof(struct loop_counters, sent_bytes) },
        { "tessera_recv_buffer_exhausted_total", "counter", "Receives that found no free provided buffer.",
          offsetof(struct loop_counters, recv_nobufs) },
    };
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
                   families[f].name, families[f].type);
        for (unsigned s = 0; s < serve->cfg.shards; s++) {
            const char *base = (const char *)loop_counters(serve->loops[s]);
            uint64_t v = serve_load((const uint64_t *)(base + families[f].offset));
            buf_printf(out, "%s{shard=\"%u\"} %llu\n", families[f].name, s, (unsigned long long)v);
        }
    }
}

static void serve_metrics(struct http_ctx *ctx)
{
    struct serve *serve = ctx->app;
    struct buf body = http_scratch_buf(ctx);
    if (body.cap > SERVE_METRICS_BYTES)
        body.cap = SERVE_METRICS_BYTES;
    buf_printf(&body, "# HELP tessera_shards Shard threads serving.\n# TYPE tessera_shards gauge\n"
                      "tessera_shards %u\n"
                      "# HELP tessera_log_dropped_lines_total Log lines dropped: the log sink had no room for a "
                      "shard's (a shard never waits for it) or refused them.\n"
                      "# TYPE tessera_log_dropped_lines_total counter\ntessera_log_dropped_lines_total %llu\n",
               serve->cfg.shards, (unsigned long long)log_dropped_lines());
    serve_render_loop_counters(serve, &body);
    http_server_render_metrics(serve->http, &body);
    store_render_metrics(serve->store, &body);
    if (serve->auth != NULL)
        auth_render_metrics(serve->auth, &body);
    if (body.overflow) {
        http_respond_problem(ctx, 500, "metrics exceed the response limit");
        return;
    }
    http_scratch_commit(ctx, &body);
    http_respond(ctx, 200, "text/plain; version=0.0.4; charset=utf-8", buf_slice(&body));
}

static int serve_routes(struct serve *serve)
{
    struct http_server *http = serve->http;
    int rc = 0;
    rc |= http_route_add(http, HTTP1_METHOD_GET, "/health/live", "health_live", serve_health_live, serve);
    rc |= http_route_add(http, HTTP1_METHOD_GET, "/health/ready", "health_ready", serve_health_ready, serve);
    rc |= http_route_add(http, HTTP1_METHOD_GET, "/metrics", "metrics", serve_metrics, serve);
    if (serve->auth != NULL)
        rc |= auth_routes(serve->auth, http);
    return rc;
}

/* ---- Threads and signals ------------------------------------------------------------------ */

struct serve_thread_arg {
    struct loop *loop;
    int cpu;
};

static void *serve_shard_main(void *arg)
{
    struct serve_thread_arg *a = arg;
    if (loop_run(a->loop, a->cpu) != 0) {
        atomic_fetch_add(&serve_shard_failures, 1);
        kill(getpid(), SIGTERM); /* wake the main thread: the server cannot run as asked */
    }
    free(a);
    return NULL;
}

static void serve_shard_start(struct loop *loop)
{
    struct serve *serve = loop_shared(loop)->app;
    store_shard_start(serve->store, loop);
    if (serve->auth != NULL)
        auth_shard_start(serve->auth, loop);
    struct serve_shard_ready *sr = &serve->ready[loop_index(loop)];
    sr->loop = loop;
    sr->timer.on_expire = serve_ready_publish;
    serve_ready_publish(&sr->timer);
    atomic_fetch_add(&serve_shards_started, 1);
}

static void serve_shard_stop(struct loop *loop)
{
    struct serve *serve = loop_shared(loop)->app;
    struct serve_shard_ready *sr = &serve->ready[loop_index(loop)];
    loop_timer_stop(loop, &sr->timer);
    atomic_store_explicit(&sr->readiness, SERVE_UNAVAILABLE, memory_order_relaxed);
    if (serve->auth != NULL)
        auth_shard_stop(serve->auth, loop);
    store_shard_stop(serve->store, loop);
}

static void serve_on_message(struct loop *loop, const struct ring_msg *msg)
{
    struct serve *serve = loop_shared(loop)->app;
    if (!store_handle_message(serve->store, loop, msg) &&
        (serve->auth == NULL || !auth_handle_message(serve->auth, loop, msg)))
        log_msg(LOG_ERROR, "unknown inter-shard message", NULL);
}

static int serve_build(struct serve *serve)
{
    struct config *cfg = &serve->cfg;
    serve->shared.cfg = cfg;
    serve->shared.shards = cfg->shards;
    serve->shared.handler = http_server_handler();
    serve->shared.mailbox = mailbox_create(cfg->shards);
    serve->shared.workers = workers_create(cfg->workers, cfg->shards);
    serve->shared.app = serve;
    serve->shared.loops = serve->loops;
    serve->shared.on_start = serve_shard_start;
    serve->shared.on_stop = serve_shard_stop;
    serve->shared.on_message = serve_on_message;
    serve->http = http_server_create(cfg, serve);
    if (!serve->shared.mailbox || !serve->shared.workers || !serve->http)
        return -TE_NOMEM;
    for (unsigned i = 0; i < cfg->shards; i++) {
        serve->loops[i] = loop_create(&serve->shared, i);
        if (serve->loops[i] == NULL || http_server_attach(serve->http, serve->loops[i]) != 0)
            return -TE_IO;
    }
    serve->store = store_create(cfg, serve->loops, cfg->shards);
    if (serve->store == NULL)
        return -TE_INVAL;
    /* The tenant routes need the database; without one only the HTTP stack serves. */
    if (cfg->pg_url[0] && (serve->auth = auth_create(cfg, serve->store, serve->shared.workers)) == NULL)
        return -TE_INVAL;
    if (http_server_enable_tls(serve->http) != 0 || serve_routes(serve) != 0)
        return -TE_INVAL;
    return 0;
}

static void serve_teardown(struct serve *serve)
{
    /* Workers first (queued jobs dropped, running ones finished): a running job reads its
     * parked request (a loop's block) and auth's state (the password policy, tenant keys). */
    if (serve->shared.workers)
        workers_destroy(serve->shared.workers);
    store_destroy(serve->store);
    auth_destroy(serve->auth);
    for (unsigned i = 0; i < serve->cfg.shards; i++)
        loop_destroy(serve->loops[i]);
    if (serve->shared.mailbox)
        mailbox_destroy(serve->shared.mailbox);
    http_server_destroy(serve->http);
}

static void serve_log_listening(struct serve *serve)
{
    struct buf *line = log_begin(LOG_INFO, "listening");
    if (line == NULL)
        return;
    buf_append_cstr(line, ",\"address\":");
    buf_append_json_string(line, slice_make(serve->cfg.listen_text, strlen(serve->cfg.listen_text)));
    buf_printf(line, ",\"port\":%d,\"shards\":%u,\"workers\":%u,\"tls\":%s", serve->shared.listen_port,
               serve->cfg.shards, serve->cfg.workers, serve->cfg.tls_cert_file[0] ? "true" : "false");
    log_end(line);
}

static int serve_start_threads(struct serve *serve)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    for (unsigned i = 0; i < serve->cfg.shards; i++) {
        struct serve_thread_arg *arg = malloc(sizeof(*arg));
        if (arg == NULL)
            return -TE_NOMEM;
        arg->loop = serve->loops[i];
        /* Pin shard i to core i while there are cores; more shards than cores float. */
        arg->cpu = (cpus > 0 && i < (unsigned)cpus) ? (int)i : -1;
        if (pthread_create(&serve->threads[i], NULL, serve_shard_main, arg) != 0) {
            free(arg);
            return -TE_IO;
        }
    }
    return 0;
}

/* "listening" means every shard answers (and publishes its readiness). */
static int serve_wait_started(const struct serve *serve)
{
    for (unsigned waited = 0; atomic_load(&serve_shards_started) < serve->cfg.shards; waited++) {
        if (waited >= SERVE_START_WAIT_MS || atomic_load(&serve_shard_failures) > 0)
            return -TE_IO;
        nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
    }
    return 0;
}

int serve_main(const struct config *cfg)
{
    static struct serve serve; /* process lifetime */
    serve.cfg = *cfg;
    log_init(cfg->log_level, cfg->access_log);
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    /* Blocked in every thread; the main thread takes them with sigwait. */
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Postgres is the source of truth: never serve on a schema older than this binary's. */
    if (cfg->pg_url[0] && migrate_check_at_start(cfg->pg_url, cfg->auto_migrate, stderr) != 0)
        return 1;
    int rc = serve_build(&serve);
    if (rc == 0)
        rc = serve_start_threads(&serve);
    if (rc == 0)
        rc = serve_wait_started(&serve);
    if (rc == 0)
        serve_log_listening(&serve);
    if (rc != 0) {
        log_msg(LOG_ERROR, "cannot start", NULL);
        loop_request_shutdown();
        _exit(1); /* threads may be running: no orderly teardown to do */
    }
    int sig = 0;
    sigwait(&signals, &sig);
    log_msg(LOG_INFO, "shutting down", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    loop_request_shutdown();
    for (unsigned i = 0; i < serve.cfg.shards; i++)
        pthread_join(serve.threads[i], NULL);
    int failed = atomic_load(&serve_shard_failures);
    serve_teardown(&serve);
    log_msg(failed ? LOG_ERROR : LOG_INFO, failed ? "a shard failed to start" : "stopped", NULL);
    return failed ? 1 : 0;
}
