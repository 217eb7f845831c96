/* main.c - the `retro` binary: hands the command line to the CLI
 * (server/cli.c, srv_cli_main), which dispatches index, search, info,
 * delete, embed, generate, neighbours and serve. Nothing else lives here. */
#include "srv.h"

int main(int argc, char **argv) { return srv_cli_main(argc, argv); }
