/* core/serve.h: the `serve` subcommand. */
#ifndef TESSERA_CORE_SERVE_H
#define TESSERA_CORE_SERVE_H

#include "core/config.h"

/* Serves until SIGTERM/SIGINT. Returns the process exit status. */
int serve_main(const struct config *cfg);

#endif
