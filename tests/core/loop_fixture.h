/* tests/core/loop_fixture.h: what every test that runs real shard loops needs and
 * does not test: a connection handler that closes anything that connects, the
 * shard thread's body, and a configuration listening on a free loopback port. */
#ifndef TESSERA_TESTS_LOOP_FIXTURE_H
#define TESSERA_TESTS_LOOP_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"
#include "core/loop.h"

static void loop_fixture_conn_noop(struct conn *conn) { (void)conn; }

static void loop_fixture_conn_data(struct conn *conn, const char *data, size_t len)
{
    (void)data;
    (void)len;
    conn_close(conn, true);
}

static void loop_fixture_conn_timeout(struct conn *conn, enum conn_timer timer)
{
    (void)timer;
    conn_close(conn, true);
}

static const struct conn_handler loop_fixture_handler = {
    .on_open = loop_fixture_conn_noop, .on_data = loop_fixture_conn_data,
    .on_sent = loop_fixture_conn_noop, .on_timeout = loop_fixture_conn_timeout,
    .on_shutdown = loop_fixture_conn_noop, .on_close = loop_fixture_conn_noop,
};

/* pthread body: runs the loop given as arg, unpinned, until shutdown. */
static void *loop_fixture_shard_main(void *arg)
{
    loop_run(arg, -1);
    return NULL;
}

/* The defaults, listening on 127.0.0.1:0. Returns 0, or -1 (reason on stderr). */
static int loop_fixture_config(struct config *cfg)
{
    setenv("TESSERA_LISTEN", "127.0.0.1:0", 1);
    return config_load(cfg, stderr) == 0 ? 0 : -1;
}

#endif
