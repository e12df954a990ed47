/* kiteq-cli mysql: schema tool for the MySQL store (src/tools/cli_mysql.c). */
#ifndef KQ_TOOLS_CLI_MYSQL_H
#define KQ_TOOLS_CLI_MYSQL_H
/* argv[0] is the subcommand name; returns a CLI_EXIT_* code. */
int cli_cmd_mysql(int argc, char **argv);
#endif
