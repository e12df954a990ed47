/* How kiteq-cli shows the admin's JSON to a person (src/tools/cli_render.c): aligned tables
 * and the small JSON accessors they use. */
#ifndef KQ_TOOLS_CLI_RENDER_H
#define KQ_TOOLS_CLI_RENDER_H
#include <stddef.h>

#include <cjson/cJSON.h>

/* A table collected row by row, printed with every column as wide as its widest cell.
 * align: one letter per column, 'l' left or 'r' right. Cells are copied. */
struct cli_table {
    int ncols;
    const char *const *heads;
    const char *align;
    char **cells; /* rows * ncols */
    size_t rows, cap;
};
void cli_table_init(struct cli_table *t, int ncols, const char *const *heads, const char *align);
/* Add one row of ncols cells (NULL = ""). */
void cli_table_add(struct cli_table *t, const char *const *cells);
/* Print the heads and the rows on stdout, then free the rows. */
void cli_table_print(struct cli_table *t);

/* o[key] as a string ("" when absent or not a string) / as a number (0 when absent). */
const char *cli_json_str(const cJSON *o, const char *key);
double cli_json_num(const cJSON *o, const char *key);
/* Unix milliseconds as local "YYYY-MM-DD HH:MM:SS.mmm" ("-" for 0 or less). */
void cli_format_ms(char *out, size_t len, double unix_ms);
/* An age in seconds as "-", "42s", "17m" or "3.5h". */
void cli_format_age(char *out, size_t len, double sec);

/* Tables of the admin answers (0 or CLI_EXIT_FAIL when the answer has not the expected
 * shape, after a message). */
int cli_render_stat(const cJSON *root);
int cli_render_binds(const cJSON *root);
int cli_render_dlq(const cJSON *root);
int cli_render_msg(const cJSON *root);
#endif
