/* proto/tls.h: TLS for a server connection, OpenSSL 3 driven through memory BIOs
 * so the shard's io_uring loop does all socket I/O: ciphertext in with
 * tls_conn_feed, plaintext out with tls_conn_read (which also drives the
 * handshake), plaintext in with tls_conn_write, ciphertext out with tls_conn_drain.
 * TLS 1.2 minimum, 1.3 preferred, ALPN "http/1.1". OpenSSL types stay in tls.c. */
#ifndef TESSERA_PROTO_TLS_H
#define TESSERA_PROTO_TLS_H

#include <stddef.h>

#include "core/buf.h"

struct tls_server;
struct tls_conn;

/* Loads a PEM certificate chain and private key. NULL (reason logged) on failure. */
struct tls_server *tls_server_create(const char *cert_file, const char *key_file);
void tls_server_destroy(struct tls_server *server);

struct tls_conn *tls_conn_create(struct tls_server *server);
void tls_conn_destroy(struct tls_conn *conn);

/* Hands received ciphertext to the engine. 0 or -TE_NOMEM. */
int tls_conn_feed(struct tls_conn *conn, const char *data, size_t len);

/* Decrypted bytes into out: n > 0; 0 when more ciphertext is needed; -TE_CLOSED when
 * the peer sent close_notify; -TE_INVAL on a handshake or record failure. */
int tls_conn_read(struct tls_conn *conn, char *out, size_t cap);

/* Encrypts all of data. 0, or -TE_INVAL when the connection cannot send. */
int tls_conn_write(struct tls_conn *conn, const char *data, size_t len);

/* Moves ciphertext waiting to be sent (handshake or records) to out. 0, or -TE_FULL
 * when out had no room for all of it (the rest stays queued). */
int tls_conn_drain(struct tls_conn *conn, struct buf *out);

#endif
