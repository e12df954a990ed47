/* `kiteq policy call DIR HOOK 'JSON'` and the kiteq.policy module take their arguments from
 * an operator's shell or spec: any JSON object (numbers past every range, wrong types,
 * unknown keys, odd bindings) runs the hook or is refused with a reason, never a crash or
 * undefined behaviour. The first byte picks the hook, the rest is the JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "fuzz.h"
#include "policy/policy.h"
#include "policy/policy_call.h"

static const struct {
    const char *file, *text;
} POLICIES[] = {
    {"routing.lua",
     "return {\n"
     "  route = function(topic, t, binds) if binds[1] then return { binds[1].group } "
     "end end,\n"
     "  route_message = function(m, binds)\n"
     "    for i = 1, #binds do if binds[i].group == m.properties.to then\n"
     "      return { binds[i].group } end end\n"
     "  end }\n"},
    {"retry.lua", "return {\n"
                  "  retry = function(m) if m.attempts > 3 then return 'dead', m.reason end\n"
                  "    return 'retry', m.attempts * 10 end,\n"
                  "  on_dead = function(m, reason) if m.properties.drop then return 'drop' end "
                  "end }\n"},
    {"flow.lua", "return { intake = function(p) return { rate = p, burst = p } end,\n"
                 "  group = function(g, t, f) return { window = f.inflight } end }\n"},
    {"publish.lua", "return { on_publish = function(m)\n"
                    "  if m.body_size > 1000 then return 'reject', 'too big' end\n"
                    "  return { properties = { seen = m.group } } end }\n"},
    {"auth.lua", "return { on_connect = function(c)\n"
                 "  if c.connections > 2 then return 'reject', 'too many' end end }\n"},
};
#define N(a) (sizeof(a) / sizeof((a)[0]))

static char dir[64];

static void remove_dir(void)
{
    char path[512];
    for (size_t i = 0; i < N(POLICIES); i++) {
        snprintf(path, sizeof path, "%s/%s", dir, POLICIES[i].file);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kq_log_set_level(KQ_LOG_ERROR + 1);
    snprintf(dir, sizeof dir, "/tmp/kq-fuzz-call.%d", (int)getpid());
    mkdir(dir, 0700);
    for (size_t i = 0; i < N(POLICIES); i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, POLICIES[i].file);
        FILE *f = fopen(path, "w");
        FUZZ_CHECK(f != NULL);
        fputs(POLICIES[i].text, f);
        fclose(f);
    }
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n_hooks = 0;
    while (kq_policy_call_name(n_hooks))
        n_hooks++;
    const char *hook = data[0] < 250 ? kq_policy_call_name(data[0] % n_hooks) : "no-such-hook";
    cJSON *args = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    if (!args)
        return 0; /* not JSON: the tools refuse it before this point */
    /* a generation per input: strikes and memos of earlier inputs would make runs differ */
    struct kq_policy *policy = NULL;
    char err[1024] = "";
    if (kq_policy_load(dir, &policy, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_policy_call: %s\n", err);
        abort();
    }
    const char *problem = NULL;
    cJSON *answer = kq_policy_call(policy, hook, args, &problem, err, sizeof err);
    if (!answer) {
        FUZZ_CHECK(err[0] != '\0'); /* every refusal says why */
    } else {
        char *text = cJSON_PrintUnformatted(answer);
        FUZZ_CHECK(text != NULL && text[0] == '{');
        free(text);
        cJSON_Delete(answer);
    }
    cJSON_Delete(args);
    kq_policy_free(policy);
    return 0;
}
