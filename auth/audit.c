/* auth/audit.c: GET /t/{tenant}/api/v1/audit, the tenant's audit log for its admins (issue 6).
 *
 *   Authorization: Bearer <a client's own access token with scope audit:read> (auth/admin.c)
 *   ?action=&actor_id=&target_id=   exact matches, each optional
 *   ?since=&until=                  Unix seconds (whole, UTC): since <= time < until
 *   ?limit=                         1..100, default 50
 *   ?cursor=                        the next_cursor of the previous page
 *   → 200 {"events": [{seq, time, actor_kind, actor_id, action, target_kind, target_id, ip,
 *          request_id, details}], "next_cursor": "<seq>" | null}, newest first (seq order)
 *
 * Keyset pagination on seq: a page holds the rows below the cursor, so rows written while an
 * admin pages never shift or repeat a page (no OFFSET). Only the token's tenant's rows exist
 * for the statement (SECURITY T08). A malformed filter, limit or cursor is 400, after the token
 * was checked (a caller without a token learns nothing of what the endpoint accepts).
 *
 * Unix seconds rather than RFC 3339 for since/until: one unambiguous form, checked here to the
 * digit, where RFC 3339's offsets, fractions and leap seconds would be Postgres's to reject
 * (an error the caller would see as 500). */
#include "auth/auth_int.h"

#include <string.h>

#define AUDIT_ACTION_MAX 64            /* actions are short snake_case words (store/store.c) */
#define AUDIT_ID_MAX AUTH_CLIENT_ID_MAX /* actor and target ids: UUIDs and client_ids (<= 128) */
#define AUDIT_UNIX_DIGITS_MAX 11       /* Unix seconds up to year 5138: far past any row */
#define AUDIT_SEQ_DIGITS_MAX 18        /* below 2^63: a bigint Postgres takes without overflow */

struct audit_wait {
    struct auth_admin admin;
    bool has_action, has_actor, has_target, has_since, has_until, has_cursor;
    char action[AUDIT_ACTION_MAX + 1];
    char actor_id[AUDIT_ID_MAX + 1];
    char target_id[AUDIT_ID_MAX + 1];
    char since[AUTH_ADMIN_NUM_TEXT];
    char until[AUTH_ADMIN_NUM_TEXT];
    char cursor[AUTH_ADMIN_NUM_TEXT];
    char limit[AUTH_ADMIN_NUM_TEXT];
};

_Static_assert(sizeof(struct audit_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");
_Static_assert(AUDIT_SEQ_DIGITS_MAX < AUTH_ADMIN_NUM_TEXT, "a cursor fits its text");
_Static_assert(AUDIT_UNIX_DIGITS_MAX < AUTH_ADMIN_NUM_TEXT, "a time fits its text");

static void audit_respond(struct http_ctx *ctx, void *state)
{
    const struct auth_wait *w = state;
    if (w->outcome != PG_OK || pg_result_rows(w->result) != 1) {
        auth_respond_store_failure(ctx, w->outcome == PG_OK ? PG_ERROR : w->outcome);
        return;
    }
    const char *json = pg_result_value(w->result, 0, 0); /* Postgres made the JSON */
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 200, "application/json", slice_make(json, strlen(json)));
}

static void audit_send(struct auth_admin *admin)
{
    struct audit_wait *aw = (struct audit_wait *)admin;
    struct auth_wait *w = &admin->w;
    const char **p = w->q.params;
    p[0] = admin->tid;
    p[1] = aw->has_action ? aw->action : NULL;
    p[2] = aw->has_actor ? aw->actor_id : NULL;
    p[3] = aw->has_target ? aw->target_id : NULL;
    p[4] = aw->has_since ? aw->since : NULL;
    p[5] = aw->has_until ? aw->until : NULL;
    p[6] = aw->has_cursor ? aw->cursor : NULL;
    p[7] = aw->limit;
    w->q.params_count = 8;
    auth_send(NULL, w, STORE_AUDIT_LIST, audit_respond, NULL);
}

/* A decimal parameter of 1 to digits_max digits; a cursor (seq) is never 0. */
static const char *audit_number(const struct http_ctx *ctx, const char *name, size_t digits_max,
                                char *dst, bool *seen, const char *refusal)
{
    const char *why = auth_admin_query(ctx, name, dst, AUTH_ADMIN_NUM_TEXT, seen);
    if (why != NULL || !*seen)
        return why;
    size_t len = strlen(dst);
    if (len > digits_max)
        return refusal;
    for (size_t i = 0; i < len; i++)
        if (dst[i] < '0' || dst[i] > '9')
            return refusal;
    return NULL;
}

static const char *audit_parse(const struct http_ctx *ctx, struct audit_wait *aw)
{
    static const char time_refusal[] = "since and until must be Unix seconds";
    static const char cursor_refusal[] = "cursor is not one this endpoint gave";
    const size_t unix_max = AUDIT_UNIX_DIGITS_MAX;
    const char *why = auth_admin_query(ctx, "action", aw->action, sizeof(aw->action),
                                       &aw->has_action);
    if (why == NULL)
        why = auth_admin_query(ctx, "actor_id", aw->actor_id, sizeof(aw->actor_id),
                               &aw->has_actor);
    if (why == NULL)
        why = auth_admin_query(ctx, "target_id", aw->target_id, sizeof(aw->target_id),
                               &aw->has_target);
    if (why == NULL)
        why = audit_number(ctx, "since", unix_max, aw->since, &aw->has_since, time_refusal);
    if (why == NULL)
        why = audit_number(ctx, "until", unix_max, aw->until, &aw->has_until, time_refusal);
    if (why == NULL)
        why = audit_number(ctx, "cursor", AUDIT_SEQ_DIGITS_MAX, aw->cursor, &aw->has_cursor,
                           cursor_refusal);
    if (why == NULL && aw->has_cursor && strspn(aw->cursor, "0") == strlen(aw->cursor))
        why = cursor_refusal; /* seq starts at 1: "0" names no page */
    if (why == NULL)
        why = auth_admin_limit(ctx, aw->limit);
    return why;
}

static void audit_get(struct http_ctx *ctx)
{
    struct audit_wait *aw = auth_admin_start(ctx, sizeof(*aw), AUTH_SCOPE_AUDIT_READ);
    if (aw == NULL)
        return; /* answered */
    aw->admin.bad_request = audit_parse(ctx, aw);
    auth_admin_check(ctx, &aw->admin, audit_send);
}

int auth_audit_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/api/v1/audit", "audit_list",
                          audit_get, auth);
}
