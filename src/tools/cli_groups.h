/* kiteq-cli groups / purge: consumer groups' backlog and purging it (src/tools/cli_groups.c). */
#ifndef KQ_TOOLS_CLI_GROUPS_H
#define KQ_TOOLS_CLI_GROUPS_H
/* argv[0] is the subcommand name; return a CLI_EXIT_* code. */
int cli_cmd_groups(int argc, char **argv);
int cli_cmd_purge(int argc, char **argv);

#include <cjson/cJSON.h>
/* Print root's "consumer_groups" (the shape of GET /groups; /stat's broker object has it too)
 * as a table, only group and topic when not NULL. 0, or CLI_EXIT_FAIL for another shape. */
int cli_groups_table(const cJSON *root, const char *group, const char *topic);
#endif
