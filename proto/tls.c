/* proto/tls.c: OpenSSL 3 over memory BIOs. */
#include "proto/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

#define TLS_DRAIN_CHUNK_BYTES 16384 /* one TLS record's worth per BIO_read */

struct tls_server {
    SSL_CTX *ctx;
};

struct tls_conn {
    SSL *ssl;
    BIO *in;  /* ciphertext received, read by OpenSSL */
    BIO *out; /* ciphertext produced, to send */
};

static const unsigned char tls_alpn_http11[] = "\x08http/1.1";

/* RFC 7301 §3.2: pick http/1.1 when offered; with no overlap, go on without ALPN
 * (a client offering only h2 then fails its own check, not ours). */
static int tls_select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *selected;
    if (SSL_select_next_proto(&selected, outlen, tls_alpn_http11, sizeof(tls_alpn_http11) - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

static void tls_log_error(const char *what)
{
    char reason[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    log_msg(LOG_ERROR, what, "error", reason, NULL);
}

struct tls_server *tls_server_create(const char *cert_file, const char *key_file)
{
    struct tls_server *server = calloc(1, sizeof(*server));
    if (server == NULL)
        return NULL;
    server->ctx = SSL_CTX_new(TLS_server_method());
    if (server->ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(server->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(server->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                         SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_alpn_select_cb(server->ctx, tls_select_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(server->ctx, cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(server->ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(server->ctx) != 1)
        goto fail;
    return server;
fail:
    tls_log_error("cannot load the TLS certificate or key");
    tls_server_destroy(server);
    return NULL;
}

void tls_server_destroy(struct tls_server *server)
{
    if (server == NULL)
        return;
    SSL_CTX_free(server->ctx);
    free(server);
}

struct tls_conn *tls_conn_create(struct tls_server *server)
{
    struct tls_conn *conn = calloc(1, sizeof(*conn));
    if (conn == NULL)
        return NULL;
    conn->ssl = SSL_new(server->ctx);
    conn->in = BIO_new(BIO_s_mem());
    conn->out = BIO_new(BIO_s_mem());
    if (conn->ssl == NULL || conn->in == NULL || conn->out == NULL) {
        BIO_free(conn->in);
        BIO_free(conn->out);
        SSL_free(conn->ssl);
        free(conn);
        return NULL;
    }
    /* An empty read BIO means "want more", not end of file. */
    BIO_set_mem_eof_return(conn->in, -1);
    BIO_set_mem_eof_return(conn->out, -1);
    SSL_set_bio(conn->ssl, conn->in, conn->out); /* the SSL owns both BIOs now */
    SSL_set_accept_state(conn->ssl);
    return conn;
}

void tls_conn_destroy(struct tls_conn *conn)
{
    if (conn == NULL)
        return;
    SSL_free(conn->ssl);
    free(conn);
}

int tls_conn_feed(struct tls_conn *conn, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    return BIO_write(conn->in, data, (int)len) == (int)len ? 0 : -TE_NOMEM;
}

int tls_conn_read(struct tls_conn *conn, char *out, size_t cap)
{
    size_t got = 0;
    int rc = SSL_read_ex(conn->ssl, out, cap, &got);
    if (rc == 1)
        return (int)got;
    int err = SSL_get_error(conn->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return 0;
    ERR_clear_error();
    return err == SSL_ERROR_ZERO_RETURN ? -TE_CLOSED : -TE_INVAL;
}

int tls_conn_write(struct tls_conn *conn, const char *data, size_t len)
{
    size_t written = 0;
    if (len == 0)
        return 0;
    if (SSL_write_ex(conn->ssl, data, len, &written) != 1 || written != len) {
        ERR_clear_error();
        return -TE_INVAL;
    }
    return 0;
}

int tls_conn_drain(struct tls_conn *conn, struct buf *out)
{
    while (BIO_ctrl_pending(conn->out) > 0) {
        size_t room = out->cap - out->len;
        size_t want = BIO_ctrl_pending(conn->out);
        if (room == 0)
            return -TE_FULL;
        size_t take = want < room ? want : room;
        take = take < TLS_DRAIN_CHUNK_BYTES ? take : TLS_DRAIN_CHUNK_BYTES;
        int n = BIO_read(conn->out, out->data + out->len, (int)take);
        if (n <= 0)
            break;
        out->len += (size_t)n;
    }
    return 0;
}
