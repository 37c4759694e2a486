/* store/redis.c: hiredis' async context driven by a shard's io_uring loop.
 *
 * hiredis says which readiness it wants through its ev hooks (addRead, delWrite...);
 * those only record the wish, and redis_watch_update arms the one loop_watch to
 * match after every call into hiredis. Commands live in a fixed slot table: the
 * privdata handed to hiredis is a slot index and generation, never the caller's
 * memory, so a reply that arrives after its command timed out finds a newer
 * generation and is dropped. A timeout also drops the connection: a Redis that
 * answers slower than the budget is unwell, and reconnecting bounds what hiredis
 * holds for it. */
#include "store/redis.h"

#include <arpa/inet.h>
#include <assert.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/log.h"

struct redis_slot {
    struct loop_timer timer; /* first: the timer's address is the slot's */
    struct redis_client *client;
    struct redis_cmd *cmd;
    uint32_t generation;
    bool busy;
};

struct redis_channel {
    char name[64];
    redis_message_fn on_message;
    void *arg;
};

struct redis_client {
    struct loop *loop;
    redisAsyncContext *ac;   /* NULL while disconnected */
    bool connected;
    bool stopping;
    bool want_read;
    bool want_write;
    struct loop_watch watch;
    struct loop_timer reconnect;
    uint32_t backoff_ms;
    unsigned seed;
    struct redis_endpoint at;
    uint64_t connects;
    struct redis_channel channels[REDIS_CHANNELS_MAX];
    size_t channel_count;
    uint32_t free_count;
    uint32_t free_slots[REDIS_PENDING_MAX];
    struct redis_slot slots[REDIS_PENDING_MAX];
};

static void redis_connect(struct redis_client *client);

/* ---- URL and creation --------------------------------------------------------------------- */

int redis_parse_url(const char *url, struct redis_endpoint *client)
{
    if (strncmp(url, "redis://", 8) != 0 || strlen(url) >= REDIS_URL_BYTES_MAX)
        return -TE_INVAL;
    char rest[REDIS_URL_BYTES_MAX];
    strcpy(rest, url + 8);
    char *host = rest;
    char *at = strrchr(rest, '@');
    if (at != NULL) {
        *at = '\0';
        const char *password = strchr(rest, ':') ? strchr(rest, ':') + 1 : rest;
        if (strlen(password) >= sizeof(client->password))
            return -TE_INVAL;
        strcpy(client->password, password);
        host = at + 1;
    }
    char *slash = strchr(host, '/');
    client->db = 0;
    if (slash != NULL) {
        *slash = '\0';
        client->db = slash[1] ? atoi(slash + 1) : 0;
    }
    char *colon = strrchr(host, ':');
    client->port = 6379;
    if (colon != NULL) {
        *colon = '\0';
        client->port = atoi(colon + 1);
    }
    if (host[0] == '\0' || client->port <= 0 || client->port > 65535 || client->db < 0)
        return -TE_INVAL;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *found = NULL;
    if (getaddrinfo(host, NULL, &hints, &found) != 0 || found == NULL)
        return -TE_INVAL;
    const void *addr = found->ai_family == AF_INET
                           ? (const void *)&((struct sockaddr_in *)found->ai_addr)->sin_addr
                           : (const void *)&((struct sockaddr_in6 *)found->ai_addr)->sin6_addr;
    inet_ntop(found->ai_family, addr, client->host, sizeof(client->host));
    freeaddrinfo(found);
    return 0;
}

static void redis_on_ready(struct loop_watch *watch, unsigned events);
static void redis_on_reconnect(struct loop_timer *timer);
static void redis_on_timeout(struct loop_timer *timer);

