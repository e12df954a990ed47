/* kiteq policy check|call: loads a policies folder exactly as a start or a reload does
 * (kq_policy_load: the sandbox, the budgets, the self-tests) and runs one hook through
 * kq_policy_call, which answers as the broker applies it. */
#include "policy_tool.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "policy/policy_call.h"

static const char usage[] =
    "usage: kiteq policy check DIR\n"
    "       kiteq policy call DIR HOOK ['JSON-ARGS']\n"
    "check: loads DIR as the broker does (sandbox, budgets, self-tests); prints the hooks\n"
    "       it defines and each file's sha256; exit 0 when it loads, 1 when not\n"
    "call:  runs HOOK once with the JSON object JSON-ARGS (default {}) and prints its answer\n"
    "       as the broker applies it; exit 0 when that is the hook's own answer, 1 when the\n"
    "       built-in answer was used or the answer was cut (the reason on stderr)\n"
    "hooks:";

static int print_usage(void)
{
    fputs(usage, stderr);
    for (size_t i = 0; kq_policy_call_name(i); i++)
        fprintf(stderr, " %s", kq_policy_call_name(i));
    fputs("\n", stderr);
    return 2;
}

static struct kq_policy *load(const char *dir)
{
    char err[4096];
    struct kq_policy *p = NULL;
    if (kq_policy_load(dir, &p, err, sizeof err) != 0) {
        fprintf(stderr, "kiteq policy: %s\n", err);
        return NULL;
    }
    return p;
}

static int check(const char *dir)
{
    struct kq_policy *p = load(dir);
    if (!p)
        return 1;
    struct kq_policy_hook_stats hs[16];
    size_t n = kq_policy_stats(p, hs, 16);
    printf("policies %s: loaded, self-tests passed\n", dir);
    for (size_t i = 0; i < n; i++)
        printf("hook %-12s %s\n", hs[i].name, hs[i].loaded ? "lua" : "built-in");
    struct kq_policy_file files[KQ_POLICY_MAX_FILES];
    size_t nf = kq_policy_files(p, files, KQ_POLICY_MAX_FILES);
    for (size_t i = 0; i < nf; i++)
        printf("file %-12s sha256=%s\n", files[i].file, files[i].sha256);
    printf("budget per call: %ld instructions, %d ms; memory %zu MiB per generation\n",
           KQ_POLICY_CALL_INSTRUCTIONS, KQ_POLICY_CALL_MS, KQ_POLICY_MEMORY_BYTES >> 20);
    kq_policy_free(p);
    return 0;
}

static int call(const char *dir, const char *hook, const char *json)
{
    cJSON *args = json ? cJSON_Parse(json) : NULL;
    if (json && !args) {
        const char *at = cJSON_GetErrorPtr();
        fprintf(stderr, "kiteq policy call: JSON-ARGS is not valid JSON (near \"%.20s\")\n",
                at ? at : "");
        return 2;
    }
    struct kq_policy *p = load(dir);
    if (!p) {
        cJSON_Delete(args);
        return 1;
    }
    kq_log_set_level(KQ_LOG_ERROR); /* a failed call's reason is printed below, once */
    char err[512];
    const char *problem = NULL;
    cJSON *answer = kq_policy_call(p, hook, args, &problem, err, sizeof err);
    int rc = 0;
    if (!answer) {
        fprintf(stderr, "kiteq policy call: %s\n", err);
        rc = 2;
    } else {
        char *text = cJSON_PrintUnformatted(answer);
        printf("%s\n", text ? text : "null");
        cJSON_free(text);
        if (problem) {
            fprintf(stderr, "kiteq policy call: %s\n", problem);
            rc = 1;
        }
    }
    cJSON_Delete(answer);
    cJSON_Delete(args);
    kq_policy_free(p);
    return rc;
}

int kq_policy_tool(int argc, char **argv)
{
    kq_log_set_level(KQ_LOG_WARN); /* warnings (a file that is not loaded) but no chatter */
    if (argc == 3 && strcmp(argv[1], "check") == 0)
        return check(argv[2]);
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "call") == 0)
        return call(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    return print_usage();
}
