/* store/admin.h: `tessera admin` (DESIGN §7): tenants, clients, users and signing keys,
 * managed directly in Postgres (TESSERA_PG_URL) over blocking libpq.
 *
 *   tessera admin tenant create <slug> [--name N]
 *   tessera admin tenant list
 *   tessera admin client create --tenant T --name N [--grant G]... [--scope "a b"]
 *                               [--redirect-uri U]... [--post-logout-redirect-uri U]...
 *                               [--introspect] [--first-party] [--public]
 *   tessera admin client list --tenant T
 *   tessera admin client delete --tenant T --client-id C
 *   tessera admin user create --tenant T --username U [--email E] --password-stdin
 *   tessera admin user list --tenant T
 *   tessera admin user disable --tenant T --username U
 *   tessera admin keys rotate --tenant T [--alg RS256|ES256|EdDSA]
 *   tessera admin keys list --tenant T
 *
 * One JSON object on stdout, errors on stderr; exit ADMIN_EXIT_OK, ADMIN_EXIT_REFUSED (unknown
 * tenant, duplicate, database unreachable or too old) or ADMIN_EXIT_USAGE (bad arguments or
 * configuration). Every statement after the tenant lookup is filtered by the tenant's id
 * (SECURITY T08). Secrets: a client secret is printed once, at creation, and stored only as
 * SHA-256; passwords are read from stdin and stored as Argon2id; private signing keys are
 * sealed under the master key (TESSERA_MASTER_KEY_FILE) bound to "<tenant id>\0<kid>". */
#ifndef TESSERA_STORE_ADMIN_H
#define TESSERA_STORE_ADMIN_H

#include <stddef.h>

#define ADMIN_EXIT_OK 0
#define ADMIN_EXIT_REFUSED 1
#define ADMIN_EXIT_USAGE 2

/* Generation of the master key new blobs are sealed under (crypto/seal.h key_id); a later
 * `admin reseal` moves blobs to the next one. */
#define ADMIN_MASTER_KEY_ID 1

/* `tessera admin ...`: argv[0] is the program, argv[1] "admin". Returns the exit status. */
int admin_main(int argc, char **argv);

#endif
