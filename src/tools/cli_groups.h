/* kiteq-cli groups / purge: consumer groups' backlog and purging it (src/tools/cli_groups.c). */
#ifndef KQ_TOOLS_CLI_GROUPS_H
#define KQ_TOOLS_CLI_GROUPS_H
/* argv[0] is the subcommand name; return a CLI_EXIT_* code. */
int cli_cmd_groups(int argc, char **argv);
int cli_cmd_purge(int argc, char **argv);
#endif