struct redis_client *redis_client_create(struct loop *loop, const char *url)
{
    struct redis_client *client = calloc(1, sizeof(*client));
    if (client == NULL)
        return NULL;
    if (redis_parse_url(url, &client->at) != 0) {
        log_msg(LOG_ERROR, "bad Redis URL or host does not resolve", NULL);
        free(client);
        return NULL;
    }
    client->loop = loop;
    client->watch.on_ready = redis_on_ready;
    client->reconnect.on_expire = redis_on_reconnect;
    client->backoff_ms = REDIS_BACKOFF_MIN_MS;
    client->seed = (unsigned)loop_now_us() ^ (unsigned)(uintptr_t)client;
    for (uint32_t i = 0; i < REDIS_PENDING_MAX; i++) {
        client->slots[i].client = client;
        client->slots[i].timer.on_expire = redis_on_timeout;
        client->free_slots[i] = REDIS_PENDING_MAX - 1 - i;
    }
    client->free_count = REDIS_PENDING_MAX;
    return client;
}

/* ---- Readiness ---------------------------------------------------------------------------- */

static void redis_watch_update(struct redis_client *client)
{
    unsigned want = 0;
    if (client->ac != NULL) {
        want |= client->want_read ? POLLIN : 0;
        want |= client->want_write ? POLLOUT : 0;
    }
    if (loop_watch_armed(&client->watch)) {
        if (client->watch.events == want && client->ac != NULL)
            return;
        loop_watch_cancel(client->loop, &client->watch);
    }
    if (want != 0)
        loop_watch_arm(client->loop, &client->watch, client->ac->c.fd, want);
}

static void redis_ev_add_read(void *data) { ((struct redis_client *)data)->want_read = true; }
static void redis_ev_del_read(void *data) { ((struct redis_client *)data)->want_read = false; }
static void redis_ev_add_write(void *data) { ((struct redis_client *)data)->want_write = true; }
static void redis_ev_del_write(void *data) { ((struct redis_client *)data)->want_write = false; }

/* hiredis is about to free the context: the socket closes with it. */
static void redis_ev_cleanup(void *data)
{
    struct redis_client *client = data;
    client->want_read = false;
    client->want_write = false;
    loop_watch_cancel(client->loop, &client->watch);
}

static void redis_on_ready(struct loop_watch *watch, unsigned events)
{
    struct redis_client *client = (struct redis_client *)((char *)watch - offsetof(struct redis_client, watch));
    if (client->ac != NULL && (events & (POLLIN | POLLERR | POLLHUP)))
        redisAsyncHandleRead(client->ac); /* may disconnect: ac becomes NULL */
    if (client->ac != NULL && (events & (POLLOUT | POLLERR)))
        redisAsyncHandleWrite(client->ac);
    redis_watch_update(client);
}

/* ---- Commands ----------------------------------------------------------------------------- */

static void *redis_slot_tag(const struct redis_slot *slot, uint32_t index)
{
    return (void *)(uintptr_t)((uint64_t)slot->generation << 32 | index);
}

/* Completes the command of a slot and frees the slot. */
static void redis_complete(struct redis_slot *slot, const struct redis_reply *reply)
{
    struct redis_client *client = slot->client;
    assert(slot->busy);
    loop_timer_stop(client->loop, &slot->timer);
    struct redis_cmd *cmd = slot->cmd;
    slot->busy = false;
    slot->cmd = NULL;
    slot->generation++;
    client->free_slots[client->free_count++] = (uint32_t)(slot - client->slots);
    cmd->done(cmd, reply);
}

static void redis_reply_convert(const redisReply *r, struct redis_reply *out)
{
    memset(out, 0, sizeof(*out));
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        out->kind = r->type == REDIS_REPLY_STRING   ? REDIS_KIND_STRING
                    : r->type == REDIS_REPLY_STATUS ? REDIS_KIND_STATUS
                                                    : REDIS_KIND_ERROR;
        out->str = slice_make(r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        out->kind = REDIS_KIND_INTEGER;
        out->integer = r->integer;
        break;
    case REDIS_REPLY_ARRAY:
        out->kind = REDIS_KIND_ARRAY;
        out->count = r->elements;
        break;
    default:
        out->kind = REDIS_KIND_NIL;
        break;
    }
}

