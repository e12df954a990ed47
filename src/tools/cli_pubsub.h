/* kiteq-cli pub / sub: publish and consume (src/tools/cli_pubsub.c). */
#ifndef KQ_TOOLS_CLI_PUBSUB_H
#define KQ_TOOLS_CLI_PUBSUB_H
/* argv[0] is the subcommand name; return a CLI_EXIT_* code. */
int cli_cmd_pub(int argc, char **argv);
int cli_cmd_sub(int argc, char **argv);
#endif
