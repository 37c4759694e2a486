/* core/main.c: the `tessera` binary and its subcommands. Exit status: 0 success,
 * 1 a refused or failed request, 2 bad usage or configuration (DESIGN §7). */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/serve.h"
#include "store/admin.h"
#include "store/migrate.h"

#define TESSERA_VERSION "0.1.0"

static void main_usage(FILE *out)
{
    fprintf(out,
            "usage: tessera <command> [options]\n"
            "\n"
            "Commands:\n"
            "  serve      serve HTTP on TESSERA_LISTEN until SIGTERM or SIGINT\n"
            "  migrate    bring the database schema (TESSERA_PG_URL) up to date\n"
            "  admin      manage tenants, clients, users and signing keys\n"
            "  version    print the version\n"
            "\n"
            "tessera <command> --help tells more.\n");
}

static void main_serve_usage(FILE *out)
{
    fprintf(out,
            "usage: tessera serve\n"
            "\n"
            "Serves one shard (an io_uring loop pinned to a core) per TESSERA_SHARDS. On SIGTERM\n"
            "or SIGINT it stops accepting, finishes requests in flight within\n"
            "TESSERA_SHUTDOWN_TIMEOUT_MS, and exits 0.\n"
            "\n");
    config_print_help(out);
}

static bool main_wants_help(int argc, char **argv, int from)
{
    for (int i = from; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    }
    return false;
}

static int main_serve(int argc, char **argv)
{
    if (main_wants_help(argc, argv, 2)) {
        main_serve_usage(stdout);
        return 0;
    }
    if (argc > 2) {
        fprintf(stderr, "tessera serve: unexpected argument \"%s\" (configuration is by environment)\n",
                argv[2]);
        return 2;
    }
    struct config cfg;
    if (config_load(&cfg, stderr) != 0)
        return 2;
    return serve_main(&cfg);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        main_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        main_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return main_serve(argc, argv);
    if (strcmp(argv[1], "migrate") == 0)
        return migrate_main(argc, argv);
    if (strcmp(argv[1], "admin") == 0)
        return admin_main(argc, argv);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("tessera %s\n", TESSERA_VERSION);
        return 0;
    }
    fprintf(stderr, "tessera: unknown command \"%s\"\n\n", argv[1]);
    main_usage(stderr);
    return 2;
}
