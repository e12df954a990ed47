/* The Lua config loader: any file contents load or fail with a reason, inside the sandbox
 * (no io/os, memory and instruction budgets), and a config that loads validates. */
#include <errno.h>

#include "config/config.h"
#include "core/log.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kq_log_set_level(KQ_LOG_ERROR + 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kq_config c;
    char err[1024] = "";
    kq_config_defaults(&c);
    int rc = kq_config_load_buffer(&c, "fuzz.lua", (const char *)data, size, NULL, err, sizeof err);
    if (rc == 0) {
        char verr[1024] = "";
        if (kq_config_validate(&c, verr, sizeof verr) != 0)
            FUZZ_CHECK(verr[0] != '\0');
    } else {
        FUZZ_CHECK(rc == -EINVAL && err[0] != '\0'); /* every refusal says why */
    }
    kq_config_free(&c);
    return 0;
}