/* hiredis' callback: a reply, or NULL when the connection went away. */
static void redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_client *client = ac->data;
    uint64_t tag = (uint64_t)(uintptr_t)privdata;
    uint32_t index = (uint32_t)tag;
    assert(index < REDIS_PENDING_MAX);
    struct redis_slot *slot = &client->slots[index];
    if (!slot->busy || slot->generation != (uint32_t)(tag >> 32))
        return; /* its command timed out already */
    struct redis_reply out = { .kind = REDIS_KIND_UNAVAILABLE };
    if (reply != NULL)
        redis_reply_convert(reply, &out);
    redis_complete(slot, &out);
}

static void redis_on_timeout(struct loop_timer *timer)
{
    struct redis_slot *slot = (struct redis_slot *)timer;
    struct redis_client *client = slot->client;
    struct redis_reply out = { .kind = REDIS_KIND_TIMEOUT };
    redis_complete(slot, &out);
    if (client->ac != NULL) {
        /* redisAsyncDisconnect would wait for the replies a hung server never sends;
         * free (safe here: a timer, not a hiredis callback) completes them at once. */
        log_msg(LOG_WARN, "Redis did not answer in time: reconnecting", NULL);
        redisAsyncFree(client->ac);
    }
}

int redis_command(struct redis_client *client, struct redis_cmd *cmd, int argc,
                  const struct slice *argv)
{
    assert(cmd->done != NULL);
    assert(argc > 0 && argc <= REDIS_ARGS_MAX);
    if (client->ac == NULL || !client->connected)
        return -TE_CLOSED;
    if (client->free_count == 0)
        return -TE_FULL;
    uint32_t index = client->free_slots[client->free_count - 1];
    struct redis_slot *slot = &client->slots[index];
    const char *args[REDIS_ARGS_MAX];
    size_t lens[REDIS_ARGS_MAX];
    for (int i = 0; i < argc; i++) {
        args[i] = argv[i].ptr;
        lens[i] = argv[i].len;
    }
    if (redisAsyncCommandArgv(client->ac, redis_on_reply, redis_slot_tag(slot, index), argc, args,
                              lens) != REDIS_OK)
        return -TE_CLOSED;
    client->free_count--;
    slot->busy = true;
    slot->cmd = cmd;
    cmd->slot = index;
    loop_timer_start(client->loop, &slot->timer, cmd->budget_ms ? cmd->budget_ms : REDIS_COMMAND_BUDGET_MS);
    redis_watch_update(client);
    return 0;
}

/* ---- Subscriptions ------------------------------------------------------------------------ */

int redis_client_subscribe(struct redis_client *client, const char *channel,
                           redis_message_fn on_message, void *arg)
{
    if (client->channel_count == REDIS_CHANNELS_MAX ||
        strlen(channel) >= sizeof(client->channels[0].name))
        return -TE_FULL;
    struct redis_channel *ch = &client->channels[client->channel_count++];
    strcpy(ch->name, channel);
    ch->on_message = on_message;
    ch->arg = arg;
    return 0;
}

/* Every reply on a subscribed channel: ["subscribe", ch, n] or ["message", ch, payload]. */
static void redis_on_subscription(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    const redisReply *r = reply;
    struct redis_channel *ch = privdata;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return;
    const redisReply *kind = r->element[0];
    const redisReply *name = r->element[1];
    const redisReply *payload = r->element[2];
    if (kind->type != REDIS_REPLY_STRING || strcmp(kind->str, "message") != 0 ||
        payload->type != REDIS_REPLY_STRING)
        return;
    ch->on_message(ch->arg, slice_make(name->str, name->len), slice_make(payload->str, payload->len));
}

/* ---- Connection life ---------------------------------------------------------------------- */

static void redis_schedule_reconnect(struct redis_client *client)
{
    if (client->stopping)
        return;
    uint32_t jitter = client->backoff_ms / 2 ? (uint32_t)rand_r(&client->seed) % (client->backoff_ms / 2) : 0;
    loop_timer_start(client->loop, &client->reconnect, client->backoff_ms + jitter);
    client->backoff_ms = client->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS
                                                                        : client->backoff_ms * 2;
}

