/* The binding JSON a consumer writes to ZooKeeper (`<group>-bind`): any bytes from the
 * registry parse or fail with a reason; what parses serialises and parses again the same. */
#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "fuzz.h"
#include "registry/bindings.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kq_log_set_level(KQ_LOG_ERROR + 1); /* rejected input is logged: not the point here */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kq_binding *b = NULL, *again = NULL;
    char err[256] = "";
    int n = kq_bindings_from_json((const char *)data, size, &b, err, sizeof err);
    if (n < 0) {
        FUZZ_CHECK(n == -EINVAL && err[0] != '\0'); /* every refusal says why */
        return 0;
    }
    char *json = kq_bindings_to_json(b, (size_t)n);
    FUZZ_CHECK(json != NULL);
    int m = kq_bindings_from_json(json, strlen(json), &again, err, sizeof err);
    FUZZ_CHECK(m == n);
    char *json2 = kq_bindings_to_json(again, (size_t)m);
    FUZZ_CHECK(json2 != NULL && strcmp(json, json2) == 0);
    free(json2);
    free(json);
    kq_bindings_free(again, (size_t)m);
    kq_bindings_free(b, (size_t)n);
    return 0;
}