static void redis_on_reconnect(struct loop_timer *timer)
{
    struct redis_client *client = (struct redis_client *)((char *)timer - offsetof(struct redis_client, reconnect));
    redis_connect(client);
}

static void redis_on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_client *client = ac->data;
    if (status != REDIS_OK) {
        client->ac = NULL; /* hiredis frees the context after this returns */
        client->connected = false;
        redis_schedule_reconnect(client);
        return;
    }
    client->connected = true;
    client->connects++;
    client->backoff_ms = REDIS_BACKOFF_MIN_MS;
    redisAsyncContext *mutable_ac = client->ac;
    if (client->at.password[0])
        redisAsyncCommand(mutable_ac, NULL, NULL, "AUTH %s", client->at.password);
    if (client->at.db != 0)
        redisAsyncCommand(mutable_ac, NULL, NULL, "SELECT %d", client->at.db);
    for (size_t i = 0; i < client->channel_count; i++)
        redisAsyncCommand(mutable_ac, redis_on_subscription, &client->channels[i], "SUBSCRIBE %s",
                          client->channels[i].name);
    log_msg(LOG_INFO, "Redis connected", NULL);
}

static void redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_client *client = ac->data;
    client->ac = NULL;
    client->connected = false;
    if (status != REDIS_OK && !client->stopping)
        log_msg(LOG_WARN, "Redis connection lost: reconnecting", NULL);
    redis_schedule_reconnect(client);
}

static void redis_connect(struct redis_client *client)
{
    assert(client->ac == NULL);
    redisAsyncContext *ac = redisAsyncConnect(client->at.host, client->at.port);
    if (ac == NULL || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        redis_schedule_reconnect(client);
        return;
    }
    ac->data = client;
    ac->ev.data = client;
    ac->ev.addRead = redis_ev_add_read;
    ac->ev.delRead = redis_ev_del_read;
    ac->ev.addWrite = redis_ev_add_write;
    ac->ev.delWrite = redis_ev_del_write;
    ac->ev.cleanup = redis_ev_cleanup;
    redisAsyncSetConnectCallback(ac, redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);
    client->ac = ac;
    client->want_write = true; /* writability tells that the non-blocking connect finished */
    redis_watch_update(client);
}

void redis_client_start(struct redis_client *client)
{
    client->stopping = false;
    if (client->ac == NULL && !loop_timer_active(&client->reconnect))
        redis_connect(client);
}

void redis_client_stop(struct redis_client *client)
{
    client->stopping = true;
    loop_timer_stop(client->loop, &client->reconnect);
    if (client->ac != NULL)
        redisAsyncFree(client->ac); /* in-flight commands complete as UNAVAILABLE, now */
    redis_watch_update(client);
}

void redis_client_destroy(struct redis_client *client)
{
    if (client == NULL)
        return;
    assert(client->ac == NULL); /* stopped, and the disconnect has completed */
    free(client);
}

bool redis_client_ready(const struct redis_client *client)
{
    return client->connected;
}

uint64_t redis_client_connects(const struct redis_client *client)
{
    return client->connects;
}

/* ---- One blocking PUBLISH (the admin CLI) --------------------------------------------------- */

int redis_publish_once(const char *url, const char *channel, const char *message, int timeout_ms)
{
    struct redis_endpoint at;
    memset(&at, 0, sizeof(at));
    if (redis_parse_url(url, &at) != 0)
        return -TE_INVAL;
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(at.host, at.port, tv);
    int rc = c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK ? 0 : -TE_IO;
    if (rc == 0 && at.password[0]) {
        redisReply *auth = redisCommand(c, "AUTH %s", at.password);
        rc = auth != NULL && auth->type != REDIS_REPLY_ERROR ? 0 : -TE_IO;
        freeReplyObject(auth);
    }
    if (rc == 0) { /* channels are server-wide: no SELECT */
        redisReply *reply = redisCommand(c, "PUBLISH %s %s", channel, message);
        rc = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? 0 : -TE_IO;
        freeReplyObject(reply);
    }
    explicit_bzero(&at, sizeof(at));
    redisFree(c);
    return rc;
}
